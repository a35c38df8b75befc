#!/usr/bin/perl
# PBS backups of a running VM with disks: QEMU's `backup` with format pbs
# and every PBS argument typed as pve-qemu wants it (repository, id, time,
# password, namespace, fingerprint, encryption and master key, dirty
# bitmap), the dirty-bitmap lines, incremental mode and reused summary, the
# task size, and the checks that stop a backup before it starts.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use VZDumpReleases; # runs this file on PVE 8 and on PVE 9

use Test::More;

use VZDumpScenario;
use PVE::Tools;

plan skip_all => "the pve-qemu simulator is not built" if !-x PVE::TestNode::simulator();

my $node = VZDumpScenario->new();
my $pve9 = VZDumpScenario::pve9();
my $priv = $node->root . "/etc/pve/priv/storage";
PVE::Tools::file_set_contents("$priv/pbs1.pw", "s3cret\n");
my $total = 8 * 1024 * 1024 + 3 * 1024 * 1024 + 12 * 1024;

my sub pbs_backup {
    my ($vmid, %scfg) = @_;
    my $scfg = { type => 'pbs', server => 'pbs.example.com', datastore => 'store1', %scfg };
    my $run = $node->run_backup($vmid, mode => 'snapshot', pbs => 1, storage => 'pbs1', scfg => $scfg);
    $run->{messages} = VZDumpScenario::messages($run->{task_log});
    ($run->{backup}, $run->{raw}) = VZDumpScenario::arguments_of($run, 'backup');
    ($run->{uuid}) = map { m/^INFO: started backup task '(.*)'$/ ? $1 : () } $run->{messages}->@*;
    return $run;
}

# a first, full backup with encryption, namespace and fingerprint
my $vmid = 180;
$node->create_sample_vm($vmid);
{
    local $ENV{VZDUMP_TEST_SIM_ARGS} = '--pbs-dirty 1048576';
    $node->start_vm($vmid);
}
PVE::Tools::file_set_contents("$priv/pbs1.enc", "{}\n");
{
    my $fds = VZDumpScenario::open_fds();
    my $run = pbs_backup($vmid, namespace => 'dept', fingerprint => 'aa:bb', username => 'backup@pbs');
    is($run->{task}->{state}, 'ok', 'full: backup succeeds') or diag($run->{task}->{msg});
    my $tmpdir = $run->{task}->{tmpdir};
    is_deeply(
        $run->{backup},
        {
            format => 'pbs',
            'backup-file' => 'backup@pbs@pbs.example.com:store1',
            'backup-id' => "$vmid",
            'backup-time' => $run->{task}->{backup_time},
            password => 's3cret',
            devlist => 'drive-scsi0,drive-virtio1',
            'config-file' => "$tmpdir/qemu-server.conf",
            'firewall-file' => "$tmpdir/qemu-server.fw",
            'backup-ns' => 'dept',
            fingerprint => 'aa:bb',
            encrypt => JSON::true,
            keyfile => "$priv/pbs1.enc",
            'use-dirty-bitmap' => JSON::true,
            'max-workers' => 16,
        },
        'full: backup arguments (no timeout reaches QEMU)',
    );
    like($run->{raw}, qr/"backup-id":"$vmid"/, 'backup-id is a JSON string');
    like($run->{raw}, qr/"backup-time":\d+[,}]/, 'backup-time is a JSON number');
    like($run->{raw}, qr/"encrypt":true/, 'encrypt is a JSON boolean');
    is_deeply(
        [grep { m/encryption|dirty-bitmap|incremental|started backup|starting backup|creating|freeze/ }
                $run->{messages}->@*],
        [
            "INFO: creating Proxmox Backup Server archive '$run->{task}->{target}'",
            "INFO: enabling encryption",
            (
                $pve9
                ? (
                    "INFO: skipping guest filesystem freeze - disabled in VM options",
                    "INFO: starting backup via QMP command",
                )
                : ()
            ),
            "INFO: started backup task '$run->{uuid}'",
            "INFO: scsi0: dirty-bitmap status: created new",
            "INFO: virtio1: dirty-bitmap status: created new",
        ],
        'full: log lines',
    ) or diag(explain($run->{messages}));
    ok((grep { m/^INFO: transferred 11\.01 MiB in / } $run->{messages}->@*), 'full: transferred summary');
    ok(!(grep { m/archive file size/ } $run->{messages}->@*), 'full: no archive file');
    is($run->{task}->{size}, $total, 'full: task size is the total');
    VZDumpScenario::check_no_leaks($fds, 'PBS full');
}

# the second backup is incremental: only the dirty part is sent
{
    my $run = pbs_backup($vmid);
    is($run->{task}->{state}, 'ok', 'incremental: backup succeeds') or diag($run->{task}->{msg});
    is_deeply(
        [grep { m/dirty-bitmap|incremental/ } $run->{messages}->@*],
        [
            "INFO: scsi0: dirty-bitmap status: OK (512.0 KiB of 8.0 MiB dirty)",
            "INFO: virtio1: dirty-bitmap status: OK (512.0 KiB of 3.0 MiB dirty)",
            "INFO: using fast incremental mode (dirty-bitmap), 1.0 MiB dirty of 11.0 MiB total",
            "INFO: backup was done incrementally, reused 10.01 MiB (90%)",
        ],
        'incremental: bitmap lines and reuse summary',
    ) or diag(explain($run->{messages}));
    ok((grep { m/^INFO: 100% \(1\.0 MiB of 1\.0 MiB\) in / } $run->{messages}->@*), 'incremental: progress of the dirty part');
    is($run->{backup}->{encrypt}, JSON::true, 'incremental: still encrypted');
    ok(!exists($run->{backup}->{'backup-ns'}), 'incremental: no namespace option');
}

