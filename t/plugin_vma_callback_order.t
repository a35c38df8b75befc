#!/usr/bin/perl
# What archive_vma does inside its QMP callbacks, in the original's place:
# the performance-option warnings come after QEMU has answered getfd and
# before backup is sent, on the one connection, after the agent's fs-freeze;
# a failing getfd logs none of them. On PVE 8 and PVE 9. Each warning is checked against the
# simulator's command log as it stood when the warning was logged.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use VZDumpReleases; # runs this file on PVE 8 and on PVE 9

use Test::More;

use VZDumpScenario;

plan skip_all => "the pve-qemu simulator is not built" if !-x PVE::TestNode::simulator();

my $node = VZDumpScenario->new();

# Runs the backup of a fresh VM $vmid as run_with_sim_args does; also returns,
# for each warning the plugin logged, the warning and the commands QEMU had
# received by then.
my sub run_recording_warnings {
    my ($vmid, $sim_args, %opts) = @_;
    my $qmp_log = PVE::TestNode::run_dir() . "/$vmid.qmp-log";
    unlink $qmp_log;
    my @warnings;
    my $log_warn = \&PVE::VZDump::QemuServer::log_warn;
    no warnings 'redefine';
    local *PVE::VZDump::QemuServer::log_warn = sub {
        my $received = VZDumpScenario::commands({ qmp => VZDumpScenario::read_qmp_log($qmp_log, 0) });
        push @warnings, { text => $_[0], received => $received };
        return $log_warn->(@_);
    };
    my $run = $node->run_with_sim_args($vmid, $sim_args, vm => { agent => 1 }, %opts);
    return ($run, \@warnings);
}

# The part of a command list from the freeze to the thaw.
my sub job_start {
    my ($commands) = @_;
    return [grep { m/^(?:guest-fsfreeze-(?:freeze|thaw)|getfd|backup)$/ } @$commands];
}

my $performance = { 'max-workers' => 4, 'pbs-entries-max' => 100 };

# a QEMU without the max-workers flag
{
    my $vmid = 190;
    my ($run, $warnings) = run_recording_warnings(
        $vmid, '--support backup-max-workers=false', performance => $performance);
    is($run->{task}->{state}, 'ok', 'no max-workers flag: backup succeeds') or diag($run->{task}->{msg});
    is_deeply([map { $_->{text} } @$warnings], ["ignoring 'max-workers' setting - not supported by running QEMU"],
        'no max-workers flag: the original warning');
    is_deeply(job_start($warnings->[0]->{received}), ['guest-fsfreeze-freeze', 'getfd'],
        'no max-workers flag: warned after the freeze and getfd, before backup');
    is_deeply(job_start($run->{commands}), ['guest-fsfreeze-freeze', 'getfd', 'backup', 'guest-fsfreeze-thaw'],
        'no max-workers flag: backup follows getfd, then the thaw');
    ok(!exists(VZDumpScenario::arguments_of($run, 'backup')->{'max-workers'}), 'no max-workers flag: none sent');
    if (PVE::TestNode::release() == 9) {
        my @lines = grep { m/^(?:INFO: starting backup via QMP command|WARN: ignoring)/ } $run->{messages}->@*;
        like(join("\n", @lines), qr/^INFO: starting backup via QMP command\nWARN: ignoring 'max-workers'/,
            'no max-workers flag: on PVE 9 the warning follows "starting backup via QMP command"');
    }
    my @monitor = map { $_->{execute} } grep { $_->{socket} eq 'qmp' } $run->{qmp}->@*;
    my ($getfd) = grep { $monitor[$_] eq 'getfd' } 0 .. $#monitor;
    is_deeply([@monitor[$getfd - 1 .. $getfd + 1]], ['qmp_capabilities', 'getfd', 'backup'],
        'no max-workers flag: getfd and backup on one connection');
    $node->stop_vm($vmid);
}

# a QEMU whose query-proxmox-support does not answer
{
    my $vmid = 191;
    my ($run, $warnings) = run_recording_warnings(
        $vmid, q{--fail "query-proxmox-support=unable to read support flags"}, performance => $performance);
    is($run->{task}->{state}, 'ok', 'support query fails: backup succeeds') or diag($run->{task}->{msg});
    is_deeply(
        [map { $_->{text} } @$warnings],
        [
            "VM $vmid qmp command 'query-proxmox-support' failed - unable to read support flags\n",
            'ignoring setting(s): max-workers, pbs-entries-max - issue checking if supported',
        ],
        'support query fails: the original warnings',
    );
    is($warnings->[0]->{received}->[-1], 'query-proxmox-support', 'support query fails: warned when it fails');
    is_deeply(job_start($warnings->[1]->{received}), ['guest-fsfreeze-freeze', 'getfd'],
        'support query fails: settings warning after the freeze and getfd, before backup');
    is_deeply(job_start($run->{commands}), ['guest-fsfreeze-freeze', 'getfd', 'backup', 'guest-fsfreeze-thaw'],
        'support query fails: backup follows getfd');
    $node->stop_vm($vmid);
}

# a getfd that fails, on a QEMU whose flags would make the callback warn: no
# warning, the error as the original's, no backup
{
    my $vmid = 192;
    my ($run, $warnings) = run_recording_warnings(
        $vmid, q{--support backup-max-workers=false --fail "getfd=No file descriptor supplied via SCM_RIGHTS"},
        performance => $performance);
    # qemu-server 9 wraps the queue's error
    my $error = (PVE::TestNode::release() == 9 ? 'executing QMP command to start backup failed - ' : '')
        . 'No file descriptor supplied via SCM_RIGHTS';
    is($run->{task}->{state}, 'err', 'getfd fails: backup fails');
    is($run->{task}->{msg}, "$error\n", "getfd fails: the release's error text");
    is_deeply($warnings, [], 'getfd fails: no performance warning');
    ok((grep { $_ eq "ERROR: $error" } $run->{messages}->@*), 'getfd fails: logged as the original');
    is_deeply(job_start($run->{commands}), ['guest-fsfreeze-freeze', 'getfd', 'guest-fsfreeze-thaw'],
        'getfd fails: no backup sent, the guest thawed');
    VZDumpScenario::check_no_leaks($run->{fds}, 'getfd fails');
    $node->stop_vm($vmid);
}

done_testing();
