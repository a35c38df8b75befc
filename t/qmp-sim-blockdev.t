#!/usr/bin/perl
# The pve-qemu simulator as pve-qemu 10 under qemu-server 9 (--blockdev):
# the disks' node graph in query-block and query-named-block-nodes,
# blockdev-add and blockdev-del with QEMU's error texts, a backup that finds
# its device and fleecing image by node name and writes a VMA of the disk,
# and query-machines. Also blockdev-add next to drive_add drives (PVE 8).

use strict;
use warnings;

use File::Temp qw(tempdir);
use JSON::PP;
use POSIX ();
use Test::More;
use Time::HiRes qw(usleep);

use PVE::VZDump::QemuServer::Engine;

my $sim = $ENV{PVE_QEMU_SIM} // 'build/pve-qemu-sim';
my $vma = $ENV{VMA} // 'build/vma';
plan(skip_all => "$sim not built") if !-x $sim;

my $dir = tempdir(CLEANUP => 1);

my sub image {
    my ($name, $size, $data) = @_;
    open(my $fh, '>', "$dir/$name") or die "create $name: $!\n";
    truncate($fh, $size) or die "truncate: $!\n";
    print $fh $data if defined($data);
    close($fh);
    return "$dir/$name";
}

my $disk0 = image('disk0.raw', 4 * 1024 * 1024, "scsi0 data" x 1000);
my $disk1 = image('disk1.raw', 1024 * 1024);
my $fleece = image('fleece0.raw', 4 * 1024 * 1024 + 4096); # a storage rounded it up

my @sims;
my sub start_sim {
    my ($name, @args) = @_;
    my $qmp = "$dir/$name.qmp";
    my $pid = fork() // die "fork: $!\n";
    if (!$pid) {
        exec($sim, '--qmp', $qmp, '--pidfile', "$dir/$name.pid", @args) or POSIX::_exit(127);
    }
    push @sims, $pid;
    for (1 .. 200) { last if -S $qmp; usleep(50_000) }
    ok(-S $qmp, "$name: simulator listens");
    # ($execute, \%arguments) or ($execute, key => value, ...)
    return sub {
        my ($execute, @arguments) = @_;
        my $arguments = @arguments == 1 ? $arguments[0] : {@arguments};
        return PVE::VZDump::QemuServer::Engine::qmp_cmd($qmp, 100, $execute, $arguments);
    };
}

my sub error_of {
    my ($code) = @_;
    eval { $code->() };
    return $@ =~ s/^VM 100 qmp command '[^']+' failed - //r;
}

my sub nodes_by_name {
    my ($qmp) = @_;
    return { map { $_->{'node-name'} => $_ } $qmp->('query-named-block-nodes')->@* };
}

my $qmp = start_sim('blockdev', '--blockdev', '--drive', "drive-scsi0=$disk0", '--drive', "drive-virtio1=$disk1");

# the VM's disks as qemu-server 9 starts them
my $blocks = $qmp->('query-block');
is_deeply(
    [map { [$_->{device}, $_->{qdev}, $_->{inserted}->{'node-name'}, $_->{inserted}->{drv}] } @$blocks],
    [['', 'scsi0', 'drive-scsi0', 'throttle'], ['', '/machine/peripheral/virtio1/virtio-backend', 'drive-virtio1', 'throttle']],
    'query-block: anonymous backends of the devices, throttle nodes named drive-<key>',
);
is($blocks->[0]->{inserted}->{image}->{'virtual-size'}, 4 * 1024 * 1024, 'query-block: the disk size');
my $nodes = nodes_by_name($qmp);
is_deeply([sort keys %$nodes], [sort qw(drive-scsi0 fscsi0 escsi0 drive-virtio1 fvirtio1 evirtio1)],
    'query-named-block-nodes: throttle, format and file node of each disk');
