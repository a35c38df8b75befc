#!/usr/bin/perl
# QEMU-side errors of a VMA backup of a running VM, each with the original's
# message and error path: the job failing midway, query-backup reporting
# another job, QEMU crashing, QEMU refusing `backup`, a left-over job from
# an earlier run, query-proxmox-support failing and QEMU without max-workers.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use VZDumpReleases; # runs this file on PVE 8 and on PVE 9

use POSIX ();
use Test::More;
use Time::HiRes qw(usleep);

use VZDumpScenario;
use PVE::QemuServer;
use PVE::QemuServer::Helpers;
use PVE::QemuServer::Monitor qw(mon_cmd);
use PVE::VZDump::QemuServer::Engine;

plan skip_all => "the pve-qemu simulator is not built" if !-x PVE::TestNode::simulator();

my $node = VZDumpScenario->new();
my $pve9 = VZDumpScenario::pve9();

my sub error_path_lines {
    my ($run) = @_;
    return [grep { m/^ERROR:|aborting backup job|resuming VM again/ } $run->{messages}->@*];
}

# Starts a second job on the VM's QEMU with another uuid (a backup to
# /dev/null of drive-scsi0), cancelling the running one first when asked.
my sub foreign_backup {
    my ($vmid, $cancel_first) = @_;
    open(my $null, '>', '/dev/null') or die;
    my $config = $node->root . "/foreign.conf";
    VZDumpScenario::write_file($config, "name: foreign\n");
    PVE::VZDump::QemuServer::Engine::qmp_batch(
        PVE::TestNode::vm_socket($vmid, 'qmp'),
        $vmid,
        [
            ($cancel_first ? (['backup-cancel', {}]) : ()),
            ['getfd', { fdname => 'foreign' }],
            ['backup', { 'backup-file' => '/dev/fdname/foreign', devlist => 'drive-scsi0', 'config-file' => $config }],
        ],
        fileno($null),
        10,
    );
    close($null);
}

# the job fails midway
{
    my $vmid = 170;
    my $run = $node->run_with_sim_args($vmid, '--backup-error-at 4194304 --backup-delay 300');
    is($run->{task}->{state}, 'err', 'job error: backup fails');
    is($run->{task}->{msg}, "job failed with err -5 - Input/output error\n", 'job error: QEMU message');
    is_deeply(
        error_path_lines($run),
        [
            "INFO: resuming VM again",
            "ERROR: job failed with err -5 - Input/output error",
            "INFO: aborting backup job",
            "INFO: resuming VM again",
            "ERROR: Backup of VM $vmid failed - job failed with err -5 - Input/output error",
        ],
        'job error: error, cancel, resume',
    );
    my @before_error = grep { m/^INFO: +\d+% / } $run->{messages}->@*;
    ok(@before_error >= 1, 'job error: the last status line is logged');
    is($run->{commands}->[-2], 'backup-cancel', 'job error: backup-cancel sent');
    ok(!-e $run->{archive} && !-e $run->{task}->{tmptar}, 'job error: no archive left');
    is(mon_cmd($vmid, 'query-status')->{status}, 'running', 'job error: VM running');
    VZDumpScenario::check_no_leaks($run->{fds}, 'job error');
    $node->stop_vm($vmid);
}

