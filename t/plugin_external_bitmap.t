#!/usr/bin/perl
# An incremental backup through an external provider with the 'file-handle'
# mechanism: the provider asks to reuse a dirty bitmap for one disk, the
# plugin exports the bitmap with the disk's NBD export and hands the
# provider, besides the nbdfuse file, the dirty regions that `nbdinfo
# --map=qemu:dirty-bitmap:<name>` reports. The other disk, without bitmap,
# is one region. The simulator speaks no NBD, so qemu-storage-daemon serves
# the disks on the socket the plugin names: scsi0 through a qcow2 overlay
# whose persistent bitmap was dirtied by writing zeroes over zero regions
# (same data as the disk, known dirty regions).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use VZDumpReleases; # runs this file on PVE 8 and on PVE 9

use Test::More;

use VZDumpScenario;
use PVE::QemuServer::Monitor qw(mon_cmd);
use PVE::Tools;

plan skip_all => "the pve-qemu simulator is not built" if !-x PVE::TestNode::simulator();
my @missing = grep { !-x "/usr/bin/$_" } qw(nbdfuse nbdinfo fusermount qemu-storage-daemon qemu-img qemu-io);
push @missing, '/dev/fuse' if !-e '/dev/fuse';
plan skip_all => "file-handle mechanism with a bitmap needs @missing" if @missing;

package BitmapProvider {
    sub new {
        my ($class, %param) = @_;
        return bless {%param}, $class;
    }
    sub provider_name { return 'bitmap-provider' }
    sub backup_get_archive_name { return "bitmap-provider-$_[1]-$_[3]" }
    sub backup_get_mechanism { return 'file-handle' }

    sub backup_vm_query_incremental {
        my ($self, $vmid, $devices) = @_;
        $self->{before_setup}->();
        return { 'drive-scsi0' => 'use' };
    }

    # Reads each volume through its virtual file and collects every dirty
    # region the plugin reports.
    sub backup_vm {
        my ($self, $vmid, $guest_config, $volumes, $param) = @_;
        for my $device (sort keys %$volumes) {
            my $volume = $volumes->{$device};
            my $copy = "$self->{copy_dir}/$device.raw";
            system('cp', "/proc/$$/fd/" . fileno($volume->{'file-handle'}), $copy) == 0
                or die "copy of $device failed\n";
            my @regions;
            while (my @region = $volume->{'next-dirty-region'}->()) {
                push @regions, \@region;
            }
            $self->{backup}->{$device} = {
                copy => $copy,
                regions => \@regions,
                'bitmap-mode' => $volume->{'bitmap-mode'},
                size => $volume->{size},
            };
        }
    }
}

my $node = VZDumpScenario->new();
my $vmid = 195;
my $mib = 1024 * 1024;
my $bitmap = 'snapshot-access:local'; # the bitmap name QEMU gives the access target
my $vm = $node->create_sample_vm($vmid);
$node->start_vm($vmid);

my $work = $node->root . "/bitmap-work";
mkdir($work);
my ($scsi0, $virtio1) = $vm->{disks}->@*;
my $overlay = "$work/scsi0-overlay.qcow2";
my @dirty = ([2 * $mib, 64 * 1024], [6 * $mib, 128 * 1024]); # zero regions of scsi0
system('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', $scsi0->{path}, '-F', 'raw', $overlay) == 0
    or die "qemu-img create failed\n";
system('qemu-img', 'bitmap', '--add', '--enable', $overlay, $bitmap) == 0 or die "qemu-img bitmap failed\n";
system("qemu-io -c 'write -z $_->[0] $_->[1]' '$overlay' >/dev/null") == 0 || die "qemu-io failed\n"
    for @dirty;

