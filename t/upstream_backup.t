#!/usr/bin/perl

# The plugin on a stock QEMU (Debian's, KVM or TCG): no query-proxmox-support,
# so archive_vma takes the engine's point-in-time snapshot over NBD. A real VM
# with a raw and a qcow2 disk, HMP writes to both disks while the backup
# runs, the archive checked against the content at the snapshot's instant,
# the block graph checked after every run, and each failure path's cleanup.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib", "$FindBin::Bin/upstream";
use VZDumpReleases; # runs this file on PVE 8 and on PVE 9

use Digest::SHA;
use File::Path qw(make_path remove_tree);
use POSIX ();
use Test::More;
use Time::HiRes qw(usleep);

use UpstreamQemu;

if (my $why = UpstreamQemu::not_installed()) {
    plan skip_all => $why;
}

require UpstreamScenario;
require VZDumpScenario;

my $mib = 1024 * 1024;
# QEMU is installed: a VM that does not start is a failure, with QEMU's error
my $scenario = UpstreamScenario->new();
my $node = $scenario->node;
my $qemu = $scenario->qemu;
my $vmid = $scenario->vmid;
diag("QEMU " . $qemu->version . " ($qemu->{accel})");

my $graph_before = $qemu->graph;

sub sha { return Digest::SHA->new(256)->addfile($_[0])->hexdigest }

# Runs $code in a child process while the backup runs; returns its pid.
sub during {
    my ($code) = @_;
    my $pid = fork() // die "fork failed - $!\n";
    if (!$pid) {
        eval { $code->() };
        POSIX::_exit($@ ? 1 : 0);
    }
    return $pid;
}

