#!/usr/bin/perl
# The optional parts of a VMA backup of a running VM: guest-agent fs-freeze
# and thaw around the job start (and each reason to skip it), fleecing
# images (on, off, unsupported by QEMU) and the TPM state drive attached for
# the backup only. PVE 8 attaches drives over HMP and checks the agent
# itself; PVE 9 adds blockdev nodes and leaves the agent checks (and their
# texts) to qemu-server's Agent module.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use VZDumpReleases; # runs this file on PVE 8 and on PVE 9

use Test::More;

use VZDumpScenario;
use PVE::QemuConfig;
use PVE::QemuServer;
use PVE::Tools;

plan skip_all => "the pve-qemu simulator is not built" if !-x PVE::TestNode::simulator();

my $node = VZDumpScenario->new();
my $mib = 1024 * 1024;
my $pve9 = VZDumpScenario::pve9();

my sub backup_running {
    my ($vmid, $vm_param, %opts) = @_;
    my $mode = delete $opts{mode} // 'snapshot';
    $node->create_sample_vm($vmid, %$vm_param);
    $node->start_vm($vmid);
    my $run = $node->run_backup($vmid, mode => $mode, %opts);
    $run->{after} = VZDumpScenario::block_state($vmid);
    $node->stop_vm($vmid);
    is($run->{task}->{state}, 'ok', "VM $vmid: backup succeeds") or diag($run->{task}->{msg});
    is_deeply([$node->verify_archive($run->{archive}, $vmid)], [], "VM $vmid: archive matches the disks");
    $run->{messages} = VZDumpScenario::messages($run->{task_log});
    $run->{commands} = VZDumpScenario::commands($run);
    return $run;
}

my sub agent_lines {
    my ($run) = @_;
    return [grep { m/guest-agent|guest filesystem freeze|guest fs/ } $run->{messages}->@*];
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
            'guest-sync-delimited', 'guest-ping',
            ($pve9 ? ('guest-sync-delimited', 'guest-fsfreeze-status') : ()),
            'guest-sync-delimited', 'guest-fsfreeze-freeze',
            'getfd', 'backup', 'guest-sync-delimited', 'guest-fsfreeze-thaw', 'cont',
        ],
        $pve9
        ? 'agent: ping, freeze status, freeze, job start, thaw, resume (each agent command after a sync)'
        : 'agent: ping, freeze, job start, thaw, resume (each agent command after a sync)',
    );
    is(VZDumpScenario::arguments_of($run, 'guest-fsfreeze-freeze')->{timeout}, undef,
        'agent: the timeout stays on our side');
    my @start = map { s/'[0-9a-f-]{36}'/'UUID'/r }
        grep { m/fs-freeze|starting backup|started backup|fs-thaw/ } $run->{messages}->@*;
    is_deeply(
        \@start,
        [
            "INFO: issuing guest-agent 'fs-freeze' command",
            ($pve9 ? "INFO: starting backup via QMP command" : ()),
            "INFO: issuing guest-agent 'fs-thaw' command",
            "INFO: started backup task 'UUID'",
        ],
        'agent: the job start between freeze and thaw',
    );
}

# agent configured as disabled: PVE 8 pings it (the option string is set)
# and finds none; PVE 9 reads the option
{
    my $run = backup_running(151, { agent => 'enabled=0' });
    is_deeply(
        agent_lines($run),
        $pve9
        ? ["INFO: skipping guest filesystem freeze - disabled in VM options"]
        : ["INFO: skipping guest-agent 'fs-freeze', agent configured but not running?"],
        'agent disabled: skipped with the release\'s message',
    );
    is_deeply([grep { m/^guest-/ } $run->{commands}->@*], [], 'agent disabled: no agent command');
}

# agent enabled, but its socket gone (agent not running in the guest)
{
    my $vmid = 159;
    $node->create_sample_vm($vmid, agent => '1');
    $node->start_vm($vmid);
    unlink(PVE::TestNode::vm_socket($vmid, 'qga')) or die "unlink - $!\n";
    my $run = $node->run_backup($vmid, mode => 'snapshot');
    $node->stop_vm($vmid);
    is($run->{task}->{state}, 'ok', 'agent not running: backup succeeds');
    $run->{messages} = VZDumpScenario::messages($run->{task_log});
    is_deeply(
        agent_lines($run),
        $pve9
        ? ["INFO: skipping guest filesystem freeze - agent configured but not running?"]
        : ["INFO: skipping guest-agent 'fs-freeze', agent configured but not running?"],
        'agent not running: skipped with the release\'s message',
    );
}

