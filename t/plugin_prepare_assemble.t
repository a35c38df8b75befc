#!/usr/bin/perl
# prepare and assemble on a stopped VM: the disks the plugin picks (order,
# sizes, formats, exclusions and their log lines) and the config it writes
# into the archive (filtered sections, unused drives, lock lines, the
# #qmdump#map lines, the firewall file).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use VZDumpReleases; # runs this file on PVE 8 and on PVE 9

use File::Path qw(make_path);
use Test::More;

use VZDumpScenario;
use PVE::QemuConfig;
use PVE::Tools;

my $node = VZDumpScenario->new();
my $kib = 1024;
my $vm = $node->create_sample_vm(
    101,
    name => 'web01',
    disks => [
        { key => 'virtio1', size => 3 * 1024 * $kib + 12 * $kib, layout => [[0, 4096]] },
        { key => 'scsi10', size => 1024 * $kib },
        { key => 'scsi2', size => 2048 * $kib },
        { key => 'sata0', size => 1024 * $kib, options => ',backup=0' },
        { key => 'efidisk0', size => 128 * $kib },
        { key => 'tpmstate0', size => 4096 * $kib },
    ],
    extra_config => "lock: migrate\nparent: before-upgrade\n#qmdump#map:old:line:\n",
);
PVE::Tools::file_set_contents(
    PVE::QemuConfig->config_file(101),
    PVE::Tools::file_get_contents(PVE::QemuConfig->config_file(101))
        . "\n[special:fleecing]\nfleecing-images: local:101/vm-101-fleece-0.raw\n",
);

require PVE::VZDump;
my $vzdump = PVE::VZDump->new(undef, { dumpdir => $node->root . "/dump" }, undef);
my $plugin = $vzdump->{plugins}->[0];

is($plugin->type(), 'qemu', 'type');
is_deeply($plugin->vmlist(), [101], 'vmlist holds the VMs of the node');
is_deeply([$plugin->vm_status(101)], [0, 'stopped'], 'vm_status of a stopped VM');

my $logfile = $node->root . "/prepare.log";
open(my $logfd, '>', $logfile) or die;
$plugin->set_logfd($logfd);

my $task = { vmid => 101, mode => 'stop', tmpdir => $node->root . "/tmp-101" };
make_path($task->{tmpdir});
{
    local *STDERR;
    open(STDERR, '>', '/dev/null');
    $plugin->prepare($task, 101, 'stop');
    $plugin->assemble($task, 101);
}
close($logfd);

my @log = map { s/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d //r } split(/\n/, PVE::Tools::file_get_contents($logfile));
is_deeply(
    \@log,
    [
        "INFO: VM Name: web01",
        "INFO: include disk 'scsi2' 'local:101/vm-101-disk-2.raw' 2M",
        "INFO: include disk 'scsi10' 'local:101/vm-101-disk-1.raw' 1M",
        "INFO: include disk 'virtio1' 'local:101/vm-101-disk-0.raw' 3084K",
        "INFO: exclude disk 'sata0' 'local:101/vm-101-disk-3.raw' (backup=no)",
        "INFO: exclude disk 'efidisk0' 'local:101/vm-101-disk-4.raw' (efidisk but no OMVF BIOS)",
        "INFO: include disk 'tpmstate0' 'local:101/vm-101-disk-5.raw' 4M",
        "INFO: skip unused drive 'local:101/vm-101-disk-9.raw' (not included into backup)",
        "INFO: special config section found (not included into backup)",
        "INFO: snapshots found (not included into backup)",
        "INFO: pending configuration changes found (not included into backup)",
    ],
    'prepare and assemble log lines, in the original order',
);

is_deeply(
    [map { $_->{virtdev} } $task->{disks}->@*],
    [qw(scsi10 scsi2 tpmstate0 virtio1)],
    'disks sorted by config key string (the VMA device order)',
);
my ($tpm) = grep { $_->{virtdev} eq 'tpmstate0' } $task->{disks}->@*;
is($tpm->{qmdevice}, 'drive-tpmstate0-backup', 'TPM state gets its backup-only drive name');
if (VZDumpScenario::pve9()) {
    # qemu-server 9 attaches the TPM node by volume id (Blockdev::attach)
    is($task->{'tpm-volid'}, $tpm->{volid}, 'tpm-volid names the TPM volume');
    ok(!exists($task->{tpmpath}), 'no tpmpath on PVE 9');
} else {
    is($task->{tpmpath}, $tpm->{path}, 'tpmpath points at the TPM volume');
    ok(!exists($task->{'tpm-volid'}), 'no tpm-volid on PVE 8');
}
is($task->{disks}->[0]->{size}, 1024 * $kib, 'size from the storage');
is($task->{disks}->[0]->{format}, 'raw', 'format from the storage');
is($task->{disks}->[0]->{type}, 'file', 'a file-backed disk');
is($task->{hostname}, 'web01', 'hostname is the VM name');
is($plugin->{vm_was_running}, 0, 'not running at prepare');

my $config = PVE::Tools::file_get_contents("$task->{tmpdir}/qemu-server.conf");
unlike($config, qr/^(?:lock|parent|unused0|#qmdump#map:old):/m, 'lock, parent, unused and old map lines dropped');
unlike($config, qr/\[|snaptime|fleecing-images|memory: 4096/, 'no pending, snapshot or special section');
like($config, qr/^name: web01$/m, 'VM options kept');
like(
    $config,
    qr/#qmdump#map:scsi10:drive-scsi10:local:raw:\n#qmdump#map:scsi2:drive-scsi2:local:raw:\n#qmdump#map:tpmstate0:drive-tpmstate0-backup:local:raw:\n#qmdump#map:virtio1:drive-virtio1:local:raw:\n\z/,
    'one map line per disk, in device order, at the end',
);
is(
    PVE::Tools::file_get_contents("$task->{tmpdir}/qemu-server.fw"),
    PVE::Tools::file_get_contents($node->root . "/etc/pve/firewall/101.fw"),
    'firewall file copied',
);

eval { $plugin->lock_vm(101) };
is($@, "VM is locked (migrate)\n", 'lock_vm refuses a VM holding another lock');

done_testing();
