#!/usr/bin/perl
# vma on block devices: loop devices over sparse files stand in for the LVM,
# ZFS or Ceph volumes Proxmox backs up from and restores onto. create reads a
# device (zero blocks detected, sizes not a multiple of 64 KiB); extract -r
# writes devices named by a map as qmrestore writes it (0: leaves old bytes
# where the archive has zeros, 1: zeroes them), accepts a target up to 4 MiB
# larger and refuses others, honours throttling and cache options. As root
# only; every loop device is detached again on every path (END block).

use strict;
use warnings;

use File::Temp qw(tempdir);
use POSIX ();
use Test::More;

use lib 't/lib';
use CapturedRun qw(run_captured);

my $vma = 'build/vma';
plan skip_all => "$vma not built" if !-x $vma;
plan skip_all => 'attaching loop devices needs root' if $> != 0;
plan skip_all => 'losetup not installed'
    if system('losetup --version >/dev/null 2>&1') != 0;

my $dir = tempdir(CLEANUP => 1);

my $KiB = 1024;
my $MiB = 1024 * $KiB;
my $FILL = "\xa5"; # what a target held before the restore

my %attached; # loop device => backing file

my sub detach {
    my ($dev) = @_;
    delete $attached{$dev};
    system('losetup', '-d', $dev) == 0 or diag("losetup -d $dev failed");
}

# runs before File::Temp removes the backing files; keeps the exit status
END {
    local $?;
    detach($_) for sort keys %attached;
}
# a signal must end the test through END too
$SIG{$_} = sub { die "killed by SIG$_[0]\n" } for qw(INT TERM HUP);

# attaches a loop device over file; returns its path, or undef and the error
my sub try_attach {
    my ($file, $options) = @_;
    $options //= '';
    my $dev = `losetup $options --find --show '$file' 2>&1`;
    chomp($dev);
    return (undef, $dev) if $? != 0 || $dev !~ m|^/dev/loop\d+$|;
    $attached{$dev} = $file;
    return ($dev);
}

my sub attach {
    my ($file, $options) = @_;
    my ($dev, $err) = try_attach($file, $options);
    die "losetup --find --show $file failed: $err\n" if !$dev;
    return $dev;
}

{
    system('truncate', '-s', $MiB, "$dir/probe") == 0 or die "truncate failed\n";
    my ($dev, $err) = try_attach("$dir/probe");
    plan skip_all => "loop devices unavailable: $err" if !$dev;
    detach($dev);
}

my sub exited_with_1 {
    my ($status) = @_;
    return ($status & 127) == 0 && ($status >> 8) == 1;
}

# Which 4 KiB blocks of 64 KiB cluster c hold data: whole zero clusters,
# full ones, mixed ones and one-block ones; the last cluster is full so that
# a partial tail carries data.
my sub data_mask {
    my ($seed, $c, $last) = @_;
    return 0xffff if $c == $last;
    my $kind = ($c * 7 + $seed) % 5;
    return 0 if $kind == 0;
    return 0x5a3c if $kind == 2;
    return 1 << ($c % 16) if $kind == 3;
    return 0xffff;
}

# A sparse image whose data blocks differ from each other (a block written to
# the wrong place cannot go unnoticed). Returns the number of data bytes.
my sub make_image {
    my ($path, $size, $seed) = @_;
    open(my $fh, '>', $path) or die "open $path: $!\n";
    binmode($fh);
    truncate($fh, $size) or die "truncate $path: $!\n";
    my $last = int(($size - 1) / (64 * $KiB));
    my $data = 0;
    for my $c (0 .. $last) {
	my $mask = data_mask($seed, $c, $last);
	for my $j (0 .. 15) {
	    next if !($mask & (1 << $j));
	    my $offset = $c * 64 * $KiB + $j * 4 * $KiB;
	    last if $offset >= $size;
	    my $len = $size - $offset < 4 * $KiB ? $size - $offset : 4 * $KiB;
	    my $text = "seed $seed block at $offset\n";
	    my $block = substr($text x (int($len / length($text)) + 1), 0, $len);
	    sysseek($fh, $offset, 0) or die "seek $path: $!\n";
	    syswrite($fh, $block) == $len or die "write $path: $!\n";
	    $data += $len;
	}
    }
    close($fh) or die "close $path: $!\n";
    return $data;
}

