#!/usr/bin/perl
# The vma command end to end: create, list, config, verify and extract
# round trips over real files, pipes and compressors; every extracted disk is
# compared byte for byte with its source.

use strict;
use warnings;

use File::Temp qw(tempdir);
use Test::More;

use lib 't/lib';
use CapturedRun qw(run_captured);

my $vma = 'build/vma';
plan skip_all => "$vma not built" if !-x $vma;

my $dir = tempdir(CLEANUP => 1);

my sub shell {
    my ($cmd) = @_;
    system('/bin/sh', '-c', $cmd) == 0 or die "command failed: $cmd\n";
}

# an image: random and zero 4 KiB pieces, then a partial tail
my sub make_image {
    my ($path, $size, $seed) = @_;
    srand($seed);
    open(my $fh, '>', $path) or die "open $path: $!\n";
    binmode($fh);
    my $left = $size;
    while ($left > 0) {
	my $len = $left < 4096 ? $left : 4096;
	my $kind = int(rand(3));
	my $data = $kind == 0 ? "\0" x $len : pack('C*', map { 1 + int(rand(255)) } 1 .. $len);
	print $fh $data;
	$left -= $len;
    }
    close($fh) or die "close $path: $!\n";
}

# the source padded with zeros to a multiple of 512, as it is restored
my sub same_as_source {
    my ($restored, $source, $name) = @_;
    my $size = -s $source;
    my $padded = int(($size + 511) / 512) * 512;
    is(-s $restored, $padded, "$name: size rounded up to 512");
    my ($status) = run_captured('cmp', '-n', $size, $restored, $source);
    is($status, 0, "$name: content equal");
    if ($padded > $size) {
	open(my $fh, '<', $restored) or die;
	binmode($fh);
	seek($fh, $size, 0);
	read($fh, my $tail, $padded - $size);
	is($tail, "\0" x ($padded - $size), "$name: padding is zero");
    }
}

my $conf = "$dir/qemu-server.conf";
shell("printf 'cores: 2\\nmemory: 512\\n' > '$conf'");
shell("printf 'fw\\n' > '$dir/qemu-server.fw'");

my %images = (
    small => 1000,
    odd => 70000 + 3,
    cluster => 65536,
    multi => 5 * 1024 * 1024 + 4097,
    zeros => 300000,
);
my $seed = 1;
for my $name (sort keys %images) {
    if ($name eq 'zeros') {
	shell("truncate -s $images{$name} '$dir/$name.img'");
    } else {
	make_image("$dir/$name.img", $images{$name}, $seed++);
    }
}

# create with several disks and configs, then list, config, verify, extract
my $archive = "$dir/all.vma";
my @disks = map { "drive-$_=$dir/$_.img" } sort keys %images;
my ($status, $out, $err) = run_captured($vma, 'create', '-v', '-c', $conf, '-c', "$dir/qemu-server.fw",
    $archive, @disks);
is($status, 0, 'create succeeds') or diag($err);
like($err, qr/^progress 0% 0\/\d+ 0$/m, 'create -v starts its progress at 0%');
like($err, qr/^progress 100% (\d+)\/\1 \d+$/m, 'create -v ends at 100%');
for my $name (sort keys %images) {
    my $size = int(($images{$name} + 511) / 512) * 512;
    like($err, qr/^image drive-$name: size=$size zeros=\d+ saved=\d+$/m, "summary of $name");
}
my ($zeros) = $err =~ /^image drive-zeros: size=\d+ zeros=(\d+) saved=0$/m;
is($zeros, 300032, 'an all-zero disk saves nothing and counts all zeros');

($status, $out) = run_captured($vma, 'list', $archive);
is($status, 0, 'list succeeds');
my $i = 1;
my $expect = "CFG: size: 21 name: qemu-server.conf\nCFG: size: 3 name: qemu-server.fw\n";
for my $name (sort keys %images) {
    my $size = int(($images{$name} + 511) / 512) * 512;
    $expect .= "DEV: dev_id=$i size: $size devname: drive-$name\n";
    $i++;
}
like($out, qr/^\Q$expect\ECTIME: \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\n\z/, 'list output');

($status, $out) = run_captured($vma, 'config', $archive);
is($out, "cores: 2\nmemory: 512\n", 'config prints qemu-server.conf');
($status, $out) = run_captured($vma, 'config', '-c', 'qemu-server.fw', $archive);
is($out, "fw\n", 'config -c prints the named blob');
($status, $out, $err) = run_captured($vma, 'config', '-c', 'nope', $archive);
is($status >> 8, 1, 'config of a missing name fails');
is($err, "unable to find configuration data 'nope'\n", 'with the original message');