# query-backup reports another job: got unexpected uuid
{
    my $vmid = 171;
    my $log = PVE::TestNode::run_dir() . "/$vmid.qmp-log";
    my $helper;
    my $run = $node->run_with_sim_args(
        $vmid,
        '--backup-delay 400',
        before => sub {
            $helper = fork() // die;
            if (!$helper) {
                for (1 .. 300) {
                    if (grep { ($_->{execute} // '') eq 'cont' } VZDumpScenario::read_qmp_log($log, 0)->@*) {
                        eval { foreign_backup($vmid, 1) };
                        POSIX::_exit($@ ? 1 : 0);
                    }
                    usleep(50_000);
                }
                POSIX::_exit(2);
            }
        },
    );
    waitpid($helper, 0);
    is($? >> 8, 0, 'wrong uuid: a second job replaced the first');
    is($run->{task}->{msg}, "got unexpected uuid\n", 'wrong uuid: the original message');
    ok((grep { $_ eq "ERROR: got unexpected uuid" } $run->{messages}->@*), 'wrong uuid: logged');
    ok((grep { $_ eq 'INFO: aborting backup job' } $run->{messages}->@*), 'wrong uuid: cancelled');
    is(mon_cmd($vmid, 'query-status')->{status}, 'running', 'wrong uuid: VM running');
    VZDumpScenario::check_no_leaks($run->{fds}, 'wrong uuid');
    $node->stop_vm($vmid);
}

# QEMU crashes while the status loop polls
{
    my $vmid = 172;
    my $run = $node->run_with_sim_args($vmid, '--die query-backup@4 --backup-delay 300');
    is($run->{task}->{state}, 'err', 'crash: backup fails');
    is($run->{task}->{msg}, "VM $vmid not running\n", 'crash: the monitor message of the original');
    ok((grep { $_ eq "ERROR: VM $vmid not running" } $run->{messages}->@*), 'crash: cancel error logged');
    ok(!PVE::QemuServer::check_running($vmid), 'crash: VM gone');
    VZDumpScenario::check_no_leaks($run->{fds}, 'crash');
}

# QEMU refuses the backup command
{
    my $vmid = 173;
    my $run = $node->run_with_sim_args($vmid, q{--fail "backup=Device 'drive-scsi0' has no medium"});
    # PVE 8 passes the queue error on as is, PVE 9 says which step failed
    my $error = ($pve9 ? "executing QMP command to start backup failed - " : "")
        . "Device 'drive-scsi0' has no medium";
    is($run->{task}->{msg}, "$error\n", 'refused: the queue error');
    is_deeply(
        error_path_lines($run),
        [
            "ERROR: $error",
            "INFO: aborting backup job",
            "INFO: resuming VM again",
            "ERROR: Backup of VM $vmid failed - $error",
        ],
        'refused: error, cancel, resume',
    );
    ok(!(grep { m/started backup task/ } $run->{messages}->@*), 'refused: no job started');
    VZDumpScenario::check_no_leaks($run->{fds}, 'refused');
    $node->stop_vm($vmid);
}

# a job left over from an earlier run is cancelled in prepare
{
    my $vmid = 174;
    my $run = $node->run_with_sim_args($vmid, '--backup-delay 1000', before => sub { foreign_backup($vmid, 0) });
    is($run->{task}->{state}, 'ok', 'left-over job: backup succeeds') or diag($run->{task}->{msg});
    ok(
        (grep { $_ eq 'WARN: left-over backup job still running inside QEMU - canceling now' }
            $run->{messages}->@*),
        'left-over job: warned',
    );
    is_deeply([$run->{commands}->@[0, 1]], ['query-backup', 'backup-cancel'], 'left-over job: cancelled first');
    $node->stop_vm($vmid);
}

# QEMU failing query-proxmox-support, or without max-workers support
{
    my $vmid = 175;
    my $run = $node->run_with_sim_args($vmid, q{--fail "query-proxmox-support=unable to read support flags"});
    is($run->{task}->{state}, 'ok', 'support query fails: backup succeeds') or diag($run->{task}->{msg});
    is_deeply(
        [grep { m/^WARN:/ } $run->{messages}->@*],
        [
            "WARN: VM $vmid qmp command 'query-proxmox-support' failed - unable to read support flags",
            "WARN: ignoring setting(s): max-workers, pbs-entries-max - issue checking if supported",
        ],
        'support query fails: warned as the original',
    );
    ok(!exists(VZDumpScenario::arguments_of($run, 'backup')->{'max-workers'}), 'no max-workers sent');
    $node->stop_vm($vmid);

    $vmid = 176;
    $run = $node->run_with_sim_args($vmid, '--support backup-max-workers=false');
    is_deeply(
        [grep { m/^WARN:/ } $run->{messages}->@*],
        ["WARN: ignoring 'max-workers' setting - not supported by running QEMU"],
        'no max-workers support: warned',
    );
    $node->stop_vm($vmid);
}

done_testing();
