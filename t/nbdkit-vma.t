#!/usr/bin/perl
# The nbdkit plugin (build/nbdkit-vma-plugin.so) with real nbdkit, nbdcopy,
# nbdinfo and qemu-img: every export equals `vma extract` of its device, byte
# for byte, for archives in device order, interleaved and out of order,
# sparse, with vmstate and several disks, and for one the engine's writer
# made; block status shows the holes; damaged archives fail at open with the
# reader's message and leave no process or temporary file behind.

use strict;
use warnings;

use File::Temp qw(tempdir);
use Test::More;

use lib 't/lib';
use CapturedRun qw(run_captured);
use NbdkitServer;
use VmaTestArchive qw(write_vma clusters_of);

my $vma = 'build/vma';
# `make asan-nbdkit-test` runs this against the plugin's sanitizer build
# (NBDKIT_VMA_PLUGIN, NBDKIT_LD_PRELOAD)
my $plugin = $ENV{NBDKIT_VMA_PLUGIN} // './build/nbdkit-vma-plugin.so';
plan skip_all => "$vma or $plugin not built" if !-x $vma || !-f $plugin;
for my $tool (qw(nbdkit nbdcopy nbdinfo qemu-img)) {
    plan skip_all => "$tool not installed" if system("command -v $tool >/dev/null") != 0;
}

my $dir = tempdir(CLEANUP => 1);
# the plugin's index (and cache) files go here: it must be empty after every run
my $tmp = "$dir/tmp";
mkdir($tmp) or die "mkdir $tmp: $!\n";
$ENV{TMPDIR} = $tmp;

my sub slurp {
    my ($path) = @_;
    open(my $fh, '<', $path) or die "open $path: $!\n";
    binmode($fh);
    local $/;
    return scalar(<$fh>) // '';
}

my sub spew {
    my ($path, $data) = @_;
    open(my $fh, '>', $path) or die "create $path: $!\n";
    binmode($fh);
    print $fh $data;
    close($fh) or die "write $path: $!\n";
}

srand(15);
my sub random_bytes { pack('N*', map { int(rand(2**32)) } 1 .. $_[0] / 4) }

# drive-scsi0: data, a zero cluster, a half-stored cluster, single blocks,
# and a size that ends inside a 4 KiB block (on a sector: QEMU sizes are sectors)
my $scsi0 = random_bytes(2 * 65536) . "\0" x 65536 . random_bytes(32768) . "\0" x 32768;
$scsi0 .= "\0" x 20480 . random_bytes(4096) . "\0" x 40960;
$scsi0 .= random_bytes(65536 * 3) . "\0" x (65536 * 8) . random_bytes(12288) . substr(random_bytes(4096), 0, 512);
# drive-virtio1: thin, a little data in the middle and at the end
my $virtio1 = "\0" x (65536 * 10) . random_bytes(8192) . "\0" x (65536 * 20 - 8192) . random_bytes(65536);
my $vmstate = random_bytes(65536 * 2) . "\0" x 8192 . random_bytes(4096) . "\0" x (65536 - 12288);

my @disks = ({ name => 'drive-scsi0', size => length($scsi0) },
    { name => 'drive-virtio1', size => length($virtio1) });
my @scsi0 = clusters_of(1, $scsi0);
my @virtio1 = clusters_of(2, $virtio1);
my @state = clusters_of(3, $vmstate);