($status, $out, $err) = run_captured($vma, 'verify', '-v', $archive);
is($status, 0, 'verify -v succeeds') or diag($err);
my @percent = $out =~ /^progress (\d+)% \(read \d+ bytes, duration \d+ sec\)$/mg;
ok(@percent && !grep({ $_ > 100 } @percent), 'verify progress stays within 100%');
is($percent[-1], 100, 'verify progress ends at 100%');
like($out, qr/^total bytes read \d+, sparse bytes \d+ \([\d.e+]+%\)\nspace reduction due to 4K zero blocks [\d.e+-]+%\n\z/m,
    'verify -v summary');

($status, $out, $err) = run_captured($vma, 'extract', '-v', $archive, "$dir/x");
is($status, 0, 'extract succeeds') or diag($err);
for my $name (sort keys %images) {
    like($out, qr/^DEVINFO \Q$dir\E\/x\/tmp-disk-drive-$name.raw \d+$/m, "DEVINFO line for $name");
    same_as_source("$dir/x/disk-drive-$name.raw", "$dir/$name.img", "extract $name");
}
ok(!glob("$dir/x/tmp-disk-*"), 'no temporary disk names remain');
is(`cat '$dir/x/qemu-server.conf'`, "cores: 2\nmemory: 512\n", 'extract writes the configs');
my ($blocks) = `du -k '$dir/x/disk-drive-zeros.raw'` =~ /^(\d+)/;
is($blocks, 0, 'an all-zero disk is restored sparse');

($status, undef, $err) = run_captured($vma, 'extract', $archive, "$dir/x");
is($status >> 8, 1, 'extract into an existing directory fails');
like($err, qr/unable to create target directory .*File exists/, 'with a message');

# stdin and a compressor on both sides
SKIP: {
    skip 'zstd not installed', 6 if system('zstd --version >/dev/null 2>&1') != 0;
    my $zst = "$dir/z.vma.zst";
    ($status, undef, $err) = run_captured($vma, 'create', '-c', $conf, "exec:zstd -q -c > '$zst'",
	"drive-multi=$dir/multi.img", "drive-odd=$dir/odd.img");
    is($status, 0, 'create through exec:zstd') or diag($err);
    ok(-s $zst, 'the compressor wrote its output');
    shell("zstd -q -dc '$zst' | $vma verify -");
    shell("zstd -q -dc '$zst' | $vma extract - '$dir/z'");
    same_as_source("$dir/z/disk-drive-multi.raw", "$dir/multi.img", 'zstd round trip multi');
    same_as_source("$dir/z/disk-drive-odd.raw", "$dir/odd.img", 'zstd round trip odd');
}

# archives without disks: config only, and nothing at all
($status, undef, $err) = run_captured($vma, 'create', "$dir/cfg.vma", '-c', $conf);
is($status, 0, 'create with only a config') or diag($err);
($status, $out) = run_captured($vma, 'verify', '-v', "$dir/cfg.vma");
is($status, 0, 'a config-only archive verifies');
like($out, qr/^vma archive contains no image data$/m, 'and says it has no image data');
($status) = run_captured($vma, 'create', "$dir/empty.vma");
is($status, 0, 'create with neither config nor disk');
($status, $out) = run_captured($vma, 'list', "$dir/empty.vma");
is($status, 0, 'that archive can be read back');
like($out, qr/^CTIME: /, 'and lists only its ctime');

# vmstate goes to vmstate.bin
make_image("$dir/state.img", 100000, 9);
($status, undef, $err) = run_captured($vma, 'create', "$dir/vs.vma", "vmstate=$dir/state.img",
    "drive-a=$dir/small.img");
is($status, 0, 'create with a vmstate stream') or diag($err);
($status, $out) = run_captured($vma, 'list', "$dir/vs.vma");
like($out, qr/^VMSTATE: dev_id=1 memory: 100352$/m, 'list shows the VMSTATE line');
($status, undef, $err) = run_captured($vma, 'extract', "$dir/vs.vma", "$dir/vs");
is($status, 0, 'extract with vmstate') or diag($err);
($status) = run_captured('cmp', '-n', 100000, "$dir/vs/vmstate.bin", "$dir/state.img");
is($status, 0, 'vmstate.bin holds the state');
same_as_source("$dir/vs/disk-drive-a.raw", "$dir/small.img", 'disk beside vmstate');

