package PVE::QemuServer::Drive;

use strict;
use warnings;

use PVE::JSONSchema;
use PVE::Storage;

use base qw(Exporter);
our @EXPORT_OK = qw(checked_volume_format parse_drive drive_is_cdrom valid_drive_names);

sub valid_drive_names {
    return (
        (map { "ide$_" } (0 .. 3)),
        (map { "scsi$_" } (0 .. 30)),
        (map { "virtio$_" } (0 .. 15)),
        (map { "sata$_" } (0 .. 5)),
        'efidisk0',
        'tpmstate0',
    );
}

# "local:100/vm-100-disk-0.raw,size=32G,backup=0" -> { file, size (bytes), backup, ... }
sub parse_drive {
    my ($key, $value) = @_;

    my $drive = { interface => $key =~ s/\d+$//r, index => $key =~ s/^\D+//r };
    for my $part (split(/,/, $value)) {
        if ($part =~ m/^([a-z\-]+)=(.*)$/) {
            $drive->{$1} = $2;
        } elsif (!defined($drive->{file})) {
            $drive->{file} = $part;
        } else {
            return undef;
        }
    }
    return undef if !defined($drive->{file});
    if (defined($drive->{size})) {
        $drive->{size} = PVE::JSONSchema::parse_size($drive->{size}) // return undef;
    }
    return $drive;
}

# "scsi0" -> ('scsi', 0)
sub parse_drive_interface {
    my ($key) = @_;

    die "unable to parse drive interface key '$key'\n" if $key !~ m/^([a-z]+)(\d+)$/;
    return ($1, $2);
}

sub drive_is_cdrom {
    my ($drive) = @_;

    return $drive && $drive->{media} && ($drive->{media} eq 'cdrom');
}

sub checked_volume_format {
    my ($storecfg, $volid) = @_;

    my (undef, $format) = PVE::Storage::volume_size_info($storecfg, $volid, 5);
    my ($storeid, $volname) = PVE::Storage::parse_volume_id($volid);
    my $expected = $volname =~ m/\.(qcow2|vmdk)$/ ? $1 : 'raw';
    die "'$volid' - format '$format' does not match the volume name ('$expected')\n"
        if $format ne $expected;
    return $format;
}

1;
