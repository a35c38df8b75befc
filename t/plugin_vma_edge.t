#!/usr/bin/perl
# Edge cases of a VMA backup, each on the original's error path with its
# message: QEMU refusing a fleecing image or the TPM state drive (HMP
# drive_add), the getfd + backup batch running into its 30 s timeout, the
# job failing before the first status poll, and a job ending with a status
# the plugin does not know. After each: what the original sends to QEMU,
# what it leaves on the storage, the VM's power state, no fd or child left.
# PVE 9 attaches with blockdev-add, so QEMU refuses a node there (a name
# already taken, a file it cannot open) with its own QMP error.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use VZDumpReleases; # runs this file on PVE 8 and on PVE 9

use Test::More;

use VZDumpScenario;
use PVE::QemuConfig;
use PVE::QemuServer;
use PVE::QemuServer::Monitor qw(mon_cmd);
use PVE::Tools;

plan skip_all => "the pve-qemu simulator is not built" if !-x PVE::TestNode::simulator();

my $node = VZDumpScenario->new();
my $pve9 = VZDumpScenario::pve9();
my $mib = 1024 * 1024;
my $fleecing = { enabled => 1, storage => 'local' };

my sub error_path_lines {
    my ($run) = @_;
    return [
        grep { m/^ERROR:|aborting backup job|resuming VM again|kvm after backup|starting kvm/ }
            $run->{messages}->@*
    ];
}

my sub commands_after {
    my ($run, $command) = @_;
    my @commands = $run->{commands}->@*;
    shift @commands while @commands && $commands[0] ne $command;
    shift @commands;
    return \@commands;
}

my sub block_devices {
    my ($vmid) = @_;
    return [sort map { $_->{device} } mon_cmd($vmid, 'query-block')->@*];
}

my sub no_archive_left {
    my ($run, $what) = @_;
    ok(!-e $run->{archive} && !-e $run->{task}->{tmptar}, "$what: no archive left");
}

my sub fleecing_images {
    my ($vmid) = @_;
    return [map { s|.*/||r } glob($node->root . "/storage/local/images/$vmid/vm-$vmid-fleece-*")];
}

# After a failed fleecing backup, the next backup of the VM cleans up the
# left-overs (logging $detach_line for the left-over node) and succeeds.
my sub next_backup_cleans_up {
    my ($vmid, $fleecing, $detach_line, $detach_what) = @_;
    my $next = $node->run_backup($vmid, mode => 'snapshot', compress => 'zstd', fleecing => $fleecing);
    is($next->{task}->{state}, 'ok', 'after fleecing failure: next backup succeeds') or diag($next->{task}->{msg});
    my $messages = VZDumpScenario::messages($next->{task_log});
    is_deeply(
        [grep { m/\(old\) fleecing/ } $messages->@*],
        [
            $detach_line,
            "INFO: removing (old) fleecing image 'local:$vmid/vm-$vmid-fleece-0.qcow2'",
            "INFO: removing (old) fleecing image 'local:$vmid/vm-$vmid-fleece-1.qcow2'",
            "INFO: removing (old) fleecing image 'local:$vmid/vm-$vmid-fleece-0.qcow2'",
            "INFO: removing (old) fleecing image 'local:$vmid/vm-$vmid-fleece-1.qcow2'",
        ],
        "after fleecing failure: $detach_what, images freed first, new images freed after",
    ) or diag(explain($messages));
    is_deeply([$node->verify_archive($next->{archive}, $vmid)], [], 'after fleecing failure: archive matches the disks');
    is_deeply(fleecing_images($vmid), [], 'after fleecing failure: no fleecing image left');
}