# master key: passed when QEMU supports it, refused when not
PVE::Tools::file_set_contents("$priv/pbs1.master.pem", "pem\n");
{
    my $run = pbs_backup($vmid);
    is($run->{backup}->{'master-keyfile'}, "$priv/pbs1.master.pem", 'master key passed');
    ok((grep { $_ eq 'INFO: enabling encryption with master key feature' } $run->{messages}->@*),
        'master key announced');
}
$node->stop_vm($vmid);
{
    local $ENV{VZDUMP_TEST_SIM_ARGS} = '--support pbs-masterkey=false';
    $node->start_vm($vmid);
    my $run = pbs_backup($vmid);
    is($run->{task}->{msg}, "master key configured but running QEMU version does not support master keys\n",
        'master key without QEMU support: refused');
    ok(!(grep { m/starting backup via QMP/ } $run->{messages}->@*), 'master key refused: no QMP batch announced');
    ok(!$run->{backup}, 'master key without QEMU support: no backup started');
    $node->stop_vm($vmid);
}
unlink "$priv/pbs1.master.pem", "$priv/pbs1.enc";

# unencrypted, and a QEMU without PBS support
{
    local $ENV{VZDUMP_TEST_SIM_ARGS} = '--without query-proxmox-support';
    $node->start_vm($vmid);
    my $run = pbs_backup($vmid);
    is(
        $run->{task}->{msg},
        "PBS backups are not supported by the running QEMU version. Please make sure you've installed"
            . " the latest version and the VM has been restarted.\n",
        'QEMU without PBS support: the original message',
    );
    $node->stop_vm($vmid);
}

# fleecing and a TPM state disk: PVE 8 adds drives over HMP, PVE 9 blockdev
# nodes; the TPM state gets no fleecing image (not worth it for PBS); none
# is left in QEMU after
{
    my $tpm_vmid = 182;
    my $mib = 1024 * 1024;
    $node->create_sample_vm(
        $tpm_vmid,
        disks => [
            { key => 'scsi0', size => 2 * $mib, layout => [[0, 65536]] },
            { key => 'tpmstate0', size => 4 * $mib, layout => [[0, 8192]] },
        ],
    );
    $node->start_vm($tpm_vmid);
    my $scfg = { type => 'pbs', server => 'pbs.example.com', datastore => 'store1' };
    my $run = $node->run_backup(
        $tpm_vmid,
        mode => 'snapshot', pbs => 1, storage => 'pbs1', scfg => $scfg,
        fleecing => { enabled => 1, storage => 'local' },
    );
    my $after = VZDumpScenario::block_state($tpm_vmid);
    $node->stop_vm($tpm_vmid);
    is($run->{task}->{state}, 'ok', 'fleecing and TPM: backup succeeds') or diag($run->{task}->{msg});
    my $backup = VZDumpScenario::arguments_of($run, 'backup');
    is($backup->{devlist}, 'drive-scsi0,drive-tpmstate0-backup', 'fleecing and TPM: devices');
    is($backup->{fleecing}, JSON::true, 'fleecing and TPM: backup with fleecing');
    if ($pve9) {
        is_deeply(
            [map { $_->{arguments}->{'node-name'} } grep { ($_->{execute} // '') eq 'blockdev-add' } $run->{qmp}->@*],
            ['drive-tpmstate0-backup', 'drive-scsi0-fleecing'],
            'fleecing and TPM: backup node and fleecing node added',
        );
        is_deeply(
            [map { $_->{arguments}->{'node-name'} } grep { ($_->{execute} // '') eq 'blockdev-del' } $run->{qmp}->@*],
            ['drive-tpmstate0-backup', 'tpmstate0-backup-file', 'drive-scsi0-fleecing', 'scsi0-fleecing-file'],
            'fleecing and TPM: both detached in cleanup, each top node before its file child',
        );
        is_deeply(VZDumpScenario::hmp_commands($run), [], 'fleecing and TPM: no HMP');
        is_deeply($after->{nodes}, [sort qw(drive-scsi0 fscsi0 escsi0)], 'fleecing and TPM: no node left');
    } else {
        is_deeply(
            [map { m/^drive_add auto "file=[^,]+,if=none,(?:read-only=on,)?id=([^,"]+)/ ? $1 : () }
                VZDumpScenario::hmp_commands($run)->@*],
            ['drive-tpmstate0-backup', 'drive-scsi0-fleecing'],
            'fleecing and TPM: backup drive and fleecing drive added',
        );
        is_deeply($after->{backends}, ['drive-scsi0'], 'fleecing and TPM: no drive left');
    }
}

# a template gets neither a dirty bitmap nor per-drive lines
{
    my $template = 181;
    $node->create_sample_vm($template, template => 1);
    my $run = pbs_backup($template);
    is($run->{task}->{state}, 'ok', 'template: backup succeeds') or diag($run->{task}->{msg});
    is($run->{backup}->{encrypt}, JSON::false, 'template: unencrypted, encrypt false');
    ok(!exists($run->{backup}->{'use-dirty-bitmap'}), 'template: no dirty bitmap');
    ok(!(grep { m/dirty-bitmap status/ } $run->{messages}->@*), 'template: no bitmap lines');
    ok((grep { $_ eq 'INFO: stopping kvm after backup task' } $run->{messages}->@*), 'template: QEMU stopped after');
}

done_testing();