# A file of size bytes, all $FILL: the old content of a target volume.
my sub make_filled {
    my ($path, $size) = @_;
    open(my $fh, '>', $path) or die "open $path: $!\n";
    binmode($fh);
    my $chunk = $FILL x $MiB;
    for (my $left = $size; $left > 0; $left -= $MiB) {
	print $fh ($left < $MiB ? substr($chunk, 0, $left) : $chunk);
    }
    close($fh) or die "close $path: $!\n";
}

# Whether len bytes of path from offset all still hold $FILL.
my sub untouched {
    my ($path, $offset, $len) = @_;
    open(my $fh, '<', $path) or die "open $path: $!\n";
    binmode($fh);
    seek($fh, $offset, 0) or die "seek $path: $!\n";
    while ($len > 0) {
	my $want = $len < $MiB ? $len : $MiB;
	read($fh, my $buf, $want) == $want or return 0;
	return 0 if $buf ne $FILL x $want;
	$len -= $want;
    }
    return 1;
}

my sub same_bytes {
    my ($a, $b, $len) = @_;
    my ($status) = run_captured('cmp', '-n', $len, $a, $b);
    return $status == 0;
}

# Compares target with source over size bytes, 4 KiB block by block. Returns
# how many data blocks match, how many zero blocks of the source read as zero
# and as $FILL on the target, and how many blocks are anything else.
my sub block_report {
    my ($target, $source, $size) = @_;
    open(my $tfh, '<', $target) or die "open $target: $!\n";
    open(my $sfh, '<', $source) or die "open $source: $!\n";
    binmode($_) for $tfh, $sfh;
    my %count = (data => 0, zero => 0, kept => 0, wrong => 0);
    for (my $offset = 0; $offset < $size; $offset += 4 * $KiB) {
	my $len = $size - $offset < 4 * $KiB ? $size - $offset : 4 * $KiB;
	read($tfh, my $t, $len) == $len or die "short read on $target\n";
	read($sfh, my $s, $len) == $len or die "short read on $source\n";
	if ($s ne "\0" x $len) {
	    $count{$t eq $s ? 'data' : 'wrong'}++;
	} elsif ($t eq $s) {
	    $count{zero}++;
	} else {
	    $count{$t eq $FILL x $len ? 'kept' : 'wrong'}++;
	}
    }
    return \%count;
}

my sub write_map {
    my ($path, @lines) = @_;
    open(my $fh, '>', $path) or die "open $path: $!\n";
    print $fh "$_\n" for @lines, 'done';
    close($fh) or die "close $path: $!\n";
}

# --- vma create from a block device ---------------------------------------

my $disk_size = 16 * $MiB;
my $disk_data = make_image("$dir/disk.img", $disk_size, 1);
# a multiple of 512 (as every block device is) but not of 4 or 64 KiB
my $odd_size = 8 * $MiB + 3 * 4 * $KiB + 1536;
my $odd_data = make_image("$dir/odd.img", $odd_size, 2);

for my $case ([disk => $disk_size, $disk_data], [odd => $odd_size, $odd_data]) {
    my ($name, $size, $data) = @$case;
    my $dev = attach("$dir/$name.img");
    my $archive = "$dir/from-$name.vma";
    my ($status, $out, $err) = run_captured($vma, 'create', '-v', $archive, "drive-scsi0=$dev");
    is($status, 0, "create from a $name loop device") or diag($err);
    my $zeros = $size - $data;
    like($err, qr/^image drive-scsi0: size=$size zeros=$zeros saved=$data$/m,
	"$name: zero blocks of the device detected");
    # the header and extent headers are all an archive adds to the data
    my $overhead = (-s $archive) - $data;
    ok($overhead > 0 && $overhead < 64 * $KiB, "$name: zero blocks not stored")
	or diag("archive overhead $overhead bytes");
    ($status, $out) = run_captured($vma, 'list', $archive);
    like($out, qr/^DEV: dev_id=1 size: $size devname: drive-scsi0$/m,
	"$name: the device size is recorded");
    ($status, undef, $err) = run_captured($vma, 'extract', $archive, "$dir/x-$name");
    is($status, 0, "$name: extract") or diag($err);
    my $restored = "$dir/x-$name/disk-drive-scsi0.raw";
    is(-s $restored, $size, "$name: restored size is the device size");
    ok(same_bytes($restored, $dev, $size), "$name: restored disk equals the device");
    detach($dev);
}

# --- vma extract -r MAP onto block devices --------------------------------

# two devices with the same disk: one restored with 0: (sparse), one with 1:
my $archive = "$dir/two.vma";
my ($status, $out, $err) = run_captured($vma, 'create', $archive, "drive-scsi0=$dir/disk.img",
    "drive-scsi1=$dir/disk.img");
