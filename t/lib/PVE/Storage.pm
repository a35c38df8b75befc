package PVE::Storage;

# Directory storages (type 'dir') and PBS entries, read from the node's
# storage.cfg in PVE's section format:
#
#   dir: local
#   	path /some/dir
#   	content images,backup

use strict;
use warnings;

use JSON;

use PVE::TestNode;
use PVE::Tools qw(run_command);

sub config {
    my $file = PVE::TestNode::etc_pve() . "/storage.cfg";
    my $raw = -f $file ? PVE::Tools::file_get_contents($file) : '';

    my $ids = {};
    my $current;
    for my $line (split(/\n/, $raw)) {
        next if $line =~ m/^\s*(?:#|$)/;
        if ($line =~ m/^(\S+):\s*(\S+)\s*$/) {
            $current = $ids->{$2} = { type => $1 };
        } elsif ($current && $line =~ m/^\s+(\S+)(?:\s+(.*?))?\s*$/) {
            $current->{$1} = $2 // 1;
        } else {
            die "storage.cfg: unable to parse line '$line'\n";
        }
    }
    return { ids => $ids };
}

sub storage_config {
    my ($cfg, $storeid, $noerr) = @_;

    die "no storage ID specified\n" if !$storeid;
    my $scfg = $cfg->{ids}->{$storeid};
    die "storage '$storeid' does not exist\n" if !$noerr && !$scfg;
    return $scfg;
}

sub parse_volume_id {
    my ($volid, $noerr) = @_;

    if ($volid =~ m/^([a-z][a-z0-9\-\_\.]*[a-z0-9]):(.+)$/i) {
        return wantarray ? ($1, $2) : $1;
    }
    return if $noerr;
    die "unable to parse volume ID '$volid'\n";
}

my sub parse_volname {
    my ($volname) = @_;

    if ($volname =~ m!^(\d+)/((?:base|vm)-\d+-\S+)$!) {
        my ($vmid, $name) = ($1, $2);
        my $format = $name =~ m/\.(raw|qcow2|vmdk)$/ ? $1 : 'raw';
        return ($vmid, $name, $format);
    }
    die "unable to parse directory volume name '$volname'\n";
}

sub path {
    my ($cfg, $volid) = @_;

    my ($storeid, $volname) = parse_volume_id($volid);
    my $scfg = storage_config($cfg, $storeid);
    die "storage '$storeid' has no path\n" if !$scfg->{path};
    my ($vmid, $name) = parse_volname($volname);
    my $path = "$scfg->{path}/images/$vmid/$name";
    return wantarray ? ($path, $vmid, 'images') : $path;
}

sub activate_volumes {
    my ($cfg, $vollist) = @_;

    for my $volid (@$vollist) {
        my $path = path($cfg, $volid);
        die "volume '$volid' does not exist\n" if !-e $path;
    }
}

sub volume_size_info {
    my ($cfg, $volid, $timeout) = @_;

    my ($storeid) = parse_volume_id($volid, 1);
    my $path = $storeid ? path($cfg, $volid) : $volid;
    die "volume '$volid' does not exist\n" if !-e $path;

    my $json = '';
    run_command(
        ['qemu-img', 'info', '--output=json', $path],
        outfunc => sub { $json .= "$_[0]\n" },
        errfunc => sub { },
    );
    my $info = decode_json($json);
    my ($size, $format) = ($info->{'virtual-size'}, $info->{format});
    return wantarray ? ($size, $format, $info->{'actual-size'}, $info->{'backing-filename'}) : $size;
}

sub storage_default_format {
    my ($cfg, $storeid) = @_;

    my $scfg = storage_config($cfg, $storeid);
    my $valid = $scfg->{type} eq 'dir' ? ['raw', 'qcow2', 'vmdk'] : ['raw'];
    return ($scfg->{format} // 'raw', $valid);
}

# libpve-storage-perl 9: the hinted format if the storage supports it, else
# its default format.
if (PVE::TestNode::release() >= 9) {
    *resolve_format_hint = sub {
        my ($cfg, $storeid, $format_hint) = @_;

        my ($default_format, $valid_formats) = storage_default_format($cfg, $storeid);
        return $format_hint if $format_hint && grep { $_ eq $format_hint } $valid_formats->@*;
        return $default_format;
    };
}

sub vdisk_alloc {
    my ($cfg, $storeid, $vmid, $fmt, $name, $size_kib) = @_;

    my $scfg = storage_config($cfg, $storeid);
    die "storage '$storeid' has no path\n" if !$scfg->{path};
    my $dir = "$scfg->{path}/images/$vmid";
    -d $dir or mkdir($dir) or die "unable to create '$dir' - $!\n";
    my $path = "$dir/$name";
    die "volume '$storeid:$vmid/$name' already exists\n" if -e $path;

    run_command(['qemu-img', 'create', '-f', $fmt, $path, "${size_kib}K"], outfunc => sub { });
    return "$storeid:$vmid/$name";
}

sub vdisk_free {
    my ($cfg, $volid) = @_;

    my $path = path($cfg, $volid);
    unlink($path) or die "unable to free '$volid' - $!\n";
}

1;