my $access_dir = $node->root . "/run/qemu-server/$vmid.backup-access.$$/";
my $nbd_path = "$access_dir/$vmid-nbd.backup-access";
my $qsd_pid = "$work/qsd.pid";
my $provider = BitmapProvider->new(
    copy_dir => $work,
    before_setup => sub {
        my @cmd = ('qemu-storage-daemon', '--daemonize', '--pidfile', $qsd_pid);
        push @cmd, '--nbd-server', "addr.type=unix,addr.path=$nbd_path";
        push @cmd, '--blockdev', "driver=file,filename=$overlay,node-name=scsi0-file";
        push @cmd, '--blockdev', "driver=qcow2,file=scsi0-file,node-name=scsi0";
        push @cmd, '--export', "type=nbd,id=export-scsi0,node-name=scsi0,name=drive-scsi0,writable=on,"
            . "bitmaps.0=$bitmap";
        push @cmd, '--blockdev', "driver=file,filename=$virtio1->{path},node-name=virtio1";
        push @cmd, '--export', "type=nbd,id=export-virtio1,node-name=virtio1,name=drive-virtio1,writable=on";
        system(@cmd) == 0 or die "qemu-storage-daemon failed\n";
    },
);

my $fds = VZDumpScenario::open_fds();
my $run = $node->run_backup(
    $vmid,
    mode => 'snapshot',
    'backup-provider' => $provider,
    fleecing => { enabled => 1, storage => 'local' },
);
kill('TERM', PVE::Tools::file_read_firstline($qsd_pid)) if -f $qsd_pid;
my $messages = VZDumpScenario::messages($run->{task_log});

is($run->{task}->{state}, 'ok', 'bitmap: backup succeeds') or diag($run->{task}->{msg});
is_deeply(
    scalar(VZDumpScenario::arguments_of($run, 'backup-access-setup'))->{devices},
    [{ device => 'drive-scsi0', 'bitmap-mode' => 'use' }, { device => 'drive-virtio1' }],
    'bitmap: reuse requested for scsi0 only',
);
ok((grep { $_ eq 'INFO: scsi0: dirty-bitmap status: OK (8.0 MiB of 8.0 MiB dirty)' } @$messages),
    'bitmap: dirty-bitmap status logged') or diag(explain($messages));

my @exports = grep { ($_->{execute} // '') eq 'block-export-add' } $run->{qmp}->@*;
# the bitmap sits on the node that holds the data: the drive's node on PVE 8,
# the format node below the drive's throttle node on PVE 9 (-blockdev)
my $scsi0_node;
if (VZDumpScenario::pve9()) {
    my ($top) = grep { $_->{'node-name'} eq 'drive-scsi0' } mon_cmd($vmid, 'query-named-block-nodes')->@*;
    is($top->{drv}, 'throttle', 'bitmap: scsi0 is a throttle node');
    ($scsi0_node) = map { $_->{'node-name'} } grep { $_->{child} eq 'file' } $top->{children}->@*;
} else {
    ($scsi0_node) = map { $_->{inserted}->{'node-name'} } grep { $_->{device} eq 'drive-scsi0' }
        mon_cmd($vmid, 'query-block')->@*;
}
is_deeply(
    $exports[0]->{arguments}->{bitmaps},
    [{ node => $scsi0_node, name => $bitmap }],
    "bitmap: exported with scsi0's NBD export from the drive's node",
);
ok(!exists($exports[1]->{arguments}->{bitmaps}), 'bitmap: none for virtio1');

my $backup = $provider->{backup};
is_deeply(
    $backup->{'drive-scsi0'}->{regions},
    \@dirty,
    'bitmap: scsi0 regions are the dirty ones nbdinfo maps',
);
is($backup->{'drive-scsi0'}->{'bitmap-mode'}, 'reuse', 'bitmap: provider told to reuse its bitmap');
is_deeply($backup->{'drive-virtio1'}->{regions}, [[0, $virtio1->{size}]], 'bitmap: virtio1 is one region');
is($backup->{'drive-virtio1'}->{'bitmap-mode'}, 'none', 'bitmap: virtio1 without bitmap');
for my $disk ($scsi0, $virtio1) {
    my $device = "drive-$disk->{key}";
    is(system('cmp', '-s', $backup->{$device}->{copy}, $disk->{path}), 0,
        "bitmap: $device read through its virtual file matches the disk");
}
ok(!(grep { m/^WARN:|unable to gracefully|unable to collect/ } @$messages), 'bitmap: nbdinfo and mounts cleaned up')
    or diag(explain($messages));
ok(!-e $access_dir, 'bitmap: access directory gone');
VZDumpScenario::check_no_leaks($fds, 'bitmap');

$node->stop_vm($vmid);
done_testing();