# freezing disabled in the VM options
{
    my $run = backup_running(152, { agent => '1,freeze-fs-on-backup=0' });
    is_deeply(
        agent_lines($run),
        $pve9
        ? ["INFO: skipping guest filesystem freeze - disabled in VM options"]
        : ["INFO: skipping guest-agent 'fs-freeze', disabled in VM options"],
        'freeze disabled: skipped with the release\'s message',
    );
    ok(!(grep { m/^guest-fsfreeze/ } $run->{commands}->@*), 'freeze disabled: no freeze command');
}

# no agent configured: silently skipped on PVE 8, logged on PVE 9; stop mode: skipped
{
    my $run = backup_running(153, { agent => '0' });
    is_deeply(
        agent_lines($run),
        $pve9 ? ["INFO: skipping guest filesystem freeze - disabled in VM options"] : [],
        'agent off: logged as the release does',
    );
    ok(!(grep { m/^guest-/ } $run->{commands}->@*), 'agent off: no agent command');

    $run = backup_running(154, { agent => '1' }, mode => 'stop');
    is_deeply(agent_lines($run), [], 'stop mode: no freeze');
}

# the guest's file systems already frozen: PVE 9 leaves them alone; PVE 8
# freezes anyway, the agent refuses, and it thaws after the job start
{
    my $vmid = 160;
    $node->create_sample_vm($vmid, agent => '1');
    $node->start_vm($vmid);
    PVE::QemuServer::Monitor::mon_cmd($vmid, 'guest-fsfreeze-freeze');
    my $run = $node->run_backup($vmid, mode => 'snapshot');
    my $status = PVE::QemuServer::Monitor::mon_cmd($vmid, 'guest-fsfreeze-status');
    $node->stop_vm($vmid);
    $run->{messages} = VZDumpScenario::messages($run->{task_log});
    is($run->{task}->{state}, 'ok', 'already frozen: backup succeeds');
    if ($pve9) {
        is_deeply(agent_lines($run), ["INFO: skipping guest filesystem freeze - already frozen"],
            'already frozen: skipped');
        is($status, 'frozen', 'already frozen: left frozen');
    } else {
        is_deeply(
            [grep { m/fs-freeze|fs-thaw/ } $run->{messages}->@*],
            ["INFO: issuing guest-agent 'fs-freeze' command", "INFO: issuing guest-agent 'fs-thaw' command"],
            'already frozen: frozen and thawed anyway',
        );
        is($status, 'thawed', 'already frozen: thawed by the backup');
    }
}

