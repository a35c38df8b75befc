#!/usr/bin/perl
# Backups through an external backup provider: fleecing images for every
# disk, backup-access-setup, the NBD server and one export per disk, the
# 0700 access directory, what the provider is handed for the 'nbd'
# mechanism, the data read through the 'file-handle' mechanism's nbdfuse
# files, the teardown in cleanup, and each refusal with its message
# (no fleecing, unknown mechanism, bad incremental mode, nbdfuse missing,
# a failing provider). Fleecing images attach as drives on PVE 8 and as
# blockdev nodes on PVE 9; a TPM state disk gets its own fleecing image.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use VZDumpReleases; # runs this file on PVE 8 and on PVE 9

use Test::More;

use VZDumpScenario;
use PVE::Tools;

plan skip_all => "the pve-qemu simulator is not built" if !-x PVE::TestNode::simulator();

package TestProvider {
    sub new {
        my ($class, %param) = @_;
        return bless { mechanism => 'nbd', incremental => {}, %param }, $class;
    }
    sub provider_name { return 'test-provider' }

    sub backup_get_archive_name {
        my ($self, $vmid, $vmtype, $backup_time) = @_;
        return "test-provider-$vmid-$backup_time";
    }

    sub backup_get_mechanism {
        my ($self, $vmid, $vmtype) = @_;
        return $self->{mechanism};
    }

    sub backup_vm_query_incremental {
        my ($self, $vmid, $devices) = @_;
        $self->{queried_devices} = $devices;
        $self->{before_setup}->() if $self->{before_setup};
        return $self->{incremental};
    }

    # For 'file-handle', each volume's data is read through its virtual file
    # (the handle itself is O_DIRECT, which Perl buffers cannot serve).
    sub backup_vm {
        my ($self, $vmid, $guest_config, $volumes, $param) = @_;
        my $backup = { config => $guest_config, volumes => $volumes, param => $param };
        for my $device (sort keys %$volumes) {
            my $volume = $volumes->{$device};
            if (my $fh = $volume->{'file-handle'}) {
                my $copy = "$self->{copy_dir}/$device.raw";
                system('cp', "/proc/$$/fd/" . fileno($fh), $copy) == 0 or die "copy of $device failed\n";
                $backup->{copies}->{$device} = $copy;
                $backup->{regions}->{$device} = [$volume->{'next-dirty-region'}->()];
                $backup->{dir_mode} = (stat($self->{access_dir}))[2] & 07777;
            } else {
                my $dir = $volume->{'nbd-path'} =~ s|/[^/]+$||r;
                $backup->{dir_mode} = (stat($dir))[2] & 07777;
            }
        }
        $self->{backup} = $backup;
        die "provider storage full\n" if $self->{fail};
    }
}

my $node = VZDumpScenario->new();
my $pve9 = VZDumpScenario::pve9();
my $vmid = 190;
$node->create_sample_vm($vmid);
$node->start_vm($vmid);
my $fleecing = { enabled => 1, storage => 'local' };

my sub external_backup {
    my ($provider, %opts) = @_;
    my $run = $node->run_backup($vmid, mode => 'snapshot', 'backup-provider' => $provider, %opts);
    $run->{messages} = VZDumpScenario::messages($run->{task_log});
    $run->{commands} = VZDumpScenario::commands($run);
    return $run;
}

