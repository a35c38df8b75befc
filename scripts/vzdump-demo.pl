#!/usr/bin/perl
# The demo backup: creates a sample VM on a scratch node (PVE config with two
# disks holding data and zero regions, a firewall file), starts the pve-qemu
# simulator as its QEMU, and runs the vzdump sequence on it (prepare, lock,
# assemble, archive, cleanup, unlock, as PVE::VZDump calls them) with our
# PVE::VZDump::QemuServer. The archive vzdump-qemu-<vmid>-<time>.vma.zst and
# its log land in the output directory, the disk images under
# <output>/images/<vmid>/. Prints the task log as vzdump would, verifies and
# extracts the archive with build/vma, compares the restored disks and config
# with the VM's, then prints the archive's path on the last line of stdout.
#
# usage: scripts/vzdump-demo.pl <output-dir> [<vmid>] [<mode>]

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Path qw(make_path remove_tree);
use FindBin;
use lib "$FindBin::Bin/../t/lib", "$FindBin::Bin/../blib/lib", "$FindBin::Bin/../blib/arch";

use VZDumpScenario;

my ($output, $vmid, $mode) = @ARGV;
die "usage: $0 <output-dir> [<vmid>] [snapshot|stop]\n" if !defined($output);
$vmid //= 100;
$mode //= 'snapshot';

make_path($output);
$output = abs_path($output);
remove_tree("$output/node", "$output/images/$vmid");

my $node = VZDumpScenario->new(dir => "$output/node", storage_dir => $output, dump_dir => $output);
$node->create_sample_vm($vmid, name => 'demo-vm', agent => 1);
# slow the simulated copy down a little, so that progress lines show, and
# write the clusters interleaved and out of order, as a live backup does
$ENV{VZDUMP_TEST_SIM_ARGS} //= '--backup-delay 1500 --interleave';
$node->start_vm($vmid);

my $run = eval { $node->run_backup($vmid, mode => $mode, compress => 'zstd', zstd => 1) };
my $err = $@;
eval { $node->stop_vm($vmid) };
die $err if $err;

print STDERR "$_\n" for $run->{task_log}->@*;
die "backup failed: $run->{task}->{msg}" if $run->{task}->{state} ne 'ok';

my @problems = $node->verify_archive($run->{archive}, $vmid);
die "DEMO FAILED:\n" . join('', map { "  $_\n" } @problems) if @problems;
print STDERR "verified: 'vma verify' passed, the restored disks and config equal the VM's\n";
print "$run->{archive}\n";
