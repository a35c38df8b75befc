#!/usr/bin/perl
# VMA backups of a VM whose QEMU is the pve-qemu simulator, one per power
# state and mode: snapshot of a running VM, stop mode, a stopped VM (started
# paused for the backup, stopped after), a paused VM and a template. Each
# asserts the log lines, the QMP conversation, the VM's power state after,
# the archive (verified, extracted, compared with the disks) and that no fd
# or child process is left behind. On PVE 9 the log also has qemu-server 9's
# agent check and "starting backup via QMP command", and the left-over
# fleecing cleanup asks for block nodes instead of block backends.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use VZDumpReleases; # runs this file on PVE 8 and on PVE 9

use Test::More;

use VZDumpScenario;
use PVE::QemuServer;
use PVE::QemuServer::Monitor qw(mon_cmd);

plan skip_all => "the pve-qemu simulator is not built" if !-x PVE::TestNode::simulator();

my $node = VZDumpScenario->new();
my $pve9 = VZDumpScenario::pve9();
my $progress = qr/^INFO: +\d+% \(\d+\.\d (?:B|KiB|MiB) of \d+\.\d (?:B|KiB|MiB)\) in \d+s, read: \S+ \S+, write: \S+ \S+$/;

my sub ordered_subset {
    my ($got, $want, $name) = @_;
    my $i = 0;
    for my $line (@$got) {
        $i++ if $i < @$want && $line eq $want->[$i];
    }
    ok($i == @$want, $name) or diag("missing from here on: $want->[$i]\nlog:\n" . join("\n", @$got));
}

my sub check_archive {
    my ($run, $vmid, $name) = @_;
    is($run->{task}->{state}, 'ok', "$name: backup succeeds") or diag($run->{task}->{msg});
    my @problems = $node->verify_archive($run->{archive}, $vmid);
    is_deeply(\@problems, [], "$name: archive verifies and matches the disks");
}

