#!/usr/bin/perl
# The demo backup on a real, stock QEMU (Debian's qemu-system-x86_64, started
# as scripts/qemu-probe finds it starts here): a sample VM 100 with two disks holding data and zero
# regions (scsi0 raw, scsi1 qcow2, PVE-style drive ids), the vzdump sequence
# through our PVE::VZDump::QemuServer, which finds no query-proxmox-support
# and takes the engine's point-in-time snapshot over NBD. Writes
# vzdump-qemu-100-<time>.vma.zst and its log into the output directory, keeps
# the disk images under <output>/images/100/, verifies and extracts the
# archive with build/vma, compares the restored disks with the content at the
# snapshot, and prints the log. Only where QEMU cannot run at all (not
# installable, or no accelerator starts it) does it run the simulator demo
# (scripts/vzdump-demo.pl) instead, and says so with QEMU's error in its first
# and last lines.
#
# usage: scripts/upstream-demo.pl <output-dir>

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Path qw(make_path remove_tree);
use FindBin;
use lib "$FindBin::Bin/../t/lib", "$FindBin::Bin/../t/upstream", "$FindBin::Bin/../blib/lib",
    "$FindBin::Bin/../blib/arch";

use QemuProbe;
use UpstreamQemu;

my ($output) = @ARGV;
die "usage: $0 <output-dir>\n" if !defined($output);
my $vmid = 100;

my sub fall_back {
    my ($why) = @_;
    $why =~ s/\s+$//;
    $why =~ s/^qemu-probe: //mg;
    $why =~ s/\n/; /g;
    $| = 1;
    print "NOT A REAL VM: QEMU cannot run here ($why) - running the simulator demo instead\n";
    system($^X, "$FindBin::Bin/vzdump-demo.pl", $output);
    my $status = $? >> 8;
    print "NOT A REAL VM: this was the simulator demo, since QEMU cannot run here ($why)\n";
    exit($status);
}

my $probe = QemuProbe::result();
if ($probe->{status} == 2) {
    print "installing qemu-system-x86 and qemu-utils\n";
    system('apt-get install -y -qq qemu-system-x86 qemu-utils >/dev/null 2>&1');
    $probe = QemuProbe::reprobe();
}
fall_back($probe->{report}) if $probe->{status} != 0;

make_path($output);
$output = abs_path($output);
remove_tree("$output/node", "$output/images/$vmid");

require UpstreamScenario;
my $scenario = UpstreamScenario->new(dir => "$output/node", storage_dir => $output, dump_dir => $output);
my $qemu = $scenario->qemu;
print "VM $vmid runs on QEMU " . $qemu->version . " ($qemu->{accel})\n";

my $snapshot = $scenario->disk_contents("$output/node/snapshot-content");
my $graph_before = $qemu->graph;
my $run = eval { $scenario->node->run_backup($vmid, compress => 'zstd', zstd => 1, bwlimit => 40 * 1024) };
my $err = $@;
my $graph_after = eval { $qemu->graph } // '';
$qemu->stop;
die "backup run failed: $err" if $err;

print "$_\n" for ($run->{logfile} // $run->{task_log})->@*;

my @problems;
push @problems, "the backup task failed: $run->{task}->{msg}" if $run->{task}->{state} ne 'ok';
push @problems, "the block graph differs after the backup" if $graph_after ne $graph_before;
if (!@problems) {
    my ($restored, $extract_problems) = $scenario->extract_archive($run->{archive}, "$output/node/restored");
    push @problems, @$extract_problems;
    for my $disk ($scenario->disks->@*) {
        my $key = $disk->{key};
        push @problems, "restored $key differs from the snapshot"
            if system('cmp', '-s', $restored->{$key}, $snapshot->{$key}) != 0;
    }
}
if (@problems) {
    print "DEMO FAILED:\n", map { "  $_\n" } @problems;
    exit 1;
}
print "verified: 'vma verify' passed, the restored disks equal the snapshot, the block graph is as before\n";
print "archive: $run->{archive}\n";