is_deeply($nodes->{'drive-scsi0'}->{children}, [{ child => 'file', 'node-name' => 'fscsi0' }],
    'query-named-block-nodes: the throttle node\'s file child');
is_deeply([map { $nodes->{$_}->{drv} } qw(fscsi0 escsi0)], ['raw', 'file'], 'format over file node');

# blockdev-add as Blockdev::attach sends it for a fleecing image
my $cache = { direct => JSON::PP::true, 'no-flush' => JSON::PP::false };
my $fleecing = {
    driver => 'raw',
    'node-name' => 'drive-scsi0-fleecing',
    size => 4 * 1024 * 1024,
    cache => $cache,
    discard => 'unmap',
    'detect-zeroes' => 'unmap',
    'read-only' => JSON::PP::false,
    file => {
        driver => 'file', filename => $fleece, 'node-name' => 'scsi0-fleecing-file', aio => 'io_uring',
        cache => $cache, discard => 'unmap', 'detect-zeroes' => 'unmap', 'read-only' => JSON::PP::false,
    },
};
is_deeply($qmp->('blockdev-add', $fleecing), {}, 'blockdev-add: fleecing node with its size');
$nodes = nodes_by_name($qmp);
is($nodes->{'drive-scsi0-fleecing'}->{image}->{'virtual-size'}, 4 * 1024 * 1024, 'the size option wins over the file');
is($nodes->{'scsi0-fleecing-file'}->{image}->{'virtual-size'}, 4 * 1024 * 1024 + 4096, 'the file node has the file size');

# QEMU's refusals
my %bad = (
    'Duplicate nodes with node-name=\'scsi0-fleecing-file\'' => $fleecing,
    "Invalid node-name: '1bad'" => { %$fleecing, 'node-name' => '1bad', file => 'escsi0' },
    'Node name too long' => { %$fleecing, 'node-name' => 'x' x 32, file => { %{ $fleecing->{file} }, 'node-name' => 'y' } },
    "'node-name' must be specified for the root node" => { driver => 'file', filename => $fleece },
    "Could not open '$dir/missing.raw': No such file or directory" =>
        { driver => 'file', filename => "$dir/missing.raw", 'node-name' => 'missing' },
    "The sum of offset (0) and size (8388608) has to be smaller or equal to the  actual size of the containing file"
        . " (4198400)" => { driver => 'raw', 'node-name' => 'big', size => 8 * 1024 * 1024,
            file => { driver => 'file', filename => $fleece } },
    'Specified size is not multiple of 512' => { driver => 'raw', 'node-name' => 'odd', size => 1000,
        file => { driver => 'file', filename => $fleece } },
    "Cannot find device='nosuch' nor node-name='nosuch'" => { driver => 'raw', 'node-name' => 'ref', file => 'nosuch' },
    "Parameter 'driver' does not accept value 'vvfat'" => { driver => 'vvfat', 'node-name' => 'v' },
    "Parameter 'size' is unexpected" => { driver => 'qcow2', 'node-name' => 'q', size => 512, file => 'escsi0' },
    "Invalid parameter type for 'read-only', expected: boolean" =>
        { driver => 'file', filename => $fleece, 'node-name' => 'ro', 'read-only' => 'yes' },
);
for my $text (sort keys %bad) {
    is(error_of(sub { $qmp->('blockdev-add', $bad{$text}) }), "$text\n", "blockdev-add refused: $text");
}
is_deeply([sort keys nodes_by_name($qmp)->%*], [sort qw(drive-scsi0 fscsi0 escsi0 drive-virtio1 fvirtio1 evirtio1
    drive-scsi0-fleecing scsi0-fleecing-file)], 'refused adds leave no node');

