#!/usr/bin/perl
# The plugin's release detection at load time: qemu-server 9 when
# PVE::QemuServer::Blockdev is installed, qemu-server 8 when it is missing,
# and a die (not a silent fallback to 8) when it is installed but broken.

use strict;
use warnings;

use File::Temp qw(tempdir);
use FindBin;
use Test::More;

my $lib = "$FindBin::Bin/lib";
my @inc = map { "-I$_" } grep { !ref } @INC;

# What a fresh perl reports after loading the plugin on the given node.
my sub load_plugin {
    my ($release, @extra_inc) = @_;
    local $ENV{VZDUMP_TEST_PVE_RELEASE} = $release;
    local $ENV{VZDUMP_TEST_NODE_DIR} = tempdir(CLEANUP => 1);
    my $code = 'require PVE::VZDump::QemuServer; print "qemu_server_9=$PVE::VZDump::QemuServer::qemu_server_9\n"';
    my $out = `'$^X' @inc @{[map { "-I$_" } @extra_inc]} -I'$lib' -e '$code' 2>&1`;
    return ($out, $? >> 8);
}

my ($out, $status) = load_plugin(8);
is($out, "qemu_server_9=0\n", 'PVE 8 node (no Blockdev module): qemu-server 8');
($out, $status) = load_plugin(9);
is($out, "qemu_server_9=1\n", 'PVE 9 node (Blockdev module installed): qemu-server 9');

my $broken = tempdir(CLEANUP => 1);
mkdir("$broken/PVE");
mkdir("$broken/PVE/QemuServer");
open(my $fh, '>', "$broken/PVE/QemuServer/Blockdev.pm") or die;
print $fh "package PVE::QemuServer::Blockdev;\ndie \"Blockdev.pm is broken\\n\";\n1;\n";
close($fh);
($out, $status) = load_plugin(8, $broken);
isnt($status, 0, 'a broken Blockdev module: loading the plugin fails');
like($out, qr/^Blockdev\.pm is broken$/m, 'with the module\'s own error');

done_testing();
