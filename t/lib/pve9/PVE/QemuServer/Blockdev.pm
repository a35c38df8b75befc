package PVE::QemuServer::Blockdev;

# qemu-server 9's blockdev helpers, as far as vzdump's plugin (and
# QemuConfig's fleecing cleanup) uses them: get_block_info, attach (fleecing
# images and the TPM backup node), detach, detach_tpm_backup_node and
# detach_fleecing_block_nodes. They send the QMP qemu-server 9.2.6 sends,
# with its node names (drive-<id>-fleecing over <id>-fleecing-file,
# drive-tpmstate0-backup over tpmstate0-backup-file) and the blockdev options
# it generates for a volume of a 'dir' storage. Attaching a drive's own top
# node (throttle group, snapshots, NBD, QEMU storage daemon) is not part of
# the test node and dies saying so.

use strict;
use warnings;

use JSON;

use PVE::Storage;

use PVE::QemuServer::Drive qw(drive_is_cdrom);
use PVE::QemuServer::Helpers;
use PVE::QemuServer::Machine;
use PVE::QemuServer::Monitor qw(mon_cmd qmp_cmd vm_qmp_peer);

my sub tpm_backup_node_name {
    my ($type, $drive_id) = @_;

    return "drive-$drive_id-backup" if $type eq 'fmt';
    return "$drive_id-backup-file" if $type eq 'file';
    die "unknown node type '$type' for TPM backup node";
}

my sub fleecing_node_name {
    my ($type, $drive_id, $options) = @_;

    $drive_id .= '-backup' if $options->{'tpm-backup'};
    return "drive-$drive_id-fleecing" if $type eq 'fmt';
    return "$drive_id-fleecing-file" if $type eq 'file';
    die "unknown node type '$type' for fleecing";
}

sub qdev_id_to_drive_id {
    my ($qdev_id) = @_;

    if ($qdev_id =~ m|^/machine/peripheral/(virtio(\d+))/virtio-backend$|) {
        return $1;
    } elsif ($qdev_id =~ m{^/machine/(?:system|virt)\.flash0$}) {
        return 'pflash0';
    } elsif ($qdev_id =~ m{^/machine/(?:system|virt)\.flash1$}) {
        return 'efidisk0';
    }
    return $qdev_id; # for SCSI/SATA/IDE it's the same
}

sub get_block_info {
    my ($vmid) = @_;

    my $block_info = {};
    for my $info (mon_cmd($vmid, "query-block")->@*) {
        my $qdev_id = $info->{qdev} or next;
        $block_info->{ qdev_id_to_drive_id($qdev_id) } = $info;
    }
    return $block_info;
}

sub get_node_name {
    my ($type, $drive_id, $volid, $options) = @_;

    return fleecing_node_name($type, $drive_id, $options) if $options->{fleecing};
    return tpm_backup_node_name($type, $drive_id) if $options->{'tpm-backup'};
    die "test node: only fleecing and TPM backup nodes can be attached ($drive_id)\n";
}

sub parse_top_node_name {
    my ($node_name) = @_;

    if ($node_name =~ m/^drive-(.+)$/) {
        my $drive_id = $1;
        return $drive_id if grep { $_ eq $drive_id } PVE::QemuServer::Drive::valid_drive_names();
    }
    return;
}

# Drive.pm's option helpers for a disk (not a CD-ROM) of a 'dir' storage.
my sub detect_zeroes_option {
    my ($drive) = @_;

    return 'off' if defined($drive->{detect_zeroes}) && !$drive->{detect_zeroes};
    return $drive->{discard} eq 'on' ? 'unmap' : 'on' if $drive->{discard};
    return 'on';
}

my sub uses_cache_direct {
    my ($drive, $scfg) = @_;

    if (my $cache = $drive->{cache}) {
        return $cache eq 'none' || $cache eq 'directsync' ? 1 : 0;
    }
    return !drive_is_cdrom($drive) && !($scfg && $scfg->{type} eq 'btrfs' && !$scfg->{nocow}) ? 1 : 0;
}

my sub add_common_options {
    my ($blockdev, $drive, $options) = @_;

    if (!drive_is_cdrom($drive)) {
        $blockdev->{discard} = $drive->{discard} && $drive->{discard} eq 'on' ? 'unmap' : 'ignore';
        $blockdev->{'detect-zeroes'} = detect_zeroes_option($drive);
    }
    my $read_only = $drive->{ro} || drive_is_cdrom($drive) || $options->{'read-only'};
    $blockdev->{'read-only'} = $read_only ? JSON::true : JSON::false;
}