# a backup by node name with the fleecing node: pve-qemu 10 reads below the throttle node
open(my $out, '>', "$dir/backup.vma") or die;
my $config = "$dir/qemu-server.conf";
open(my $config_fh, '>', $config) or die;
print $config_fh "name: blockdev-vm\n";
close($config_fh);
my $replies = PVE::VZDump::QemuServer::Engine::qmp_batch(
    "$dir/blockdev.qmp", 100,
    [['getfd', { fdname => 'backup' }],
        ['backup', { 'backup-file' => '/dev/fdname/backup', devlist => 'drive-scsi0', 'config-file' => $config,
            fleecing => JSON::PP::true }]],
    fileno($out), 10,
);
close($out);
ok($replies->[1]->{UUID}, 'backup with fleecing by node names started');
my $status;
for (1 .. 200) { $status = $qmp->('query-backup'); last if $status->{status} ne 'active'; usleep(50_000) }
is($status->{status}, 'done', 'backup done');
my $target = "$dir/extract";
is(system("'$vma' extract '$dir/backup.vma' '$target' >/dev/null 2>&1"), 0, 'archive extracts');
is(system('cmp', '-s', "$target/disk-drive-scsi0.raw", $disk0), 0, 'the device drive-scsi0 holds the disk');
is(error_of(sub { $qmp->('backup', { 'backup-file' => "$dir/b2.vma", devlist => 'drive-virtio1',
    fleecing => JSON::PP::true }) }), "Device 'drive-virtio1-fleecing' not found\n", 'fleecing node missing: refused');

# blockdev-del as Blockdev::detach sends it
my %del_bad = (
    'drive-scsi0' => 'Node drive-scsi0 is in use',
    'fscsi0' => 'Node fscsi0 is not owned by the monitor',
    'scsi0-fleecing-file' => 'Node scsi0-fleecing-file is not owned by the monitor',
    'nosuch' => "Failed to find node with node-name='nosuch'",
);
for my $name (sort keys %del_bad) {
    is(error_of(sub { $qmp->('blockdev-del', 'node-name' => $name) }), "$del_bad{$name}\n",
        "blockdev-del refused: $del_bad{$name}");
}
is_deeply($qmp->('blockdev-del', 'node-name' => 'drive-scsi0-fleecing'), {}, 'blockdev-del of the fleecing node');
is(error_of(sub { $qmp->('blockdev-del', 'node-name' => 'scsi0-fleecing-file') }),
    "Failed to find node with node-name='scsi0-fleecing-file'\n", 'its implicit file child went with it');

# a node another node uses by reference stays until that one is gone
$qmp->('blockdev-add', driver => 'file', filename => $fleece, 'node-name' => 'shared-file');
$qmp->('blockdev-add', driver => 'raw', 'node-name' => 'user', file => 'shared-file');
is(error_of(sub { $qmp->('blockdev-del', 'node-name' => 'shared-file') }), "Block device shared-file is in use\n",
    'blockdev-del refused: a node in use by another');
$qmp->('blockdev-del', 'node-name' => 'user');
ok(nodes_by_name($qmp)->{'shared-file'}, 'a monitor-owned child outlives its user');
is_deeply($qmp->('blockdev-del', 'node-name' => 'shared-file'), {}, 'and is deleted on its own');

my $machines = $qmp->('query-machines');
is_deeply([map { $_->{name} } grep { $_->{'is-current'} } @$machines], ['pc-i440fx-10.0'], 'query-machines: current machine');

# PVE 8's drives (BlockBackend names): a node may not take a drive's name
my $legacy = start_sim('drive', '--drive', "drive-scsi0=$disk0");
is(error_of(sub { $legacy->('blockdev-add', driver => 'file', filename => $fleece, 'node-name' => 'drive-scsi0') }),
    "node-name=drive-scsi0 is conflicting with a device id\n", 'blockdev-add refused: a drive\'s name');
is_deeply([map { $_->{device} } $legacy->('query-block')->@*], ['drive-scsi0'], 'PVE 8 drives keep their names');

done_testing();

END {
    kill('TERM', @sims);
    waitpid($_, 0) for @sims;
}
