#!/usr/bin/perl

# scripts/qemu-probe's order (kvm-host, kvm-default, tcg) on any host: each
# step made to fail on purpose with QEMU_PROBE_REFUSE, the next one taken, a
# refused step's QEMU error reported, and no QEMU left running.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Temp;
use Test::More;

use QemuProbe;

my $probe = $QemuProbe::script;
my @steps = (
    ['kvm-host', '-accel kvm -cpu host'],
    ['kvm-default', '-accel kvm'],
    ['tcg', '-accel tcg'],
);
my @names = map { $_->[0] } @steps;
my %options = map { @$_ } @steps;

# Runs the probe with those steps refused: (exit status, stdout, stderr).
sub probe {
    my (@refused) = @_;
    local $ENV{QEMU_PROBE_REFUSE} = join(',', @refused);
    local $ENV{QEMU_ACCEL_OPTIONS};
    delete $ENV{QEMU_ACCEL_OPTIONS};
    my $err = File::Temp->new();
    my $out = qx{"$probe" 2>"$err"};
    my $status = $? >> 8;
    return ($status, $out, do { local $/; <$err> } // '');
}

# the QEMUs a probe started (their QMP socket is in its qemu-probe.* directory)
sub probe_qemus {
    my @found;
    for my $cmdline (glob('/proc/[0-9]*/cmdline')) {
        open(my $fh, '<', $cmdline) or next;
        my $args = do { local $/; <$fh> } // '';
        push @found, $cmdline if $args =~ m/^qemu-system-x86_64\0.*qemu-probe\./s;
    }
    return @found;
}

{
    local $ENV{PATH} = '/nonexistent';
    my ($status, $out, $err) = probe();
    is($status, 2, 'QEMU not on PATH: exit status 2');
    is($out, '', 'QEMU not on PATH: no options');
    like($err, qr/qemu-system-x86_64 is not installed \(Debian package qemu-system-x86\)/,
        'QEMU not on PATH: says so and names the package');
}

{
    my ($status, $out, $err) = probe('kvm-hots');
    is($status, 3, 'unknown step: exit status 3');
    like($err, qr/unknown step 'kvm-hots' in QEMU_PROBE_REFUSE \(steps: kvm-host, kvm-default, tcg\)/,
        'unknown step: named with the known ones');
}

plan skip_all => QemuProbe::not_installed() if QemuProbe::not_installed();

# which steps work on their own here (the others refused)
my %works;
for my $name (@names) {
    my ($status, $out) = probe(grep { $_ ne $name } @names);
    $works{$name} = $status == 0;
    is($out, $works{$name} ? "$options{$name}\n" : '', "$name alone: prints its options or nothing");
}
ok($works{tcg}, 'TCG starts QEMU on any host');
diag('steps that work here: ' . join(', ', grep { $works{$_} } @names));

# refusing the first k steps takes the first working step after them
for my $k (0 .. $#names) {
    my @refused = @names[0 .. $k - 1];
    my ($expected) = grep { $works{$_} } @names[$k .. $#names];
    my ($status, $out, $err) = probe(@refused);
    my $what = @refused ? 'refused ' . join(',', @refused) : 'nothing refused';
    is($status, 0, "$what: found");
    is($out, "$options{$expected}\n", "$what: takes $expected");
    like($err, qr/^qemu-probe: QEMU runs with \Q$options{$expected}\E \($expected\)$/m,
        "$what: says which it uses");
    for my $name (@refused) {
        like($err, qr/^qemu-probe: \Q$name\E \(.*\) failed: .*unable to find CPU model 'refused-by-QEMU_PROBE_REFUSE'/m,
            "$what: $name failed with QEMU's own error");
    }
}

{
    my ($status, $out, $err) = probe(@names);
    is($status, 1, 'every step refused: exit status 1');
    is($out, '', 'every step refused: no options');
    my @failed = $err =~ m/^qemu-probe: (\S+) \(.*\) failed: qemu-system-x86_64: unable to find CPU model/mg;
    is_deeply(\@failed, \@names, "every step refused: each step's QEMU error, in order");
    like($err, qr/installed but does not start with any accelerator/, 'every step refused: says so');
}

{
    local $ENV{QEMU_ACCEL_OPTIONS} = '-accel tcg';
    local $ENV{QEMU_PROBE_REFUSE} = 'tcg';
    my $out = qx{"$probe" 2>/dev/null};
    is($out, "-accel tcg\n", 'QEMU_ACCEL_OPTIONS: the run\'s choice is kept without probing');
}

is_deeply([probe_qemus()], [], 'no QEMU of the probe left running');

done_testing();
