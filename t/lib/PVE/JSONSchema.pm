package PVE::JSONSchema;

use strict;
use warnings;

sub format_size {
    my ($size) = @_;

    my $kb = int($size / 1024);
    return $size if $kb * 1024 != $size;
    my $mb = int($kb / 1024);
    return "${kb}K" if $mb * 1024 != $kb;
    my $gb = int($mb / 1024);
    return "${mb}M" if $gb * 1024 != $mb;
    my $tb = int($gb / 1024);
    return "${gb}G" if $tb * 1024 != $gb;
    return "${tb}T";
}

# "32G" -> bytes, as the 'disk-size' format parses it
sub parse_size {
    my ($value) = @_;

    return undef if $value !~ m/^(\d+(?:\.\d+)?)([KMGT])?$/;
    my ($size, $unit) = ($1, $2);
    my $factor = { K => 1024, M => 1024**2, G => 1024**3, T => 1024**4 };
    $size *= $factor->{$unit} if $unit;
    return int($size);
}

1;