is($status, 0, 'create the archive to restore') or diag($err);

my $count = 0;

# loop devices over $FILL files of the given sizes
my sub fresh_targets {
    my (@sizes) = @_;
    my @devs;
    for my $size (@sizes) {
	$count++;
	make_filled("$dir/target$count.img", $size);
	push @devs, attach("$dir/target$count.img");
    }
    return @devs;
}

{
    # the second target is 1 MiB larger: accepted, and its end left alone
    my ($sparse, $zeroed) = fresh_targets($disk_size, $disk_size + $MiB);
    write_map("$dir/map", "format=raw:0:drive-scsi0=$sparse", "format=raw:1:drive-scsi1=$zeroed");
    ($status, $out, $err) = run_captured($vma, 'extract', '-r', "$dir/map", $archive, "$dir/xr");
    is($status, 0, 'extract -r onto loop devices') or diag($err);
    like($out, qr/^DEV: dev_id=1 size: $disk_size devname: drive-scsi0\n/m,
	'extract -r lists the archive first');
    unlike($out, qr/^DEVINFO/m, 'no image files are created with a map');
    ok(!glob("$dir/xr/*disk*"), 'nothing but configs in the target directory');

    ok(same_bytes($zeroed, "$dir/disk.img", $disk_size), '1: the device holds the disk');
    my $report = block_report($zeroed, "$dir/disk.img", $disk_size);
    ok($report->{zero} > 0 && !$report->{kept} && !$report->{wrong},
	'1: the zero blocks of the disk were written as zeros')
	or diag(explain($report));
    ok(untouched($zeroed, $disk_size, $MiB), '1: the device past the disk is untouched');

    $report = block_report($sparse, "$dir/disk.img", $disk_size);
    ok($report->{data} > 0 && !$report->{wrong}, '0: every data block restored')
	or diag(explain($report));
    ok($report->{kept} > 0 && !$report->{zero},
	'0: zero blocks of the archive keep the old bytes (not written)')
	or diag(explain($report));
    detach($_) for $sparse, $zeroed;
}

# --- target size tolerance -------------------------------------------------

my $odd_archive = "$dir/odd.vma";
($status, undef, $err) = run_captured($vma, 'create', $odd_archive, "drive-scsi0=$dir/odd.img");
is($status, 0, 'create the odd-sized archive') or diag($err);

for my $case (['exactly its size', 0, 1], ['4 MiB larger', 4 * $MiB, 1],
    ['4 MiB + 512 bytes larger', 4 * $MiB + 512, 0], ['512 bytes smaller', -512, 0],
    ['8 MiB smaller', -8 * $MiB, 0])
{
    my ($what, $excess, $accepted) = @$case;
    my $size = $odd_size + $excess;
    my ($dev) = fresh_targets($size);
    my $x = "$dir/size$count";
    write_map("$dir/map", "format=raw:1:drive-scsi0=$dev");
    ($status, $out, $err) = run_captured($vma, 'extract', '-r', "$dir/map", $odd_archive, $x);
    if ($accepted) {
	is($status, 0, "a target $what is accepted") or diag($err);
	ok(same_bytes($dev, "$dir/odd.img", $odd_size), "$what: the device holds the disk");
	ok(untouched($dev, $odd_size, $excess), "$what: nothing written past the disk");
    } else {
	ok(exited_with_1($status), "a target $what is refused with exit status 1")
	    or diag("status $status: $err");
	is($err, "vma: vma_reader_register_bs for stream drive-scsi0 failed - unexpected size $size != $odd_size\n",
	    "$what: the original message");
	ok(untouched($dev, 0, $size), "$what: the device is untouched");
	ok(!-e $x, "$what: no target directory left behind");
    }
    detach($dev);
}

# --- the map through a FIFO, as qmrestore hands it over ---------------------

{
    my ($dev) = fresh_targets($odd_size);
    my $fifo = "$dir/fifo";
    system('mkfifo', $fifo) == 0 or die "mkfifo failed\n";
    my $writer = fork() // die "fork failed: $!\n";
    if (!$writer) {
	# the child writes the map and must not run the END block
	$SIG{$_} = 'DEFAULT' for qw(INT TERM HUP);
	my $fh;
	my $ok = open($fh, '>', $fifo) && print($fh "format=raw:1:drive-scsi0=$dev\ndone\n")
	    && close($fh);
	POSIX::_exit($ok ? 0 : 1);
    }
    ($status, $out, $err) = run_captured($vma, 'extract', '-r', $fifo, $odd_archive, "$dir/xf");
    kill('TERM', $writer); # still blocked if vma never opened the FIFO
    waitpid($writer, 0);
    is($status, 0, 'extract -r reading the map from a FIFO') or diag($err);
    ok(same_bytes($dev, "$dir/odd.img", $odd_size), 'FIFO map: the device holds the disk');
    detach($dev);
}