# snapshot mode on a running VM
{
    my $vmid = 100;
    $node->create_sample_vm($vmid, agent => 0);
    {
        # clusters of both disks interleaved and out of order, as copy-before-write writes them
        local $ENV{VZDUMP_TEST_SIM_ARGS} = '--interleave';
        $node->start_vm($vmid);
    }
    my $fds = VZDumpScenario::open_fds();
    my $run = $node->run_backup($vmid, mode => 'snapshot', compress => 'zstd');
    check_archive($run, $vmid, 'snapshot');
    my $messages = VZDumpScenario::messages($run->{task_log});
    ordered_subset(
        $messages,
        [
            "INFO: Starting Backup of VM $vmid (qemu)",
            "INFO: status = running",
            "INFO: VM Name: demo-vm-$vmid",
            "INFO: include disk 'scsi0' 'local:$vmid/vm-$vmid-disk-0.raw' 8M",
            "INFO: include disk 'virtio1' 'local:$vmid/vm-$vmid-disk-1.raw' 3084K",
            "INFO: backup mode: snapshot",
            "INFO: ionice priority: 7",
            "INFO: skip unused drive 'local:$vmid/vm-$vmid-disk-9.raw' (not included into backup)",
            "INFO: snapshots found (not included into backup)",
            "INFO: pending configuration changes found (not included into backup)",
            "INFO: creating vzdump archive '$run->{archive}'",
            (
                $pve9
                ? (
                    "INFO: skipping guest filesystem freeze - disabled in VM options",
                    "INFO: starting backup via QMP command",
                )
                : ()
            ),
            "INFO: resuming VM again",
        ],
        'snapshot: log lines in order',
    );
    ok(!(grep { m/starting backup via QMP|guest filesystem freeze/ } @$messages), 'snapshot: no PVE 9 lines')
        if !$pve9;
    ok((grep { m/^INFO: started backup task '[0-9a-f-]{36}'$/ } @$messages), 'job uuid logged');
    ok((grep { $_ =~ $progress } @$messages), 'progress line');
    ok((grep { m/^INFO: backup is sparse: \d+\.\d\d MiB \(\d+%\) total zero data$/ } @$messages), 'sparse summary');
    ok((grep { m/^INFO: transferred 11\.01 MiB in (?:\d+ seconds \(\S+ \S+\)|<1 seconds)$/ } @$messages),
        'transferred summary');
    like($messages->[-2], qr/^INFO: Finished Backup of VM $vmid \(\d\d:\d\d:\d\d\)$/, 'finished');

    my $commands = VZDumpScenario::commands($run);
    is_deeply(
        [@$commands[0 .. 6]],
        [
            'query-backup', 'query-status', 'query-proxmox-support', 'query-backup',
            $pve9 ? 'query-named-block-nodes' : 'query-block',
            'getfd', 'backup',
        ],
        'snapshot: QMP conversation up to the backup start',
    ) or diag(explain($commands));
    is($commands->[7], 'cont', 'VM resumed right after the job started');
    ok(!(grep { $_ !~ m/^(?:query-backup)$/ } @$commands[8 .. $#$commands]), 'then only query-backup polls');
    my $backup = VZDumpScenario::arguments_of($run, 'backup');
    is_deeply(
        $backup,
        {
            'backup-file' => '/dev/fdname/backup',
            speed => 0,
            'config-file' => "$run->{task}->{tmpdir}/qemu-server.conf",
            'firewall-file' => "$run->{task}->{tmpdir}/qemu-server.fw",
            devlist => 'drive-scsi0,drive-virtio1',
            'max-workers' => 16,
        },
        'backup arguments',
    );
    is_deeply(scalar(VZDumpScenario::arguments_of($run, 'getfd')), { fdname => 'backup' }, 'getfd names the fd');
    ok(PVE::QemuServer::check_running($vmid), 'VM still running');
    is(mon_cmd($vmid, 'query-status')->{status}, 'running', 'and not paused');
    unlike(PVE::Tools::file_get_contents(PVE::QemuConfig->config_file($vmid)), qr/^lock:/m, 'unlocked');
    VZDumpScenario::check_no_leaks($fds, 'snapshot');
    $node->stop_vm($vmid);
}

# stop mode on a running VM: shut down, started paused for the backup, resumed
{
    my $vmid = 101;
    $node->create_sample_vm($vmid);
    $node->start_vm($vmid);
    my $run = $node->run_backup($vmid, mode => 'stop', compress => 'gzip');
    check_archive($run, $vmid, 'stop');
    my $messages = VZDumpScenario::messages($run->{task_log});
    ordered_subset(
        $messages,
        [
            "INFO: status = running",
            "INFO: backup mode: stop",
            "INFO: ionice priority: 7",
            "INFO: VM Name: demo-vm-$vmid",
            "INFO: stopping virtual guest",
            "INFO: creating vzdump archive '$run->{archive}'",
            "INFO: starting kvm to execute backup task",
            ($pve9 ? "INFO: starting backup via QMP command" : ()),
        ],
        'stop: log lines in order',
    );
    ok(!(grep { m/guest filesystem freeze|fs-freeze/ } @$messages), 'stop: no freeze check in stop mode');
    ok((grep { m/^INFO: resuming VM again after \d+ seconds$/ } @$messages), 'resumed after the stop');
    ok(!(grep { m/guest is online again/ } @$messages), 'no second "online again" line');
    ok(PVE::QemuServer::check_running($vmid), 'VM running after the backup');
    is(mon_cmd($vmid, 'query-status')->{status}, 'running', 'and not paused');
    $node->stop_vm($vmid);
}

# a stopped VM: QEMU started paused (prelaunch) for the backup, stopped after
{
    my $vmid = 102;
    $node->create_sample_vm($vmid);
    my $run = $node->run_backup($vmid, mode => 'snapshot', compress => 'lzo');
    check_archive($run, $vmid, 'stopped VM');
    my $messages = VZDumpScenario::messages($run->{task_log});
    ordered_subset(
        $messages,
        [
            "INFO: status = stopped",
            "INFO: backup mode: stop",
            "INFO: starting kvm to execute backup task",
            ($pve9 ? "INFO: starting backup via QMP command" : ()),
            "INFO: stopping kvm after backup task",
        ],
        'stopped VM: log lines in order',
    );
    ok(!(grep { m/resuming VM/ } @$messages), 'not resumed');
    ok(!(grep { $_ eq 'cont' } VZDumpScenario::commands($run)->@*), 'no cont sent');
    ok(!PVE::QemuServer::check_running($vmid), 'VM stopped again');
}

# a paused VM stays paused and gets no fs-freeze
{
    my $vmid = 103;
    $node->create_sample_vm($vmid, agent => 1);
    $node->start_vm($vmid);
    mon_cmd($vmid, 'stop');
    my $run = $node->run_backup($vmid, mode => 'snapshot');
    check_archive($run, $vmid, 'paused VM');
    my $messages = VZDumpScenario::messages($run->{task_log});
    ok(!(grep { m/resuming VM|fs-freeze/ } @$messages), 'neither resumed nor frozen');
    is(mon_cmd($vmid, 'query-status')->{status}, 'paused', 'still paused');
    $node->stop_vm($vmid);
}

# a template: started paused despite being a template, no fleecing
{
    my $vmid = 104;
    $node->create_sample_vm($vmid, template => 1);
    my $run = $node->run_backup($vmid, mode => 'snapshot', fleecing => { enabled => 1, storage => 'local' });
    check_archive($run, $vmid, 'template');
    my $messages = VZDumpScenario::messages($run->{task_log});
    ok((grep { $_ eq 'INFO: stopping kvm after backup task' } @$messages), 'stopped after');
    ok(!(grep { m/fleecing/ } @$messages), 'no fleecing for a template');
    ok(!exists(VZDumpScenario::arguments_of($run, 'backup')->{fleecing}), 'backup without fleecing');
}

done_testing();