# the -r map: existing targets, write-zero, options
shell("head -c 200000 /dev/urandom > '$dir/target-multi.raw'");
shell("truncate -s " . (int((5 * 1024 * 1024 + 4097 + 511) / 512) * 512 + 4096) . " '$dir/target-multi.raw'");
shell("truncate -s 70144 '$dir/target-odd.raw'");
open(my $map, '>', "$dir/map") or die;
print $map "format=raw:throttling.bps=1000000000:cache=writeback:1:drive-multi=$dir/target-multi.raw\n";
print $map "0:drive-odd=$dir/target-odd.raw\n";
print $map "done\n";
close($map);
($status, undef, $err) = run_captured($vma, 'create', "$dir/m.vma", "drive-multi=$dir/multi.img",
    "drive-odd=$dir/odd.img");
is($status, 0, 'create for the map test') or diag($err);
($status, $out, $err) = run_captured($vma, 'extract', '-r', "$dir/map", "$dir/m.vma", "$dir/m");
is($status, 0, 'extract -r with a map') or diag($err);
like($out, qr/^DEV: dev_id=2 size: 70144 devname: drive-odd\nCTIME: /m, 'extract -r prints the content first');
($status) = run_captured('cmp', '-n', 5 * 1024 * 1024 + 4097, "$dir/target-multi.raw", "$dir/multi.img");
is($status, 0, 'write-zero target overwritten with data and zeros');
same_as_source("$dir/target-odd.raw", "$dir/odd.img", 'map target odd');

open($map, '>', "$dir/map2") or die;
print $map "format=qcow2:0:drive-multi=$dir/target-multi.raw\n0:drive-odd=$dir/target-odd.raw\n";
close($map);
($status, undef, $err) = run_captured($vma, 'extract', '-r', "$dir/map2", "$dir/m.vma", "$dir/m2");
is($status >> 8, 1, 'a raw file named as qcow2 is refused');
like($err, qr/can't open file \Q$dir\E\/target-multi.raw - Image is not in qcow2 format/,
    "with QEMU's message");

open($map, '>', "$dir/map3") or die;
print $map "0:drive-odd=$dir/target-odd.raw\ndone\n";
close($map);
($status, undef, $err) = run_captured($vma, 'extract', '-r', "$dir/map3", "$dir/m.vma", "$dir/m3");
like($err, qr/no device name mapping for drive-multi/, 'a device missing from the map is an error');

open($map, '>', "$dir/map4") or die;
print $map "2:drive-odd=$dir/target-odd.raw\n";
close($map);
($status, undef, $err) = run_captured($vma, 'extract', '-r', "$dir/map4", "$dir/m.vma", "$dir/m4");
like($err, qr/read map failed - parse error \('2:drive-odd=/, 'a malformed map line is an error');

shell("truncate -s 1000 '$dir/tiny.raw'");
open($map, '>', "$dir/map5") or die;
print $map "0:drive-odd=$dir/tiny.raw\n0:drive-multi=$dir/target-multi.raw\n";
close($map);
($status, undef, $err) = run_captured($vma, 'extract', '-r', "$dir/map5", "$dir/m.vma", "$dir/m5");
like($err, qr/vma_reader_register_bs for stream drive-odd failed - unexpected size 1000 != 70144/,
    'a target that is too small is refused');

# failures: exit status 1, a message, no partial archive
($status, undef, $err) = run_captured($vma, 'create', "$dir/bad.vma", "$dir/does-not-exist.img");
is($status, 1 << 8, 'create from a missing image exits 1');
like($err, qr/bdrv_open '.*does-not-exist.img' failed/, 'with a message');
ok(!-e "$dir/bad.vma", 'and leaves no archive');
($status, undef, $err) = run_captured($vma, 'create', "exec:cat > /dev/full", "$dir/multi.img");
is($status, 1 << 8, 'create into a failing command exits 1');
like($err, qr/creating vma archive failed/, 'with a message');
($status, undef, $err) = run_captured($vma, 'create', $archive, "$dir/small.img");
like($err, qr/can't open file .*File exists/, 'create never overwrites an archive');
($status) = run_captured($vma, 'verify', $archive);
is($status, 0, 'the existing archive is untouched');

done_testing();