if ($pve9) {
    # A fleecing image's file node name is taken by a node nobody recorded
    # (added by hand): blockdev-add of the second image fails with QEMU's
    # text. As on PVE 8 the images stay recorded and the first one attached.
    my $vmid = 160;
    my $stray = $node->root . "/stray.raw";
    PVE::Tools::file_set_contents($stray, "\0" x 4096);
    my $run = $node->run_with_sim_args(
        $vmid, '',
        fleecing => $fleecing,
        before => sub {
            mon_cmd($vmid, 'blockdev-add', driver => 'file', filename => $stray, 'node-name' => 'virtio1-fleecing-file');
        },
    );
    my $error = "adding blockdev 'drive-virtio1-fleecing' failed : VM $vmid qmp command 'blockdev-add' failed"
        . " - Duplicate nodes with node-name='virtio1-fleecing-file'";
    is($run->{task}->{state}, 'err', 'fleecing blockdev-add: backup fails');
    is($run->{task}->{msg}, "$error\n\n", "fleecing blockdev-add: Blockdev's message with QEMU's error");
    is_deeply(
        error_path_lines($run),
        ["ERROR: $error", "INFO: aborting backup job", "INFO: resuming VM again", "ERROR: Backup of VM $vmid failed - $error"],
        'fleecing blockdev-add: error, cancel, resume',
    ) or diag(explain($run->{messages}));
    is_deeply(
        [map { $_->{arguments}->{'node-name'} } grep { ($_->{execute} // '') eq 'blockdev-add' } $run->{qmp}->@*],
        ['drive-scsi0-fleecing', 'drive-virtio1-fleecing'],
        'fleecing blockdev-add: both images tried',
    );
    is_deeply(
        commands_after($run, 'query-proxmox-support'),
        [
            'query-backup', 'query-named-block-nodes', # left-over cleanup
            'query-block',                             # block node sizes
            'query-named-block-nodes', 'query-named-block-nodes', # stale nodes of scsi0, virtio1
            'query-machines', 'blockdev-add', 'query-machines', 'blockdev-add', 'backup-cancel', 'cont',
        ],
        'fleecing blockdev-add: stale nodes looked for, no job started, cancel and resume sent',
    ) or diag(explain(commands_after($run, 'query-proxmox-support')));
    is_deeply(fleecing_images($vmid), ["vm-$vmid-fleece-0.qcow2", "vm-$vmid-fleece-1.qcow2"],
        'fleecing blockdev-add: images kept on the storage');
    like(
        PVE::Tools::file_get_contents(PVE::QemuConfig->config_file($vmid)),
        qr/^\[special:fleecing\]\nfleecing-images: local:$vmid\/vm-$vmid-fleece-0\.qcow2,local:$vmid\/vm-$vmid-fleece-1\.qcow2$/m,
        'fleecing blockdev-add: images recorded for a later cleanup',
    );
    my $nodes = VZDumpScenario::block_state($vmid)->{nodes};
    ok((grep { $_ eq 'drive-scsi0-fleecing' } @$nodes), 'fleecing blockdev-add: first image still attached');
    no_archive_left($run, 'fleecing blockdev-add');
    VZDumpScenario::check_no_leaks($run->{fds}, 'fleecing blockdev-add');

    # with the stray node gone, the next backup detaches the left-over node,
    # frees the recorded images and succeeds
    mon_cmd($vmid, 'blockdev-del', 'node-name' => 'virtio1-fleecing-file');
    next_backup_cleans_up($vmid, $fleecing, "INFO: detaching (old) fleecing image 'drive-scsi0-fleecing'",
        'left-over node detached');
    is_deeply(
        VZDumpScenario::block_state($vmid)->{nodes},
        [sort qw(drive-scsi0 fscsi0 escsi0 drive-virtio1 fvirtio1 evirtio1)],
        'after fleecing failure: no fleecing node in QEMU',
    );
    $node->stop_vm($vmid);
}

if ($pve9) {
    # QEMU refuses the TPM backup node of a stopped VM (the file is busy):
    # QEMU started paused for the backup is stopped again, nothing detached
    my $vmid = 162;
    my $tpm_image = $node->root . "/storage/local/images/$vmid/vm-$vmid-disk-1.raw";
    my $qemu_error = "Could not open '$tpm_image': Device or resource busy";
    my $run = $node->run_with_sim_args(
        $vmid,
        qq{--fail "blockdev-add=$qemu_error"},
        stopped => 1,
        fleecing => $fleecing,
        vm => {
            disks => [
                { key => 'scsi0', size => 2 * $mib, layout => [[0, 65536]] },
                { key => 'tpmstate0', size => 4 * $mib, layout => [[0, 8192]] },
            ],
        },
    );
    my $error = "adding blockdev 'drive-tpmstate0-backup' failed : VM $vmid qmp command 'blockdev-add' failed"
        . " - $qemu_error";
    is($run->{task}->{state}, 'err', 'TPM blockdev-add: backup fails');
    is($run->{task}->{msg}, "$error\n\n", "TPM blockdev-add: Blockdev's message with QEMU's error");
    is_deeply(
        error_path_lines($run),
        [
            "INFO: starting kvm to execute backup task",
            "ERROR: $error",
            "INFO: aborting backup job",
            "INFO: stopping kvm after backup task",
            "ERROR: Backup of VM $vmid failed - $error",
        ],
        'TPM blockdev-add: error, cancel, no resume, QEMU stopped again',
    ) or diag(explain($run->{messages}));
    is_deeply(
        commands_after($run, 'query-proxmox-support'),
        ['query-named-block-nodes', 'query-machines', 'blockdev-add', 'backup-cancel', 'query-status', 'quit'],
        'TPM blockdev-add: stale node looked for, attach tried; no fleecing, no job, no detach; QEMU quit',
    );
    is_deeply(VZDumpScenario::hmp_commands($run), [], 'TPM blockdev-add: no HMP');
    is_deeply(fleecing_images($vmid), [], 'TPM blockdev-add: no fleecing image allocated');
    ok(!PVE::QemuServer::check_running($vmid), 'TPM blockdev-add: VM stopped as before');
    no_archive_left($run, 'TPM blockdev-add');
    VZDumpScenario::check_no_leaks($run->{fds}, 'TPM blockdev-add');
}

# PVE 8: HMP drive_add
if (!$pve9) {
    # QEMU refuses the second fleecing image (HMP drive_add prints its error).
    # The original dies before it marks fleecing as used, so cleanup neither
    # detaches nor frees anything: the images stay recorded in the config and
    # the first one stays attached, until the next backup's left-over cleanup.
    {
        my $vmid = 160;
        my $image = $node->root . "/storage/local/images/$vmid/vm-$vmid-fleece-1.qcow2";
        my $qemu_error = "Could not open '$image': Permission denied";
        my $run = $node->run_with_sim_args($vmid, qq{--hmp-error "drive_add\@2=$qemu_error"}, fleecing => $fleecing);
        my $error = "attaching fleecing image local:$vmid/vm-$vmid-fleece-1.qcow2 failed - $qemu_error";

        is($run->{task}->{state}, 'err', 'fleecing drive_add: backup fails');
        is($run->{task}->{msg}, "$error\r\n\n", "fleecing drive_add: message with QEMU's reply as is");
        is_deeply(
            error_path_lines($run),
            [
                "ERROR: $error\r",
                "INFO: aborting backup job",
                "INFO: resuming VM again",
                "ERROR: Backup of VM $vmid failed - $error\r",
            ],
            'fleecing drive_add: error, cancel, resume',
        ) or diag(explain($run->{messages}));
        is_deeply(
            [grep { m/fleecing/ } $run->{messages}->@*],
            [
                "INFO: drive-scsi0: attaching fleecing image local:$vmid/vm-$vmid-fleece-0.qcow2 to QEMU",
                "INFO: drive-virtio1: attaching fleecing image local:$vmid/vm-$vmid-fleece-1.qcow2 to QEMU",
                "ERROR: $error\r",
                "ERROR: Backup of VM $vmid failed - $error\r",
            ],
            'fleecing drive_add: no cleanup of fleecing images in this run',
        );
        my $images = $node->root . "/storage/local/images/$vmid";
        is_deeply(
            VZDumpScenario::hmp_commands($run),
            [
                'drive_del drive-scsi0-fleecing',
                'drive_del drive-virtio1-fleecing',
                "drive_add auto \"file=$images/vm-$vmid-fleece-0.qcow2,if=none,id=drive-scsi0-fleecing,"
                    . "format=qcow2,discard=unmap\"",
                "drive_add auto \"file=$images/vm-$vmid-fleece-1.qcow2,if=none,id=drive-virtio1-fleecing,"
                    . "format=qcow2,discard=unmap\"",
            ],
            'fleecing drive_add: old drives removed, two attached, none detached',
        );
        is_deeply(
            commands_after($run, 'query-proxmox-support'),
            [
                'query-backup', 'query-block', 'query-block', ('human-monitor-command') x 4,
                'backup-cancel', 'cont',
            ],
            'fleecing drive_add: no job started, cancel and resume sent',
        );
        is_deeply(fleecing_images($vmid), ["vm-$vmid-fleece-0.qcow2", "vm-$vmid-fleece-1.qcow2"],
            'fleecing drive_add: images kept on the storage');
        like(
            PVE::Tools::file_get_contents(PVE::QemuConfig->config_file($vmid)),
            qr/^\[special:fleecing\]\nfleecing-images: local:$vmid\/vm-$vmid-fleece-0\.qcow2,local:$vmid\/vm-$vmid-fleece-1\.qcow2$/m,
            'fleecing drive_add: images recorded for a later cleanup',
        );
        ok((grep { $_ eq 'drive-scsi0-fleecing' } block_devices($vmid)->@*), 'fleecing drive_add: first image still attached');
        is(mon_cmd($vmid, 'query-status')->{status}, 'running', 'fleecing drive_add: VM running');
        no_archive_left($run, 'fleecing drive_add');
        VZDumpScenario::check_no_leaks($run->{fds}, 'fleecing drive_add');

        # the next backup of the VM cleans up the left-overs and succeeds
        next_backup_cleans_up($vmid, $fleecing,
            "INFO: detaching (old) fleecing image for 'drive-scsi0-fleecing'", 'left-overs detached');
        unlike(PVE::Tools::file_get_contents(PVE::QemuConfig->config_file($vmid)), qr/special:fleecing/,
            'after fleecing failure: nothing recorded any more');
        ok(!(grep { m/-fleecing$/ } block_devices($vmid)->@*), 'after fleecing failure: no fleecing drive in QEMU');
        $node->stop_vm($vmid);
    }

    # the monitor itself fails the second drive_add: its error, unchanged
    {
        my $vmid = 161;
        my $run = $node->run_with_sim_args($vmid, '--fail "human-monitor-command@4=monitor is busy"', fleecing => $fleecing);
        my $error = "VM $vmid qmp command 'human-monitor-command' failed - monitor is busy";
        is($run->{task}->{msg}, "$error\n", 'fleecing QMP error: the monitor message');
        is_deeply(
            error_path_lines($run),
            ["ERROR: $error", "INFO: aborting backup job", "INFO: resuming VM again", "ERROR: Backup of VM $vmid failed - $error"],
            'fleecing QMP error: error, cancel, resume',
        );
        is_deeply(fleecing_images($vmid), ["vm-$vmid-fleece-0.qcow2", "vm-$vmid-fleece-1.qcow2"],
            'fleecing QMP error: images kept for a later cleanup');
        VZDumpScenario::check_no_leaks($run->{fds}, 'fleecing QMP error');
        $node->stop_vm($vmid);
    }

    # QEMU refuses the TPM state drive of a stopped VM: QEMU was started paused
    # for the backup and is stopped again; fleecing never got as far as
    # allocating images. Cleanup finds the VM stopped and sends nothing more.
    {
        my $vmid = 162;
        my $tpm_image = $node->root . "/storage/local/images/$vmid/vm-$vmid-disk-1.raw";
        my $qemu_error = "Could not open '$tpm_image': Device or resource busy";
        my $run = $node->run_with_sim_args(
            $vmid,
            qq{--hmp-error "drive_add=$qemu_error"},
            stopped => 1,
            fleecing => $fleecing,
            vm => {
                disks => [
                    { key => 'scsi0', size => 2 * $mib, layout => [[0, 65536]] },
                    { key => 'tpmstate0', size => 4 * $mib, layout => [[0, 8192]] },
                ],
            },
        );
        my $error = "attaching TPM drive failed - $qemu_error";
        is($run->{task}->{state}, 'err', 'TPM drive_add: backup fails');
        is($run->{task}->{msg}, "$error\r\n\n", "TPM drive_add: message with QEMU's reply as is");
        is_deeply(
            error_path_lines($run),
            [
                "INFO: starting kvm to execute backup task",
                "ERROR: $error\r",
                "INFO: aborting backup job",
                "INFO: stopping kvm after backup task",
                "ERROR: Backup of VM $vmid failed - $error\r",
            ],
            'TPM drive_add: error, cancel, no resume, QEMU stopped again',
        ) or diag(explain($run->{messages}));
        ok((grep { $_ eq 'INFO: attaching TPM drive to QEMU for backup' } $run->{messages}->@*), 'TPM drive_add: attach logged');
        is_deeply(
            VZDumpScenario::hmp_commands($run),
            ['drive_del drive-tpmstate0-backup', "drive_add auto \"file=$tpm_image,if=none,read-only=on,id=drive-tpmstate0-backup\""],
            'TPM drive_add: stale drive removed, attach tried, no detach on a stopped VM',
        );
        is_deeply(
            commands_after($run, 'query-proxmox-support'),
            ['human-monitor-command', 'human-monitor-command', 'backup-cancel', 'query-status', 'quit'],
            'TPM drive_add: no fleecing, no job; cancel, power state checked, QEMU quit',
        );
        is_deeply(fleecing_images($vmid), [], 'TPM drive_add: no fleecing image allocated');
        ok(!PVE::QemuServer::check_running($vmid), 'TPM drive_add: VM stopped as before');
        no_archive_left($run, 'TPM drive_add');
        VZDumpScenario::check_no_leaks($run->{fds}, 'TPM drive_add');
    }
}

# QEMU never answers `backup`: the batch (getfd + backup on one connection)
# gives up after its 30 s, the guest is thawed, the job cancelled, the VM
# resumed, the compressor killed and reaped and the pipe closed.
{
    my $vmid = 163;
    my $run = $node->run_with_sim_args($vmid, '--hang backup', vm => { agent => '1' });
    is($run->{task}->{state}, 'err', 'backup timeout: backup fails');
    # PVE 9 says which step failed
    my $error = $pve9 ? "executing QMP command to start backup failed - got timeout" : "got timeout";
    is($run->{task}->{msg}, "$error\n", 'backup timeout: the queue message');
    is_deeply(
        error_path_lines($run),
        [
            "ERROR: $error",
            "INFO: aborting backup job",
            "INFO: resuming VM again",
            "ERROR: Backup of VM $vmid failed - $error",
        ],
        'backup timeout: error, cancel, resume',
    ) or diag(explain($run->{messages}));
    ok((grep { $_ eq 'INFO: starting backup via QMP command' } $run->{messages}->@*), 'backup timeout: batch announced')
        if $pve9;
    is_deeply(
        [
            grep { m/^(?:guest-fsfreeze|getfd|backup|cont|query-backup)/ }
                commands_after($run, $pve9 ? 'query-named-block-nodes' : 'query-block')->@*
        ],
        [
            ($pve9 ? 'guest-fsfreeze-status' : ()),
            'guest-fsfreeze-freeze', 'getfd', 'backup', 'guest-fsfreeze-thaw', 'backup-cancel', 'cont',
        ],
        'backup timeout: thaw after the batch, then cancel and resume; no status poll',
    );
    my (undef, $getfd) = VZDumpScenario::arguments_of($run, 'getfd');
    like($getfd, qr/"fd":\s*true/, 'backup timeout: the fd went with getfd');
    ok(!(grep { m/started backup task/ } $run->{messages}->@*), 'backup timeout: no job reported');
    is(mon_cmd($vmid, 'query-status')->{status}, 'running', 'backup timeout: VM running');
    no_archive_left($run, 'backup timeout');
    VZDumpScenario::check_no_leaks($run->{fds}, 'backup timeout');
    $node->stop_vm($vmid);
}

# the job has failed by the first query-backup: one status line, the error
{
    my $vmid = 164;
    my $run = $node->run_with_sim_args($vmid, '--backup-error-at 0');
    my $error = 'job failed with err -5 - Input/output error';
    is($run->{task}->{msg}, "$error\n", 'error at first poll: errmsg of query-backup');
    is_deeply(commands_after($run, 'backup'), ['cont', 'query-backup', 'backup-cancel', 'cont'],
        'error at first poll: one poll, then cancel and resume');
    my @tail = grep { m/started backup task|% \(|^ERROR:|aborting|resuming|sparse|transferred/ } $run->{messages}->@*;
    is(scalar(@tail), 7, 'error at first poll: seven lines from the job start on') or diag(explain(\@tail));
    like($tail[0], qr/^INFO: started backup task '[0-9a-f-]{36}'$/, 'error at first poll: job started');
    is($tail[1], 'INFO: resuming VM again', 'error at first poll: VM resumed after the job start');
    like($tail[2], qr/^INFO:  36% \(4\.0 MiB of 11\.0 MiB\) in \d+s, read: 4\.0 MiB\/s, write: 1\.0 MiB\/s$/,
        'error at first poll: the status line (zero bytes not written)');
    is_deeply(
        [@tail[3 .. 6]],
        ["ERROR: $error", 'INFO: aborting backup job', 'INFO: resuming VM again', "ERROR: Backup of VM $vmid failed - $error"],
        'error at first poll: no summary, error, cancel, resume',
    );
    no_archive_left($run, 'error at first poll');
    VZDumpScenario::check_no_leaks($run->{fds}, 'error at first poll');
    $node->stop_vm($vmid);
}

# the job ends with a status that is neither done nor error
{
    my $vmid = 165;
    my $run = $node->run_with_sim_args($vmid, '--end-status cancelled');
    is($run->{task}->{msg}, "got unexpected status 'cancelled'\n", 'unknown end status: the original message');
    my @tail = grep { m/% \(|^ERROR:|aborting|sparse|transferred/ } $run->{messages}->@*;
    like($tail[0], qr/^INFO: 100% \(11\.0 MiB of 11\.0 MiB\) in \d+s, read: /, 'unknown end status: final status line');
    is_deeply(
        [@tail[1 .. $#tail]],
        [
            "ERROR: got unexpected status 'cancelled'",
            'INFO: aborting backup job',
            "ERROR: Backup of VM $vmid failed - got unexpected status 'cancelled'",
        ],
        'unknown end status: no summary; error and cancel',
    ) or diag(explain($run->{messages}));
    is($run->{commands}->[-2], 'backup-cancel', 'unknown end status: backup-cancel sent');
    is(mon_cmd($vmid, 'query-status')->{status}, 'running', 'unknown end status: VM running');
    no_archive_left($run, 'unknown end status');
    VZDumpScenario::check_no_leaks($run->{fds}, 'unknown end status');
    $node->stop_vm($vmid);
}

done_testing();