# Waits until the engine has switched the disks onto its snapshot filters.
sub wait_for_snapshot {
    for (1 .. 300) {
        my $nodes = eval { $qemu->qmp('query-block') } // [];
        return if grep { ($_->{inserted}->{'node-name'} // '') eq 'cbw-scsi0' } @$nodes;
        usleep(20_000);
    }
    die "the snapshot was not taken\n";
}

# Waits until the engine exports the snapshot over NBD.
sub wait_for_export {
    for (1 .. 300) {
        return if eval { scalar($qemu->qmp('query-block-exports')->@*) };
        usleep(20_000);
    }
    die "the snapshot was not exported\n";
}

sub reap {
    my ($pid) = @_;
    kill 'TERM', $pid;
    waitpid($pid, 0);
}

sub messages { return VZDumpScenario::messages($_[0]->{task_log}) }

sub check_cleanup {
    my ($what, $before_fds, %param) = @_;
    if (!$param{qemu_gone}) {
        is($qemu->graph, $graph_before, "$what: block graph as before (drives on their nodes, no extra node, job or export)");
        is($qemu->status, $param{status} // 'running', "$what: VM " . ($param{status} // 'running'));
    }
    is_deeply([$scenario->leftovers], [], "$what: no fleecing image or NBD socket left");
    VZDumpScenario::check_no_leaks($before_fds, $what);
}

# --- a snapshot backup while both disks are written (pair by pair) -------
{
    my $initial = $scenario->disk_contents($node->root . "/initial");
    my $pairs_file = $node->root . "/pairs";
    unlink $pairs_file;
    my $before_fds = VZDumpScenario::open_fds();

    # each pair writes one pattern at one offset of both disks in a single
    # monitor session; pairs never overlap each other
    my $writer = during(sub {
        my $socket = PVE::TestNode::vm_socket($vmid, 'qmp');
        for my $k (1 .. 400) {
            my $offset = $k * 64 * 1024;
            my $cmds = [map {
                ['human-monitor-command', { 'command-line' => "qemu-io drive-$_ \"write -P $k $offset 64k\"" }]
            } qw(scsi0 scsi1)];
            PVE::VZDump::QemuServer::Engine::qmp_batch($socket, $vmid, $cmds, undef, 10);
            open(my $fh, '>>', $pairs_file) or die;
            print $fh "$k $offset\n";
            close($fh);
            usleep(5_000);
        }
    });
    usleep(200_000) while !-s $pairs_file; # writes are under way

    my $run = $node->run_backup($vmid, compress => 'zstd', bwlimit => 16 * 1024);
    reap($writer);

    my $log = messages($run);
    is($run->{task}->{state}, 'ok', 'snapshot backup on stock QEMU succeeds') or diag(join("\n", $run->{task_log}->@*));
    ok((grep { $_ eq "INFO: QEMU without Proxmox backup support - using the engine's point-in-time snapshot over NBD" } @$log),
        'the log names the engine path');
    ok((grep { m/^INFO: started backup task '[0-9a-f-]{36}'$/ } @$log), 'started backup task line');
    ok((grep { m/^INFO: resuming VM again$/ } @$log), 'resuming VM line');
    ok((grep { m/^INFO: +\d+% \([\d.]+ [KMG]?i?B of 96\.0 MiB\) in \d+s, read: .*, write: .*$/ } @$log),
        'progress lines in the original format');
    ok((grep { m/^INFO: backup is sparse: [\d.]+ MiB \(\d+%\) total zero data$/ } @$log), 'sparse summary');
    ok((grep { m/^INFO: transferred 96\.00 MiB in (?:\d+ seconds \(.*\/s\)|<1 seconds)$/ } @$log), 'transferred summary');
    ok((grep { m/^INFO: include disk 'scsi1' 'local:100\/vm-100-disk-1\.qcow2' 32M$/ } @$log), 'include disk line');

    my $extract_dir = $node->root . "/extract-1";
    my ($restored, $problems) = $scenario->extract_archive($run->{archive}, $extract_dir);
    is_deeply($problems, [], 'archive verifies and extracts');

    # the snapshot's instant: the initial content plus the pairs 1..m
    my @pairs = map { [split] } split(/\n/, PVE::Tools::file_get_contents($pairs_file));
    my %in_snapshot;
    for my $key (qw(scsi0 scsi1)) {
        open(my $fh, '<', $restored->{$key}) or die;
        for my $pair (@pairs) {
            my ($k, $offset) = @$pair;
            sysseek($fh, $offset, 0);
            sysread($fh, my $block, 65536);
            $in_snapshot{$key}->{$k} = $block eq (chr($k % 256) x 65536) ? 1 : 0;
        }
    }
    my @torn = grep { $in_snapshot{scsi0}->{$_->[0]} != $in_snapshot{scsi1}->{$_->[0]} } @pairs;
    is(scalar(@torn), 0, 'every pair write is in both restored disks or in neither');
    my $m = scalar(grep { $in_snapshot{scsi0}->{$_->[0]} } @pairs);
    ok($m < scalar(@pairs), "writes continued after the snapshot (" . scalar(@pairs) . " pairs, $m before it)");
    my @not_prefix = grep { $in_snapshot{scsi0}->{ $pairs[$_]->[0] } != ($_ < $m ? 1 : 0) } 0 .. $#pairs;
    is(scalar(@not_prefix), 0, 'the snapshot holds exactly the pairs written before one instant');

    # expected images: initial content with pairs 1..m applied
    for my $key (qw(scsi0 scsi1)) {
        my $expected = "$extract_dir/expected-$key.raw";
        system('cp', $initial->{$key}, $expected) == 0 or die;
        open(my $fh, '+<', $expected) or die;
        for my $pair (@pairs[0 .. $m - 1]) {
            sysseek($fh, $pair->[1], 0);
            syswrite($fh, chr($pair->[0] % 256) x 65536);
        }
        close($fh);
        is(sha($restored->{$key}), sha($expected), "$key: restored disk equals the content at the snapshot");
    }

    my $live = $scenario->disk_contents($node->root . "/live");
    for my $key (qw(scsi0 scsi1)) {
        open(my $fh, '<', $live->{$key}) or die;
        my $missing = 0;
        for my $pair (@pairs) {
            sysseek($fh, $pair->[1], 0);
            sysread($fh, my $block, 65536);
            $missing++ if $block ne chr($pair->[0] % 256) x 65536;
        }
        is($missing, 0, "$key: the live disk holds every write made during the backup");
    }
    check_cleanup('snapshot backup', $before_fds);
}

# --- a second backup of the same VM, uncompressed, idle VM ------------------
{
    my $before_fds = VZDumpScenario::open_fds();
    my $content = $scenario->disk_contents($node->root . "/second");
    my $run = $node->run_backup($vmid);
    is($run->{task}->{state}, 'ok', 'a second backup works');
    my ($restored, $problems) = $scenario->extract_archive($run->{archive}, $node->root . "/extract-2");
    is_deeply($problems, [], 'second archive verifies');
    is(sha($restored->{$_}), sha($content->{$_}), "second backup: $_ equals the disk") for qw(scsi0 scsi1);
    check_cleanup('second backup', $before_fds);
}

# --- a backup killed with SIGKILL: the next one removes what it left --------
{
    my $before_fds = VZDumpScenario::open_fds();
    my $victim = during(sub { $node->run_backup($vmid, bwlimit => 2048) });
    wait_for_export();
    kill 'KILL', $victim;
    waitpid($victim, 0);
    isnt($qemu->graph, $graph_before, 'SIGKILL: the killed backup left its snapshot and export in QEMU');
    my @stale_images = grep { m|/fleece-scsi[01]\.raw$| } $scenario->leftovers;
    is(scalar(@stale_images), 2, 'SIGKILL: and its temp fleecing images');
    PVE::QemuConfig->remove_lock($vmid, 'backup'); # the admin's `qm unlock`
    sleep(1); # a run in the same second would reuse (and wipe) the killed run's tmpdir

    my $content = $scenario->disk_contents($node->root . "/after-kill");
    my $run = $node->run_backup($vmid);
    is($run->{task}->{state}, 'ok', 'the backup after a killed one works') or diag(join("\n", $run->{task_log}->@*));
    my @removal = grep { m/^INFO: removing what an earlier backup left in QEMU: / } messages($run)->@*;
    like($removal[0] // '', qr/export vzdump-scsi0, .*node snap-scsi0, node cbw-scsi0, node fleece-scsi0, .*node fleece-scsi1/,
        'it logs what it removes');
    my ($restored, $problems) = $scenario->extract_archive($run->{archive}, $node->root . "/extract-kill");
    is_deeply($problems, [], 'the archive after a killed backup verifies');
    is(sha($restored->{$_}), sha($content->{$_}), "after a killed backup: $_ equals the disk") for qw(scsi0 scsi1);
    is_deeply([grep { -e $_ } @stale_images], [], "the killed backup's temp fleecing images are removed");
    check_cleanup('after a killed backup', $before_fds);
}

# --- stdout mode and a paused VM (stays paused) -----------------------------
{
    $qemu->qmp('stop');
    my $before_fds = VZDumpScenario::open_fds();
    my $out_path = $node->root . "/stdout.vma";
    open(my $out, '>', $out_path) or die;
    my $run = $node->run_backup($vmid, stdout => $out);
    close($out);
    is($run->{task}->{state}, 'ok', 'stdout backup of a paused VM works');
    ok(!(grep { m/resuming VM again/ } messages($run)->@*), 'a paused VM is not resumed');
    my ($restored, $problems) = $scenario->extract_archive($out_path, $node->root . "/extract-3");
    is_deeply($problems, [], 'stdout archive verifies');
    check_cleanup('paused VM', $before_fds, status => 'paused');
    $qemu->qmp('cont');
}

# --- failure paths ----------------------------------------------------------
my sub failed_run {
    my ($what, $expect, %opts) = @_;
    my $during = delete $opts{during};
    my $before_fds = VZDumpScenario::open_fds();
    my $pid = $during ? during($during) : undef;
    my $run = $node->run_backup($vmid, %opts);
    reap($pid) if $pid;
    is($run->{task}->{state}, 'err', "$what: the backup fails");
    like($run->{task}->{msg} // '', $expect, "$what: error names the cause");
    return ($run, $before_fds);
}

SKIP: {
    my $small = $node->root . "/small";
    make_path($small);
    skip 'no tmpfs mount allowed here', 10 if system("mount -t tmpfs -o size=1m tmpfs '$small' 2>/dev/null") != 0;

    # the output fills up
    my ($run, $fds) = failed_run('output ENOSPC', qr/No space left on device/, dumpdir => $small);
    check_cleanup('output ENOSPC', $fds);
    remove_tree(glob("$small/*"));
    make_path("$small/images");

    # the fleecing image (on a fleecing storage) fills up while the guest writes
    make_path("$small/images");
    open(my $cfg, '>>', $node->root . "/etc/pve/storage.cfg") or die;
    print $cfg "\ndir: tiny\n\tpath $small\n\tcontent images\n";
    close($cfg);
    ($run, $fds) = failed_run(
        'fleecing image ENOSPC', qr/^NBD (?:read|block status) on export 'drive-scsi0' failed - .*\n\z/,
        fleecing => { enabled => 1, storage => 'tiny' }, bwlimit => 4096,
        during => sub {
            wait_for_snapshot();
            for my $k (1 .. 60) {
                $qemu->hmp("qemu-io drive-scsi0 \"write -P 0x77 " . ($k * $mib) . " 1M\"") if $k < 60;
            }
        },
    );
    is_deeply([glob("$small/images/$vmid/*")], [], 'fleecing images freed on the fleecing storage');
    check_cleanup('fleecing ENOSPC', $fds);
    system("umount '$small'");
}

{
    # QEMU's NBD server goes away under the reader
    my ($run, $fds) = failed_run(
        'NBD failure', qr/NBD (?:read|block status) on export/, bwlimit => 8192,
        during => sub { wait_for_snapshot(); sleep 1; $qemu->qmp('nbd-server-stop') },
    );
    ok((grep { m/unable to restore the block graph - stopping the NBD server/ } $run->{task_log}->@*),
        'NBD failure: the teardown reports the server already gone');
    check_cleanup('NBD failure', $fds);
}

{
    # a signal while the disks are copied
    my $parent = $$;
    my ($run, $fds) = failed_run(
        'signal', qr/interrupted by signal/, bwlimit => 8192,
        during => sub { wait_for_snapshot(); sleep 1; kill 'TERM', $parent },
    );
    check_cleanup('signal', $fds);
}

{
    # QEMU dies during the copy
    my $qemu_pid = $qemu->pid;
    my ($run, $fds) = failed_run(
        'QEMU dying', qr/NBD (?:read|block status) on export|not running/, bwlimit => 8192,
        during => sub { wait_for_snapshot(); sleep 1; kill 'KILL', $qemu_pid },
    );
    $qemu->kill;
    check_cleanup('QEMU dying', $fds, qemu_gone => 1);
}

done_testing();
