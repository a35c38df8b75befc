package VZDumpReleases;

# The release switch of the scenario tests: `use VZDumpReleases;` (right
# after `use lib`) runs the test file once per Proxmox VE release, each in a
# fresh perl with VZDUMP_TEST_PVE_RELEASE set, since the plugin detects its
# release once, at load time. Each run is reported as a subtest ("PVE 8",
# "PVE 9"); inside a run, PVE::TestNode::release() says which one it is.
# With VZDUMP_TEST_PVE_RELEASE already set, the file runs for that release
# only.

use strict;
use warnings;

our @releases = (8, 9);

sub import {
    return if defined($ENV{VZDUMP_TEST_PVE_RELEASE});

    require Test::More;
    Test::More::plan(tests => scalar(@releases));
    STDOUT->autoflush(1);
    my @inc = map { "-I$_" } grep { !ref } @INC;
    for my $release (@releases) {
        local $ENV{VZDUMP_TEST_PVE_RELEASE} = $release;
        print "# Subtest: PVE $release\n";
        open(my $run, '-|', $^X, @inc, $0, @ARGV) or die "unable to run $0 - $!\n";
        print "    $_" while <$run>;
        close($run);
        Test::More::ok($? == 0, "PVE $release (qemu-server $release)");
    }
    exit(Test::More->builder->is_passing ? 0 : 1);
}

1;