# the agent refuses to freeze: PVE 9's Agent module turns the agent's error
# reply into a die the plugin logs; PVE 8 does not look at the reply. Both
# thaw and go on.
{
    local $ENV{VZDUMP_TEST_SIM_ARGS} = '--fail "guest-fsfreeze-freeze=failed to freeze /: Device or resource busy"';
    my $run = backup_running(161, { agent => '1' });
    is_deeply(
        [grep { m/fs-freeze|fs-thaw|freeze guest fs|^ERROR/ } $run->{messages}->@*],
        [
            "INFO: issuing guest-agent 'fs-freeze' command",
            ($pve9 ? "ERROR: unable to freeze guest fs - failed to freeze /: Device or resource busy" : ()),
            "INFO: issuing guest-agent 'fs-thaw' command",
        ],
        'freeze refused: logged as the release does, thawed anyway',
    ) or diag(explain($run->{messages}));
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
    if ($pve9) {
        is_deeply(VZDumpScenario::hmp_commands($run), [], 'fleecing: no HMP');
        my @adds = map { $_->{arguments} } grep { ($_->{execute} // '') eq 'blockdev-add' } $run->{qmp}->@*;
        my $node_options = sub {
            my ($key, $n) = @_;
            my $common = {
                cache => { direct => JSON::true, 'no-flush' => JSON::false },
                discard => 'unmap',
                'detect-zeroes' => 'unmap',
                'read-only' => JSON::false,
            };
            return {
                %$common,
                driver => 'qcow2',
                'node-name' => "drive-$key-fleecing",
                file => {
                    %$common,
                    driver => 'file',
                    filename => "$images/vm-$vmid-fleece-$n.qcow2",
                    aio => 'io_uring',
                    'node-name' => "$key-fleecing-file",
                },
            };
        };
        is_deeply(\@adds, [$node_options->('scsi0', 0), $node_options->('virtio1', 1)],
            'fleecing: blockdev-add of qcow2 over file nodes, named as qemu-server 9 names them');
        my @graph = grep { m/^(?:blockdev-|query-named-block-nodes|query-machines|getfd|backup$)/ }
            $run->{commands}->@*;
        is_deeply(
            \@graph,
            [
                'query-named-block-nodes',                        # left-over cleanup
                'query-named-block-nodes', 'query-named-block-nodes', # stale nodes of scsi0, virtio1
                'query-machines', 'blockdev-add', 'query-machines', 'blockdev-add',
                'getfd', 'backup',
                'query-named-block-nodes', 'blockdev-del', 'blockdev-del', # scsi0: top, then file child
                'query-named-block-nodes', 'blockdev-del', 'blockdev-del', # virtio1
                'query-named-block-nodes',                        # cleanup_fleecing_images
            ],
            'fleecing: the node conversation',
        ) or diag(explain(\@graph));
        my @deleted = map { $_->{arguments}->{'node-name'} }
            grep { ($_->{execute} // '') eq 'blockdev-del' } $run->{qmp}->@*;
        is_deeply(
            \@deleted,
            ['drive-scsi0-fleecing', 'scsi0-fleecing-file', 'drive-virtio1-fleecing', 'virtio1-fleecing-file'],
            'fleecing: each top node detached, then its file child (already gone with it)',
        );
        is_deeply($run->{after}->{nodes}, [sort qw(drive-scsi0 fscsi0 escsi0 drive-virtio1 fvirtio1 evirtio1)],
            'fleecing: no node left in QEMU');
    } else {
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
        is_deeply($run->{after}->{backends}, ['drive-scsi0', 'drive-virtio1'], 'fleecing: no drive left in QEMU');
    }
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
    my $query = $pve9 ? 'query-named-block-nodes' : 'query-block';
    ok((grep { $_ eq $query } $run->{commands}->@*), "fleecing off: left-over cleanup ran ($query)");
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
    if ($pve9) {
        is_deeply(VZDumpScenario::hmp_commands($run), [], 'TPM: no HMP');
        my $common = {
            cache => { direct => JSON::true, 'no-flush' => JSON::false },
            discard => 'ignore',
            'detect-zeroes' => 'on',
            'read-only' => JSON::true,
        };
        is_deeply(
            scalar(VZDumpScenario::arguments_of($run, 'blockdev-add')),
            {
                %$common,
                driver => 'raw',
                'node-name' => 'drive-tpmstate0-backup',
                file => {
                    %$common,
                    driver => 'file',
                    filename => $path,
                    aio => 'io_uring',
                    'node-name' => 'tpmstate0-backup-file',
                },
            },
            'TPM: a read-only raw node over a file node',
        );
        my @graph = grep { m/^(?:blockdev-|query-named-block-nodes|getfd)/ } $run->{commands}->@*;
        is_deeply(
            \@graph,
            [
                'query-named-block-nodes', 'blockdev-add',
                'query-named-block-nodes', # left-over fleecing cleanup
                'getfd',
                'query-named-block-nodes', 'blockdev-del', 'blockdev-del',
            ],
            'TPM: stale node looked for, attached, detached in cleanup',
        ) or diag(explain(\@graph));
        is_deeply($run->{after}->{nodes}, [sort qw(drive-scsi0 fscsi0 escsi0)], 'TPM: no node left in QEMU');
    } else {
        is_deeply(
            VZDumpScenario::hmp_commands($run),
            [
                'drive_del drive-tpmstate0-backup',
                "drive_add auto \"file=$path,if=none,read-only=on,id=drive-tpmstate0-backup\"",
                'drive_del drive-tpmstate0-backup',
            ],
            'TPM: stale drive removed, attached read-only, detached in cleanup',
        );
        is_deeply($run->{after}->{backends}, ['drive-scsi0'], 'TPM: no drive left in QEMU');
    }
    is(VZDumpScenario::arguments_of($run, 'backup')->{devlist}, 'drive-scsi0,drive-tpmstate0-backup',
        'TPM: in the device list');
}

done_testing();
