#!/usr/bin/perl
# The optional parts of a VMA backup of a running VM: guest-agent fs-freeze
# and thaw around the job start (and each reason to skip it), fleecing
# images (on, off, unsupported by QEMU) and the TPM state drive attached for
# the backup only.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;

use VZDumpScenario;
use PVE::QemuConfig;
use PVE::QemuServer;
use PVE::Tools;

plan skip_all => "the pve-qemu simulator is not built" if !-x PVE::TestNode::simulator();

my $node = VZDumpScenario->new();
my $mib = 1024 * 1024;

my sub backup_running {
    my ($vmid, $vm_param, %opts) = @_;
    my $mode = delete $opts{mode} // 'snapshot';
    $node->create_sample_vm($vmid, %$vm_param);
    $node->start_vm($vmid);
    my $run = $node->run_backup($vmid, mode => $mode, %opts);
    $node->stop_vm($vmid);
    is($run->{task}->{state}, 'ok', "VM $vmid: backup succeeds") or diag($run->{task}->{msg});
    is_deeply([$node->verify_archive($run->{archive}, $vmid)], [], "VM $vmid: archive matches the disks");
    $run->{messages} = VZDumpScenario::messages($run->{task_log});
    $run->{commands} = VZDumpScenario::commands($run);
    return $run;
}

my sub agent_lines {
    my ($run) = @_;
    return [grep { m/guest-agent/ } $run->{messages}->@*];
}

# guest agent running: freeze before the job starts, thaw right after
{
    my $run = backup_running(150, { agent => '1' });
    is_deeply(
        agent_lines($run),
        ["INFO: issuing guest-agent 'fs-freeze' command", "INFO: issuing guest-agent 'fs-thaw' command"],
        'agent: freeze and thaw logged',
    );
    my @around = grep { m/^(?:guest-|getfd|backup$|cont)/ } $run->{commands}->@*;
    is_deeply(
        \@around,
        [
            'guest-sync-delimited', 'guest-ping', 'guest-sync-delimited', 'guest-fsfreeze-freeze',
            'getfd', 'backup', 'guest-sync-delimited', 'guest-fsfreeze-thaw', 'cont',
        ],
        'agent: ping, freeze, job start, thaw, resume (each agent command after a sync)',
    );
}

# agent configured as disabled: the ping finds no agent
{
    my $run = backup_running(151, { agent => 'enabled=0' });
    is_deeply(
        agent_lines($run),
        ["INFO: skipping guest-agent 'fs-freeze', agent configured but not running?"],
        'agent not running: skipped with the original message',
    );
}

# freezing disabled in the VM options
{
    my $run = backup_running(152, { agent => '1,freeze-fs-on-backup=0' });
    is_deeply(
        agent_lines($run),
        ["INFO: skipping guest-agent 'fs-freeze', disabled in VM options"],
        'freeze disabled: skipped with the original message',
    );
    ok(!(grep { m/^guest-fsfreeze/ } $run->{commands}->@*), 'freeze disabled: no freeze command');
}

# no agent configured, and stop mode: silently skipped
{
    my $run = backup_running(153, { agent => '0' });
    is_deeply(agent_lines($run), [], 'agent off: nothing logged');
    ok(!(grep { m/^guest-/ } $run->{commands}->@*), 'agent off: no agent command');

    $run = backup_running(154, { agent => '1' }, mode => 'stop');
    is_deeply(agent_lines($run), [], 'stop mode: no freeze');
}

# fleecing: images allocated, attached, used, detached and freed
{
    my $vmid = 155;
    my $run = backup_running($vmid, {}, fleecing => { enabled => 1, storage => 'local' });
    my @attach = grep { m/fleecing/ } $run->{messages}->@*;
    is_deeply(
        \@attach,
        [
            "INFO: drive-scsi0: attaching fleecing image local:$vmid/vm-$vmid-fleece-0.qcow2 to QEMU",
            "INFO: drive-virtio1: attaching fleecing image local:$vmid/vm-$vmid-fleece-1.qcow2 to QEMU",
            "INFO: removing (old) fleecing image 'local:$vmid/vm-$vmid-fleece-0.qcow2'",
            "INFO: removing (old) fleecing image 'local:$vmid/vm-$vmid-fleece-1.qcow2'",
        ],
        'fleecing: attach and cleanup lines',
    ) or diag(explain($run->{messages}));
    my $images = $node->root . "/storage/local/images/$vmid";
    my @adds = grep { m/^drive_add/ } VZDumpScenario::hmp_commands($run)->@*;
    is_deeply(
        \@adds,
        [
            "drive_add auto \"file=$images/vm-$vmid-fleece-0.qcow2,if=none,id=drive-scsi0-fleecing,"
                . "format=qcow2,discard=unmap\"",
            "drive_add auto \"file=$images/vm-$vmid-fleece-1.qcow2,if=none,id=drive-virtio1-fleecing,"
                . "format=qcow2,discard=unmap\"",
        ],
        'fleecing: drive_add commands',
    );
    is(VZDumpScenario::arguments_of($run, 'backup')->{fleecing}, JSON::true, 'backup with fleecing');
    ok(!-e "$images/vm-$vmid-fleece-0.qcow2", 'fleecing image freed');
    unlike(PVE::Tools::file_get_contents(PVE::QemuConfig->config_file($vmid)), qr/special:fleecing/,
        'fleecing images no longer recorded');
}

# fleecing requested but not supported by the running QEMU
{
    local $ENV{VZDUMP_TEST_SIM_ARGS} = '--support backup-fleecing=false';
    my $run = backup_running(156, {}, fleecing => { enabled => 1, storage => 'local' });
    ok(
        (grep { $_ eq 'WARN: running QEMU version does not support backup fleecing - continuing without' }
            $run->{messages}->@*),
        'fleecing unsupported: warned',
    );
    ok(!exists(VZDumpScenario::arguments_of($run, 'backup')->{fleecing}), 'fleecing unsupported: not used');
}

# fleecing off: only the left-over cleanup asks QEMU
{
    my $run = backup_running(157, {});
    ok(!(grep { m/fleecing/ } $run->{messages}->@*), 'fleecing off: no fleecing lines');
    ok((grep { $_ eq 'query-block' } $run->{commands}->@*), 'fleecing off: left-over cleanup ran');
}

# TPM state: attached as drive-tpmstate0-backup for the backup only
{
    my $vmid = 158;
    my $run = backup_running(
        $vmid,
        {
            disks => [
                { key => 'scsi0', size => 2 * $mib, layout => [[0, 65536]] },
                { key => 'tpmstate0', size => 4 * $mib, layout => [[0, 8192]] },
            ],
        },
    );
    ok((grep { $_ eq 'INFO: attaching TPM drive to QEMU for backup' } $run->{messages}->@*), 'TPM: attach logged');
    my $path = $node->root . "/storage/local/images/$vmid/vm-$vmid-disk-1.raw";
    is_deeply(
        VZDumpScenario::hmp_commands($run),
        [
            'drive_del drive-tpmstate0-backup',
            "drive_add auto \"file=$path,if=none,read-only=on,id=drive-tpmstate0-backup\"",
            'drive_del drive-tpmstate0-backup',
        ],
        'TPM: stale drive removed, attached read-only, detached in cleanup',
    );
    is(VZDumpScenario::arguments_of($run, 'backup')->{devlist}, 'drive-scsi0,drive-tpmstate0-backup',
        'TPM: in the device list');
}

done_testing();