# the 'nbd' mechanism
{
    my $provider = TestProvider->new();
    my $fds = VZDumpScenario::open_fds();
    my $run = external_backup($provider, fleecing => $fleecing);
    is($run->{task}->{state}, 'ok', 'nbd: backup succeeds') or diag($run->{task}->{msg});
    my $root = $run->{task}->{'backup-access-root-dir'};
    is($root, $node->root . "/run/qemu-server/$vmid.backup-access.$$/", 'access directory name');
    my $nbd_path = "$root/$vmid-nbd.backup-access";
    is_deeply(
        [grep { m/external|mechanism|snapshot-access|NBD|backup-access|attaching fleecing/ } $run->{messages}->@*],
        [
            "INFO: starting external backup via test-provider",
            "INFO: drive-scsi0: attaching fleecing image local:$vmid/vm-$vmid-fleece-0.qcow2 to QEMU",
            "INFO: drive-virtio1: attaching fleecing image local:$vmid/vm-$vmid-fleece-1.qcow2 to QEMU",
            "INFO: using backup mechanism 'nbd'",
            "INFO: setting up snapshot-access for backup",
            "INFO: starting NBD server",
            "INFO: adding NBD export for drive-scsi0",
            "INFO: adding NBD export for drive-virtio1",
            "INFO: tearing down backup-access",
        ],
        'nbd: log lines',
    ) or diag(explain($run->{messages}));
    is_deeply(
        scalar(VZDumpScenario::arguments_of($run, 'backup-access-setup')),
        { 'target-id' => 'snapshot-access:local', devices => [{ device => 'drive-scsi0' }, { device => 'drive-virtio1' }] },
        'nbd: backup-access-setup arguments',
    );
    is_deeply(
        scalar(VZDumpScenario::arguments_of($run, 'nbd-server-start')),
        { addr => { type => 'unix', data => { path => $nbd_path } } },
        'nbd: NBD server on a socket in the access directory',
    );
    my $export = VZDumpScenario::arguments_of($run, 'block-export-add');
    is($export->{id}, 'drive-scsi0', 'nbd: export named after the device');
    is($export->{writable}, JSON::true, 'nbd: writable export (discard)');
    is_deeply(
        scalar(VZDumpScenario::arguments_of($run, 'backup-access-teardown')),
        { 'target-id' => 'snapshot-access:local', success => JSON::true },
        'nbd: teardown reports success',
    );
    my @order = grep { m/^(?:backup-access|nbd-server|block-export|cont|query-pbs)/ } $run->{commands}->@*;
    is_deeply(
        \@order,
        [
            'backup-access-setup', 'cont', 'query-pbs-bitmap-info', 'nbd-server-start',
            'block-export-add', 'block-export-add', 'nbd-server-stop', 'backup-access-teardown',
        ],
        'nbd: QMP order, VM resumed right after the setup',
    );

    my $backup = $provider->{backup};
    like($backup->{config}, qr/^#qmdump#map:scsi0:drive-scsi0:local:raw:$/m, 'provider gets the assembled config');
    is(
        $backup->{param}->{'firewall-config'},
        PVE::Tools::file_get_contents($node->root . "/etc/pve/firewall/$vmid.fw"),
        'provider gets the firewall config',
    );
    is_deeply(
        $backup->{volumes}->{'drive-scsi0'},
        { 'bitmap-mode' => 'none', size => 8 * 1024 * 1024, 'nbd-path' => $nbd_path, 'bitmap-name' => undef },
        'provider gets the NBD export of each disk',
    );
    is($backup->{dir_mode}, 0700, 'access directory is private (0700)');
    ok(!-e $root, 'access directory removed in cleanup');
    is_deeply(
        $provider->{queried_devices},
        { 'drive-scsi0' => { size => 8 * 1024 * 1024 }, 'drive-virtio1' => { size => 3 * 1024 * 1024 + 12 * 1024 } },
        'provider asked about incremental mode with the block node sizes',
    );
    VZDumpScenario::check_no_leaks($fds, 'external nbd');
    if ($pve9) {
        is_deeply(
            [map { $_->{arguments}->{'node-name'} } grep { ($_->{execute} // '') eq 'blockdev-add' } $run->{qmp}->@*],
            ['drive-scsi0-fleecing', 'drive-virtio1-fleecing'],
            'nbd: fleecing images attached as blockdev nodes',
        );
        is_deeply(VZDumpScenario::hmp_commands($run), [], 'nbd: no HMP');
    } else {
        is_deeply(
            [map { m/^drive_add auto "file=[^,]+,if=none,id=([^,]+),/ ? $1 : () } VZDumpScenario::hmp_commands($run)->@*],
            ['drive-scsi0-fleecing', 'drive-virtio1-fleecing'],
            'nbd: fleecing images attached as drives',
        );
    }
}

# incremental: a new bitmap per device
{
    my $provider = TestProvider->new(incremental => { 'drive-scsi0' => 'new' });
    my $run = external_backup($provider, fleecing => $fleecing);
    is($run->{task}->{state}, 'ok', 'incremental: backup succeeds') or diag($run->{task}->{msg});
    is_deeply(
        scalar(VZDumpScenario::arguments_of($run, 'backup-access-setup'))->{devices},
        [{ device => 'drive-scsi0', 'bitmap-mode' => 'new' }, { device => 'drive-virtio1' }],
        'incremental: bitmap mode passed per device',
    );
    is($provider->{backup}->{volumes}->{'drive-scsi0'}->{'bitmap-mode'}, 'new', 'incremental: provider told');
}

# refusals
{
    my $run = external_backup(TestProvider->new());
    is($run->{task}->{msg}, "cannot setup backup access without fleecing\n", 'no fleecing: refused');

    $run = external_backup(TestProvider->new(mechanism => 'directory'), fleecing => $fleecing);
    is($run->{task}->{msg}, "mechanism 'directory' requested by backup provider is not supported for VMs\n",
        'unknown mechanism: refused');

    $run = external_backup(TestProvider->new(incremental => { 'drive-scsi0' => 'bogus' }), fleecing => $fleecing);
    is($run->{task}->{msg}, "invalid incremental mode 'bogus' returned by backup provider plugin\n",
        'bad incremental mode: refused');

    {
        no warnings 'once';
        local $PVE::VZDump::QemuServer::nbdfuse_binary = $node->root . "/no-such/nbdfuse";
        $run = external_backup(TestProvider->new(mechanism => 'file-handle'), fleecing => $fleecing);
    }
    is($run->{task}->{msg}, "need 'nbdfuse' binary from package libnbd-bin\n", 'nbdfuse missing: clear error');
    ok(!-e $run->{task}->{'backup-access-root-dir'}, 'nbdfuse missing: access directory removed');
}

# the provider fails: error path, teardown without success
{
    my $run = external_backup(TestProvider->new(fail => 1), fleecing => $fleecing);
    is($run->{task}->{msg}, "provider storage full\n", 'provider failure: its message');
    ok((grep { $_ eq 'ERROR: provider storage full' } $run->{messages}->@*), 'provider failure: logged');
    is(scalar(VZDumpScenario::arguments_of($run, 'backup-access-teardown'))->{success}, JSON::false,
        'provider failure: teardown without success');
    ok(!(grep { m/fleece/ } glob($node->root . "/storage/local/images/$vmid/*")), 'fleecing images freed');
}

# the 'file-handle' mechanism: NBD exports mounted as files with nbdfuse. The
# simulator speaks no NBD, so qemu-storage-daemon serves the VM's disks on the
# socket the plugin names, started before the plugin sets up the access.
SKIP: {
    my @missing = grep { !-x "/usr/bin/$_" } qw(nbdfuse fusermount qemu-storage-daemon);
    push @missing, '/dev/fuse' if !-e '/dev/fuse';
    skip "file-handle mechanism needs @missing", 11 if @missing;

    my $access_dir = $node->root . "/run/qemu-server/$vmid.backup-access.$$/";
    my $nbd_path = "$access_dir/$vmid-nbd.backup-access";
    my $images = $node->{vms}->{$vmid}->{disks};
    my $qsd_pid = $node->root . "/qsd.pid";
    my $copy_dir = $node->root . "/provider-copies";
    mkdir($copy_dir);
    my $provider = TestProvider->new(
        mechanism => 'file-handle',
        copy_dir => $copy_dir,
        access_dir => $access_dir,
        before_setup => sub {
            # writable, as the plugin opens the virtual files read-write (for discard)
            my @cmd = ('qemu-storage-daemon', '--daemonize', '--pidfile', $qsd_pid);
            push @cmd, '--nbd-server', "addr.type=unix,addr.path=$nbd_path";
            for my $disk (@$images) {
                push @cmd, '--blockdev', "driver=file,filename=$disk->{path},node-name=$disk->{key}";
                push @cmd, '--export',
                    "type=nbd,id=export-$disk->{key},node-name=$disk->{key},name=drive-$disk->{key},writable=on";
            }
            system(@cmd) == 0 or die "qemu-storage-daemon failed\n";
        },
    );
    my $fds = VZDumpScenario::open_fds();
    my $run = external_backup($provider, fleecing => $fleecing);
    kill('TERM', PVE::Tools::file_read_firstline($qsd_pid)) if -f $qsd_pid;
    is($run->{task}->{state}, 'ok', 'file-handle: backup succeeds') or diag($run->{task}->{msg});
    my $backup = $provider->{backup};
    for my $disk (@$images) {
        my $device = "drive-$disk->{key}";
        is(system('cmp', '-s', $backup->{copies}->{$device} // '/dev/null', $disk->{path}), 0,
            "file-handle: $device read through its virtual file matches the disk");
        is_deeply($backup->{regions}->{$device}, [0, $disk->{size}], "file-handle: $device is one dirty region");
    }
    my $mount = "$access_dir/$vmid-nbd.backup-access.drive-scsi0.$$";
    ok((grep { $_ eq "INFO: provided NBD export as a virtual file '$mount/drive-scsi0'" } $run->{messages}->@*),
        'file-handle: virtual file announced');
    ok(!(grep { m/^WARN:|unable to gracefully/ } $run->{messages}->@*), 'file-handle: clean unmount')
        or diag(explain($run->{messages}));
    is($backup->{dir_mode}, 0700, 'file-handle: access directory is private (0700)');
    ok(!-e $access_dir, 'file-handle: mounts and access directory gone');
    VZDumpScenario::check_no_leaks($fds, 'external file-handle');
}

$node->stop_vm($vmid);

# a TPM state disk: attached for the backup and given a fleecing image too
# (external providers back up every disk through snapshot-access)
{
    my $tpm_vmid = 191;
    my $mib = 1024 * 1024;
    $node->create_sample_vm(
        $tpm_vmid,
        disks => [
            { key => 'scsi0', size => 2 * $mib, layout => [[0, 65536]] },
            { key => 'tpmstate0', size => 4 * $mib, layout => [[0, 8192]] },
        ],
    );
    $node->start_vm($tpm_vmid);
    my $provider = TestProvider->new();
    my $run = $node->run_backup($tpm_vmid, mode => 'snapshot', 'backup-provider' => $provider, fleecing => $fleecing);
    my $after = VZDumpScenario::block_state($tpm_vmid);
    $node->stop_vm($tpm_vmid);
    is($run->{task}->{state}, 'ok', 'TPM: backup succeeds') or diag($run->{task}->{msg});
    is_deeply(
        scalar(VZDumpScenario::arguments_of($run, 'backup-access-setup'))->{devices},
        [{ device => 'drive-scsi0' }, { device => 'drive-tpmstate0-backup' }],
        'TPM: the backup node is a device of the access',
    );
    is($provider->{queried_devices}->{'drive-tpmstate0-backup'}->{size}, 4 * $mib,
        'TPM: the backup node\'s size from QEMU');
    if ($pve9) {
        my @adds = map { $_->{arguments} } grep { ($_->{execute} // '') eq 'blockdev-add' } $run->{qmp}->@*;
        is_deeply(
            [map { [$_->{'node-name'}, $_->{file}->{'node-name'}, $_->{'read-only'} ? 'ro' : 'rw'] } @adds],
            [
                ['drive-tpmstate0-backup', 'tpmstate0-backup-file', 'ro'],
                ['drive-scsi0-fleecing', 'scsi0-fleecing-file', 'rw'],
                ['drive-tpmstate0-backup-fleecing', 'tpmstate0-backup-fleecing-file', 'rw'],
            ],
            'TPM: backup node and both fleecing nodes attached with qemu-server 9\'s names',
        );
        ok((grep { $_ eq 'query-named-block-nodes' } VZDumpScenario::commands($run)->@*),
            'TPM: node size asked with query-named-block-nodes');
        is_deeply($after->{nodes}, [sort qw(drive-scsi0 fscsi0 escsi0)], 'TPM: no node left in QEMU');
    } else {
        my @adds = grep { m/^drive_add/ } VZDumpScenario::hmp_commands($run)->@*;
        is_deeply(
            [map { m/id=([^,"]+)/ ? $1 : () } @adds],
            ['drive-tpmstate0-backup', 'drive-scsi0-fleecing', 'drive-tpmstate0-backup-fleecing'],
            'TPM: backup drive and both fleecing drives added',
        );
        is_deeply($after->{backends}, ['drive-scsi0'], 'TPM: no drive left in QEMU');
    }
}
done_testing();