my sub generate_file_blockdev {
    my ($storecfg, $drive, $options) = @_;

    my $drive_id = "$drive->{interface}$drive->{index}";
    my ($storeid) = PVE::Storage::parse_volume_id($drive->{file}, 1);
    die "test node: only volumes of a storage can be attached ($drive->{file})\n" if !$storeid;
    my $scfg = PVE::Storage::storage_config($storecfg, $storeid);

    # what PVE::Storage::qemu_blockdev_options gives for a file-based volume
    my $path = PVE::Storage::path($storecfg, $drive->{file});
    my $blockdev = { driver => 'file', filename => "$path" };
    my $direct = uses_cache_direct($drive, $scfg);
    $blockdev->{cache} = {
        direct => $direct ? JSON::true : JSON::false,
        'no-flush' => $drive->{cache} && $drive->{cache} eq 'unsafe' ? JSON::true : JSON::false,
    };
    $blockdev->{aio} = $drive->{aio} // 'io_uring';
    $blockdev->{'node-name'} = get_node_name('file', $drive_id, $drive->{file}, $options);
    add_common_options($blockdev, $drive, $options);

    return $blockdev;
}

my sub generate_format_blockdev {
    my ($storecfg, $drive, $child, $options) = @_;

    my $volid = $drive->{file};
    my $drive_id = "$drive->{interface}$drive->{index}";
    my $format = PVE::QemuServer::Drive::checked_volume_format($storecfg, $volid);
    if ($drive->{format} && $drive->{format} ne $format) {
        die "drive '$drive->{interface}$drive->{index}' - volume '$volid'"
            . " - 'format=$drive->{format}' option different from storage format '$format'\n";
    }

    my $blockdev = {
        'node-name' => get_node_name('fmt', $drive_id, $volid, $options),
        driver => $format,
        file => $child,
        cache => $child->{cache},
    };
    add_common_options($blockdev, $drive, $options);

    if (defined($options->{size})) {
        die "blockdev: 'size' is only supported for 'raw' format" if $format ne 'raw';
        $blockdev->{size} = int($options->{size});
    }
    return $blockdev;
}

sub attach {
    my ($storecfg, $id, $drive, $options) = @_;

    die "test node: no QEMU storage daemon\n" if $options->{qsd};
    my $qmp_peer = vm_qmp_peer($id);
    PVE::QemuServer::Machine::get_current_qemu_machine($id);

    my $child = generate_file_blockdev($storecfg, $drive, $options);
    my $blockdev = generate_format_blockdev($storecfg, $drive, $child, $options);

    eval { qmp_cmd($qmp_peer, 'blockdev-add', $blockdev->%*) };
    if (my $err = $@) {
        die "adding blockdev '$blockdev->{'node-name'}' failed : $err\n";
    }
    return ($blockdev->{'node-name'}, $blockdev->{'read-only'});
}

sub detach {
    my ($qmp_peer, $node_name, $opts) = @_;

    die "Blockdev::detach - no node name\n" if !$node_name;
    die "test node: detaching a drive's top node (throttle group) is not supported\n"
        if parse_top_node_name($node_name);

    my $block_info = qmp_cmd($qmp_peer, "query-named-block-nodes");
    $block_info = { map { $_->{'node-name'} => $_ } $block_info->@* };

    my @queue = ($node_name);
    while (defined(my $node_name = shift @queue)) {
        next if !$block_info->{$node_name}; # already gone

        my $res = qmp_cmd($qmp_peer, 'blockdev-del', 'node-name' => "$node_name", noerr => 1);
        if (my $err = $res->{error}) {
            next if $err =~ m/Failed to find node with node-name/; # already gone
            die "deleting blockdev '$node_name' failed : $err\n";
        }

        # QEMU removes implicitly added children itself; a 'file' child that was added on its
        # own stays and is removed here
        my $children = { map { $_->{child} => $_ } $block_info->{$node_name}->{children}->@* };
        push @queue, $children->{file}->{'node-name'} if $children->{file};
        push @queue, $children->{backing}->{'node-name'}
            if $opts->{'follow-backing'} && $children->{backing};
    }
    return;
}

# QemuConfig::cleanup_fleecing_images' way to drop fleecing nodes a
# previous backup left attached
sub detach_fleecing_block_nodes {
    my ($vmid, $log_func) = @_;

    for my $info (mon_cmd($vmid, "query-named-block-nodes")->@*) {
        my $node_name = $info->{'node-name'};
        next if $node_name !~ m/-fleecing$/;

        $log_func->('info', "detaching (old) fleecing image '$node_name'");
        eval { detach(vm_qmp_peer($vmid), $node_name) };
        $log_func->('warn', "error detaching (old) fleecing image '$node_name' - $@") if $@;
    }
}

sub detach_tpm_backup_node {
    my ($vmid) = @_;

    detach(vm_qmp_peer($vmid), "drive-tpmstate0-backup");
}

1;