# --- options on block device targets ----------------------------------------

{
    my @devs = fresh_targets($disk_size, $disk_size);
    # O_DIRECT writes, both devices in one throttling group at 256 MiB/s
    write_map("$dir/map",
	"throttling.bps=268435456:throttling.group=restore:cache=none:format=raw:1:drive-scsi0=$devs[0]",
	"throttling.group=restore:cache=none:format=raw:0:drive-scsi1=$devs[1]");
    ($status, $out, $err) = run_captured($vma, 'extract', '-r', "$dir/map", $archive, "$dir/xo");
    is($status, 0, 'throttling.bps, throttling.group and cache=none accepted') or diag($err);
    ok(same_bytes($devs[0], "$dir/disk.img", $disk_size), 'cache=none, 1: the device holds the disk');
    my $report = block_report($devs[1], "$dir/disk.img", $disk_size);
    ok($report->{data} > 0 && $report->{kept} > 0 && !$report->{zero} && !$report->{wrong},
	'cache=none, 0: data restored, zero blocks not written')
	or diag(explain($report));
    detach($_) for @devs;

    # a rate without a group, and cache=none without format (raw is probed)
    @devs = fresh_targets($disk_size, $disk_size);
    write_map("$dir/map", "throttling.bps=268435456:format=raw:1:drive-scsi0=$devs[0]",
	"cache=none:1:drive-scsi1=$devs[1]");
    ($status, $out, $err) = run_captured($vma, 'extract', '-r', "$dir/map", $archive, "$dir/xo2");
    is($status, 0, 'throttling.bps without a group, cache=none without format') or diag($err);
    ok(same_bytes($_, "$dir/disk.img", $disk_size), "$_ holds the disk") for @devs;

    write_map("$dir/map", "cache=bogus:format=raw:1:drive-scsi0=$devs[0]",
	"format=raw:1:drive-scsi1=$devs[1]");
    make_filled($devs[0], $disk_size);
    ($status, $out, $err) = run_captured($vma, 'extract', '-r', "$dir/map", $archive, "$dir/xo3");
    ok(exited_with_1($status), 'an invalid cache option fails with exit status 1');
    is($err, "vma: invalid cache option: bogus\n", 'and names the option');
    ok(untouched($devs[0], 0, $disk_size), 'the device is untouched');
    detach($_) for @devs;
}

# a read-only device is refused before anything is written
{
    make_filled("$dir/ro.img", $odd_size);
    my $dev = attach("$dir/ro.img", '--read-only');
    write_map("$dir/map", "format=raw:1:drive-scsi0=$dev");
    ($status, $out, $err) = run_captured($vma, 'extract', '-r', "$dir/map", $odd_archive, "$dir/xro");
    ok(exited_with_1($status), 'a read-only target device fails with exit status 1')
	or diag("status $status: $err");
    is($err, "vma: can't open file $dev - read-only block device\n", 'and names the device');
    ok(untouched($dev, 0, $odd_size), 'the read-only device is untouched');
    ok(!-e "$dir/xro", 'no target directory left behind');
    detach($dev);
}

# O_DIRECT on 4 KiB logical blocks: the odd disk's partial last block (1536
# bytes) cannot be written directly
SKIP: {
    my $size = int(($odd_size + 4095) / 4096) * 4096;
    make_filled("$dir/4kn.img", $size);
    my ($dev, $err) = try_attach("$dir/4kn.img", '--sector-size 4096');
    skip "no loop device with 4 KiB sectors: $err", 3 if !$dev;
    for my $cache (qw(none directsync)) {
	write_map("$dir/map", "cache=$cache:format=raw:1:drive-scsi0=$dev");
	($status, $out, $err) = run_captured($vma, 'extract', '-r', "$dir/map", $odd_archive, "$dir/x4kn-$cache");
	is($status, 0, "cache=$cache onto 4 KiB sectors, disk not a multiple of 4 KiB") or diag($err);
	ok(same_bytes($dev, "$dir/odd.img", $odd_size), "cache=$cache, 4 KiB sectors: the device holds the disk");
    }
    ok(untouched($dev, $odd_size, $size - $odd_size), '4 KiB sectors: nothing written past the disk');
    detach($dev);
}

done_testing();