my %archives;
$archives{ordered} = ["$dir/ordered.vma", [@disks], [@scsi0, @virtio1], 58];
# copy-before-write order: devices in turn, each batch backwards, small extents
my @mixed;
for (my $i = 0; $i < @scsi0 || $i < @virtio1; $i += 4) {
    for my $slots (\@scsi0, \@virtio1) {
	my $last = $i + 3 < $#$slots ? $i + 3 : $#$slots;
	push @mixed, reverse(@$slots[$i .. $last]) if $i <= $#$slots;
    }
}
$archives{interleaved} = ["$dir/interleaved.vma", [@disks], [@mixed], 7];
# vmstate (in order, as the format requires) between the disks, full extents
$archives{vmstate} = ["$dir/vmstate.vma",
    [@disks, { name => 'vmstate', size => length($vmstate) }],
    [@virtio1[0 .. 9], @state[0, 1], @scsi0, $state[2], @virtio1[10 .. $#virtio1]], 59];
write_vma(@$_) for values %archives;

# one from the engine's writer (vma create)
spew("$dir/scsi0.raw", $scsi0);
spew("$dir/virtio1.raw", $virtio1);
my ($status, $out, $err) = run_captured($vma, 'create', "$dir/created.vma",
    "drive-scsi0=$dir/scsi0.raw", "drive-virtio1=$dir/virtio1.raw");
is($status, 0, 'vma create makes an archive') or diag($err);

my %image = ('drive-scsi0' => $scsi0, 'drive-virtio1' => $virtio1, vmstate => $vmstate);

my sub tmp_is_empty {
    my ($what) = @_;
    opendir(my $dh, $tmp) or die;
    my @left = grep { !/^\.\.?$/ } readdir($dh);
    is("@left", '', "$what leaves nothing in TMPDIR");
}

for my $name (qw(ordered interleaved vmstate created)) {
    my $archive = "$dir/$name.vma";
    my @devices = $name eq 'vmstate' ? qw(drive-scsi0 drive-virtio1 vmstate)
	: qw(drive-scsi0 drive-virtio1);
    ($status, undef, $err) = run_captured($vma, 'extract', $archive, "$dir/$name.out");
    is($status, 0, "$name: vma extract accepts the archive") or diag($err);

    my $server = NbdkitServer::start($dir, $plugin, $archive);
    ok(!$server->failed, "$name: nbdkit serves it") or diag($server->log_text);
    ($status, $out) = run_captured('nbdinfo', '--list', $server->uri);
    is(join(' ', $out =~ m/^export="([^"]*)":/mg), "@devices", "$name: one export per device");
    like($out, qr/^\tdescription: VMA device drive-scsi0 \(\d+ bytes\) of \Q$archive\E$/m,
	"$name: described");
    for my $dev (@devices) {
	my $copy = "$dir/$name-$dev.copy";
	($status, undef, $err) = run_captured('nbdcopy', $server->uri($dev), $copy);
	is($status, 0, "$name: nbdcopy of $dev") or diag($err);
	my $extracted = $dev eq 'vmstate' ? "$dir/$name.out/vmstate.bin" : "$dir/$name.out/disk-$dev.raw";
	ok(slurp($copy) eq slurp($extracted), "$name: $dev equals vma extract byte for byte");
	my $expect = $image{$dev};
	$expect .= "\0" x (65536 - length($expect) % 65536) if $dev eq 'vmstate' && length($expect) % 65536;
	ok(slurp($copy) eq $expect, "$name: $dev equals the original image");
    }
    is($server->stop, 0, "$name: nbdkit exits cleanly on SIGTERM");
    tmp_is_empty($name);
}

# block status: unstored 4 KiB blocks are holes, stored ones data
my sub expected_map {
    my ($image) = @_;
    my @runs;
    for (my $at = 0; $at < length($image); $at += 4096) {
	my $len = length($image) - $at < 4096 ? length($image) - $at : 4096;
	my $type = substr($image, $at, 4096) =~ /[^\0]/ ? 0 : 3;
	if (@runs && $runs[-1][2] == $type) {
	    $runs[-1][1] += $len;
	} else {
	    push @runs, [$at, $len, $type];
	}
    }
    return join("\n", map { "@$_" } @runs);
}
my $server = NbdkitServer::start($dir, $plugin, "$dir/interleaved.vma", 'dev=drive-virtio1');
ok(!$server->failed, 'nbdkit serves with dev=') or diag($server->log_text);
for my $dev (qw(drive-scsi0 drive-virtio1)) {
    ($status, $out, $err) = run_captured('nbdinfo', '--map', $server->uri($dev));
    is($status, 0, "nbdinfo --map of $dev") or diag($err);
    my $map = join("\n", map { join(' ', (split)[0 .. 2]) } split(/\n/, $out));
    is($map, expected_map($image{$dev}), "nbdinfo --map shows the holes of $dev");
}
($status, $out) = run_captured('nbdinfo', '--size', $server->uri);
is($out, length($virtio1) . "\n", 'dev=NAME is the default export');
($status, undef, $err) = run_captured('qemu-img', 'convert', '-f', 'raw', '-O', 'raw',
    $server->uri('drive-scsi0'), "$dir/qemu-img.raw");
is($status, 0, 'qemu-img convert reads an export') or diag($err);
ok(slurp("$dir/qemu-img.raw") eq $scsi0, 'and gets the disk');
($status, undef, $err) = run_captured('nbdinfo', '--size', $server->uri('drive-nope'));
isnt($status, 0, 'an unknown export is refused');
is($server->stop, 0, 'nbdkit exits cleanly');
like($server->log_text, qr/no device 'drive-nope' in \S+ \(exports: drive-scsi0 drive-virtio1\)/,
    'naming the exports there are');

$server = NbdkitServer::start($dir, $plugin, "$dir/ordered.vma");
($status, $out) = run_captured('nbdinfo', '--size', $server->uri);
is($out, length($scsi0) . "\n", 'without dev= the first disk is the default export');
$server->stop;

# damaged archives: refused at open with the reader's message
my $good = slurp("$dir/ordered.vma");
my $header_size = unpack('N', substr($good, 56, 4));
write_vma("$dir/missing.vma", [@disks], [@scsi0[0, 1], @scsi0[3 .. $#scsi0], @virtio1]);
write_vma("$dir/duplicate.vma", [@disks], [@scsi0, $scsi0[4], @virtio1]);
my %damaged = (
    'missing a cluster' => ["$dir/missing.vma", qr/detected missing cluster 2 for stream drive-scsi0/],
    'a duplicated cluster' => ["$dir/duplicate.vma", qr/found duplicated cluster 4 for stream drive-scsi0/],
    'truncated in an extent' => [substr($good, 0, length($good) - 5000), qr/short vma extent/],
    'a flipped header byte' => [do { my $d = $good; substr($d, 100, 1) = "\x01"; $d },
	qr/wrong vma header chechsum \(archive offset 32\)/],
    'a flipped extent byte' => [do { my $d = $good; substr($d, $header_size + 100, 1) ^= "\x01"; $d },
	qr/wrong vma extent header chechsum/],
    'not an archive' => ["x" x 20000, qr/not a vma file - wrong magic number/],
);
my $failed;
for my $case (sort keys %damaged) {
    my ($data, $message) = @{$damaged{$case}};
    my $path = $data =~ m{^/} ? $data : do { spew("$dir/damaged.vma", $data); "$dir/damaged.vma" };
    $failed = NbdkitServer::start($dir, $plugin, $path);
    ok($failed->failed && $failed->{status} != 0, "$case: nbdkit fails at open");
    like($failed->log_text, $message, "$case: with the reader's message");
    is(join(' ', $failed->leftovers), '', "$case: no process left");
    tmp_is_empty($case);
}
# compressed archives: decompressed once by the real compressor into a cache
# that has no name, so nothing is left in TMPDIR while or after serving
for my $c (['zst', 'zstd -q -c'], ['gz', 'gzip -c'], ['lzo', 'lzop -c']) {
    my ($suffix, $command) = @$c;
    my $archive = "$dir/interleaved.vma.$suffix";
    system("$command '$dir/interleaved.vma' > '$archive'") == 0 or die "$command failed\n";
    my $server = NbdkitServer::start($dir, $plugin, $archive);
    ok(!$server->failed, ".vma.$suffix: nbdkit serves it") or diag($server->log_text);
    like($server->log_text, qr/decompressing \S+\.vma\.$suffix with \w+ into an unnamed cache file in \Q$tmp\E\/nbdkit-vma-\w+ \(removed again\); it needs up to \d+ MiB/,
	".vma.$suffix: says it decompresses, where, and the space needed");
    tmp_is_empty(".vma.$suffix while serving:");
    for my $dev (qw(drive-scsi0 drive-virtio1)) {
	my $copy = "$dir/$suffix-$dev.copy";
	($status, undef, $err) = run_captured('nbdcopy', $server->uri($dev), $copy);
	ok(slurp($copy) eq $image{$dev}, ".vma.$suffix: $dev served") or diag($err);
    }
    is($server->stop, 0, ".vma.$suffix: nbdkit exits cleanly");
    is(join(' ', $server->leftovers), '', ".vma.$suffix: no decompressor left");
}
spew("$dir/cut.vma", substr($good, 0, length($good) - 5000));
system("zstd -q -c '$dir/cut.vma' > '$dir/cut.vma.zst'") == 0 or die;
$failed = NbdkitServer::start($dir, $plugin, "$dir/cut.vma.zst");
ok($failed->failed, 'a damaged compressed archive fails at open');
like($failed->log_text, qr/short vma extent/, 'with the reader\'s message');
is(join(' ', $failed->leftovers), '', 'no process left');
tmp_is_empty('the damaged compressed archive');
spew("$dir/broken.vma.zst", substr(slurp("$dir/interleaved.vma.zst"), 0, 3000));
$failed = NbdkitServer::start($dir, $plugin, "$dir/broken.vma.zst");
like($failed->log_text, qr/zstd failed decompressing \S+broken.vma.zst \(exit status 1\)/,
    'a truncated compressed stream fails at open, naming the decompressor');
is(join(' ', $failed->leftovers), '', 'no process left');
tmp_is_empty('the truncated compressed stream');

$failed = NbdkitServer::start($dir, $plugin, "$dir/ordered.vma", 'dev=drive-nope');
like($failed->log_text, qr/dev=drive-nope: no such device/, 'dev= must name a device');

done_testing();
