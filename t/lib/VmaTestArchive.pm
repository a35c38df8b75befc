package VmaTestArchive;

# Writes VMA archives cluster by cluster in any order the format allows,
# independently of the engine's writer, so tests can make the archives
# real backups produce (devices interleaved, clusters out of order, sparse
# masks, vmstate, a partial last block) and damaged ones. The layout is
# Proxmox's (src/vma/format.h documents it).

use strict;
use warnings;

use Digest::MD5 qw(md5);
use Exporter qw(import);

our @EXPORT_OK = qw(write_vma clusters_of);

my $uuid = pack('H32', '0123456789abcdef0123456789abcdef');

my sub header {
    my ($devices) = @_;
    my $blobs = "\0"; # pointer 0 means none
    my @name_ptrs;
    for my $dev (@$devices) {
	push @name_ptrs, length($blobs);
	my $name = "$dev->{name}\0";
	$blobs .= pack('v', length($name)) . $name;
    }
    my $size = 12288 + length($blobs);
    $size += 512 - $size % 512 if $size % 512;
    my $h = "\0" x $size;
    substr($h, 0, 4) = "VMA\0";
    substr($h, 4, 4) = pack('N', 1);
    substr($h, 8, 16) = $uuid;
    substr($h, 24, 8) = pack('Q>', 1700000000);
    substr($h, 48, 12) = pack('NNN', 12288, length($blobs), $size);
    for my $i (0 .. $#$devices) {
	my $entry = 4096 + ($i + 1) * 32;
	substr($h, $entry, 4) = pack('N', $name_ptrs[$i]);
	substr($h, $entry + 8, 8) = pack('Q>', $devices->[$i]{size});
    }
    substr($h, 12288, length($blobs)) = $blobs;
    substr($h, 32, 16) = md5($h);
    return $h;
}

# One extent of up to 59 slots [$dev_id, $cluster, $mask, $blocks].
my sub extent {
    my (@slots) = @_;
    my $data = join('', map { $_->[3] } @slots);
    my $h = "\0" x 512;
    substr($h, 0, 4) = 'VMAE';
    substr($h, 6, 2) = pack('n', length($data) / 4096);
    substr($h, 8, 16) = $uuid;
    for my $i (0 .. $#slots) {
	my ($dev, $cluster, $mask) = @{$slots[$i]};
	substr($h, 40 + 8 * $i, 8) = pack('Q>', ($mask << 48) | ($dev << 32) | $cluster);
    }
    substr($h, 24, 16) = md5($h);
    return $h . $data;
}

# The slots of a device image as the writer stores them: per 64 KiB cluster
# the mask of its non-zero 4 KiB blocks and those blocks (a partial last
# block padded with zeros).
sub clusters_of {
    my ($dev_id, $image) = @_;
    my @slots;
    for (my $c = 0; $c * 65536 < length($image); $c++) {
	my ($mask, $blocks) = (0, '');
	for my $b (0 .. 15) {
	    my $at = $c * 65536 + $b * 4096;
	    last if $at >= length($image);
	    my $block = substr($image, $at, 4096);
	    next if $block !~ /[^\0]/;
	    $mask |= 1 << $b;
	    $blocks .= $block . "\0" x (4096 - length($block));
	}
	push @slots, [$dev_id, $c, $mask, $blocks];
    }
    return @slots;
}

# write_vma($path, [{name, size}, ...], [$slot, ...], $slots_per_extent):
# devices get ids 1, 2, ... in list order; the slots go out in the order
# given.
sub write_vma {
    my ($path, $devices, $slots, $per_extent) = @_;
    $per_extent //= 58;
    open(my $fh, '>', $path) or die "create $path: $!\n";
    binmode($fh);
    print $fh header($devices);
    for (my $i = 0; $i < @$slots; $i += $per_extent) {
	my $last = $i + $per_extent - 1;
	$last = $#$slots if $last > $#$slots;
	print $fh extent(@$slots[$i .. $last]);
    }
    close($fh) or die "write $path: $!\n";
}

1;
