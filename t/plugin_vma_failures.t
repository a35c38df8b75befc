#!/usr/bin/perl
# Failures during a VMA backup of a running VM: a signal during the status
# loop, QEMU dying, the compressor failing. After each, the error reads as
# the original's, the job was cancelled where QEMU still runs, the VM is
# resumed and its power state restored, and no fd or child process is left.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use VZDumpReleases; # runs this file on PVE 8 and on PVE 9

use File::Path qw(make_path);
use POSIX ();
use Test::More;
use Time::HiRes qw(usleep);

use VZDumpScenario;
use PVE::QemuServer;
use PVE::QemuServer::Helpers;
use PVE::QemuServer::Monitor qw(mon_cmd);

plan skip_all => "the pve-qemu simulator is not built" if !-x PVE::TestNode::simulator();

my $node = VZDumpScenario->new();

# Forks a helper that waits until QEMU received `backup`, gives the status
# loop a second, then runs $action. Returns its pid for waitpid.
my sub after_backup_start {
    my ($vmid, $action) = @_;
    my $log = PVE::TestNode::run_dir() . "/$vmid.qmp-log";
    my $offset = -s $log // 0;
    my $pid = fork() // die "fork failed - $!\n";
    return $pid if $pid;
    for (1 .. 300) {
        my $entries = VZDumpScenario::read_qmp_log($log, $offset);
        if (grep { ($_->{execute} // $_->{command} // '') eq 'backup' } @$entries) {
            sleep(1);
            $action->();
            POSIX::_exit(0);
        }
        usleep(50_000);
    }
    POSIX::_exit(1);
}

my sub messages_of { return VZDumpScenario::messages($_[0]->{task_log}) }

# a signal during the status loop takes the original's error path
for my $signal (qw(INT TERM QUIT HUP PIPE)) {
    my $vmid = 140;
    $node->create_sample_vm($vmid);
    $node->start_vm($vmid);
    my $fds = VZDumpScenario::open_fds();
    my $test_pid = $$;
    my $helper = after_backup_start($vmid, sub { kill($signal, $test_pid) });
    my $run = $node->run_backup($vmid, mode => 'snapshot', compress => 'zstd', bwlimit => 1024);
    waitpid($helper, 0);

    is($run->{task}->{state}, 'err', "SIG$signal: backup fails");
    is($run->{task}->{msg}, "interrupted by signal\n", "SIG$signal: with the original message");
    my $messages = messages_of($run);
    my @tail = grep { m/interrupted by signal|aborting backup job|resuming VM again/ } @$messages;
    is_deeply(
        \@tail,
        [
            "INFO: resuming VM again",
            "ERROR: interrupted by signal",
            "INFO: aborting backup job",
            "INFO: resuming VM again",
            "ERROR: Backup of VM $vmid failed - interrupted by signal",
        ],
        "SIG$signal: error, cancel, resume",
    ) or diag(explain($messages));
    my $commands = VZDumpScenario::commands($run);
    is_deeply([@$commands[-2, -1]], ['backup-cancel', 'cont'], "SIG$signal: backup-cancel then cont sent");
    is(mon_cmd($vmid, 'query-status')->{status}, 'running', "SIG$signal: VM running");
    ok(!-e $run->{archive}, "SIG$signal: no archive left");
    VZDumpScenario::check_no_leaks($fds, "SIG$signal");
    $node->stop_vm($vmid);
}
$SIG{$_} = 'DEFAULT' for qw(INT TERM QUIT HUP PIPE);

# QEMU dies in the middle of the backup
{
    my $vmid = 141;
    $node->create_sample_vm($vmid);
    $node->start_vm($vmid);
    my $fds = VZDumpScenario::open_fds();
    my $qemu = PVE::QemuServer::Helpers::vm_running_locally($vmid);
    my $helper = after_backup_start($vmid, sub { kill('KILL', $qemu) });
    my $run = $node->run_backup($vmid, mode => 'snapshot', compress => 'gzip', bwlimit => 1024);
    waitpid($helper, 0);

    is($run->{task}->{state}, 'err', 'QEMU died: backup fails');
    like(
        $run->{task}->{msg},
        qr/^(?:VM $vmid not running|VM $vmid qmp command 'query-backup' failed - .*)\n$/,
        'QEMU died: the monitor error of the original',
    );
    my $messages = messages_of($run);
    ok((grep { $_ eq 'INFO: aborting backup job' } @$messages), 'QEMU died: cancel attempted');
    ok((grep { m/^ERROR: VM $vmid not running$/ } @$messages), 'QEMU died: cancel error logged');
    ok(!PVE::QemuServer::check_running($vmid), 'QEMU died: VM not running');
    VZDumpScenario::check_no_leaks($fds, 'QEMU died');
}

# the compressor exits with an error after QEMU finished
{
    my $vmid = 142;
    my $bin = $node->root . "/failing-bin";
    make_path($bin);
    VZDumpScenario::write_file("$bin/zstd", "#!/bin/sh\ncat >/dev/null\nexit 3\n");
    chmod(0755, "$bin/zstd");
    local $ENV{PATH} = "$bin:$ENV{PATH}";

    $node->create_sample_vm($vmid);
    $node->start_vm($vmid);
    my $fds = VZDumpScenario::open_fds();
    my $run = $node->run_backup($vmid, mode => 'snapshot', compress => 'zstd');
    is($run->{task}->{state}, 'err', 'compressor failure: backup fails');
    is($run->{task}->{msg}, "zstd --threads=1 failed - wrong exit status 3\n", 'compressor failure: message');
    is(mon_cmd($vmid, 'query-status')->{status}, 'running', 'compressor failure: VM running');
    VZDumpScenario::check_no_leaks($fds, 'compressor failure');
    $node->stop_vm($vmid);
}

done_testing();
