#!/usr/bin/perl
# vma extract -d DRIVE-LIST: only the listed devices are restored (without -r
# only their disk files, with -r the map needs only their lines), the configs
# always; an unknown name fails before anything is written. Every restored
# disk is compared with the same disk from a full extract.

use strict;
use warnings;

use File::Temp qw(tempdir);
use Test::More;

use lib 't/lib';
use CapturedRun qw(run_captured);

my $vma = $ENV{VMA} // 'build/vma';
plan skip_all => "$vma not built" if !-x $vma;

my $dir = tempdir(CLEANUP => 1);

my sub write_file {
    my ($path, $data) = @_;
    open(my $fh, '>', $path) or die "open $path: $!\n";
    binmode($fh);
    print $fh $data;
    close($fh) or die "close $path: $!\n";
}

my sub same_file {
    my ($a, $b, $name) = @_;
    my ($status) = run_captured('cmp', $a, $b);
    is($status, 0, $name);
}

my sub files_in {
    my ($path) = @_;
    opendir(my $dh, $path) or die "opendir $path: $!\n";
    return [sort grep { !/^\.\.?$/ } readdir($dh)];
}

# three disks of distinct content and a vmstate stream
srand(14);
my %size = (a => 200000, b => 70000 + 3, c => 1024 * 1024);
for my $name (sort keys %size) {
    write_file("$dir/$name.img", join('', map { chr(1 + int(rand(255))) } 1 .. $size{$name}));
}
write_file("$dir/state.img", 'S' x 90000);
write_file("$dir/qemu-server.conf", "cores: 1\n");
my $archive = "$dir/three.vma";
my ($status, $out, $err) = run_captured($vma, 'create', '-c', "$dir/qemu-server.conf", $archive,
    "vmstate=$dir/state.img", map { "drive-$_=$dir/$_.img" } sort keys %size);
is($status, 0, 'create the archive') or diag($err);

($status, undef, $err) = run_captured($vma, 'extract', $archive, "$dir/full");
is($status, 0, 'full extract') or diag($err);

($status, $out, $err) = run_captured($vma, 'extract', '-d', 'drive-b', $archive, "$dir/one");
is($status, 0, 'extract -d with one device') or diag($err);
is_deeply(files_in("$dir/one"), ['disk-drive-b.raw', 'qemu-server.conf'],
    'only that disk and the config are written');
is($out, "DEVINFO $dir/one/tmp-disk-drive-b.raw " . (int(($size{b} + 511) / 512) * 512) . "\n",
    'one DEVINFO line, for that disk');
same_file("$dir/one/disk-drive-b.raw", "$dir/full/disk-drive-b.raw", 'the disk equals the full extract');
same_file("$dir/one/qemu-server.conf", "$dir/full/qemu-server.conf", 'the config equals the full extract');

($status, undef, $err) = run_captured($vma, 'extract', '-d', 'drive-c,drive-a', $archive, "$dir/two");
is($status, 0, 'extract -d with two devices') or diag($err);
is_deeply(files_in("$dir/two"), ['disk-drive-a.raw', 'disk-drive-c.raw', 'qemu-server.conf'],
    'both disks and the config are written');
same_file("$dir/two/disk-drive-$_.raw", "$dir/full/disk-drive-$_.raw", "drive-$_ equals the full extract")
    for qw(a c);

($status, undef, $err) = run_captured($vma, 'extract', '-d', 'drive-a', '-d', 'vmstate', $archive,
    "$dir/state");
is($status, 0, 'repeated -d, with the vmstate stream') or diag($err);
is_deeply(files_in("$dir/state"), ['disk-drive-a.raw', 'qemu-server.conf', 'vmstate.bin'],
    'the lists add up');
same_file("$dir/state/vmstate.bin", "$dir/full/vmstate.bin", 'vmstate.bin equals the full extract');

($status, $out, $err) = run_captured($vma, 'extract', '-d', 'drive-a,drive-x', $archive, "$dir/unknown");
is($status, 1 << 8, 'an unknown device exits 1');
is($err, "vma: device 'drive-x' not found in archive\n", 'naming the device');
ok(!-e "$dir/unknown", 'before anything is written');
is($out, '', 'and nothing is printed on stdout');

($status, undef, $err) = run_captured($vma, 'extract', '-d', 'drive-a,', $archive, "$dir/empty");
is($status, 1 << 8, 'an empty name in the list exits 1');
like($err, qr/^vma: empty device name in drive list 'drive-a,'$/, 'with a message');
ok(!-e "$dir/empty", 'and writes nothing');

# with -r the map names only the selected device; the others keep their data
my $padded_c = int(($size{c} + 511) / 512) * 512;
write_file("$dir/target-c.raw", 'x' x $padded_c);
write_file("$dir/map", "1:drive-c=$dir/target-c.raw\ndone\n");
($status, $out, $err) = run_captured($vma, 'extract', '-d', 'drive-c', '-r', "$dir/map", $archive,
    "$dir/mapped");
is($status, 0, 'extract -d with -r and a map for that device only') or diag($err);
like($out, qr/^DEV: dev_id=4 size: $padded_c devname: drive-c\nCTIME: /m, 'the content is listed as before');
same_file("$dir/target-c.raw", "$dir/full/disk-drive-c.raw", 'the mapped target equals the full extract');
is_deeply(files_in("$dir/mapped"), ['qemu-server.conf'], 'only the config goes to the directory');

write_file("$dir/map2", "1:drive-c=$dir/target-c.raw\ndone\n");
($status, undef, $err) = run_captured($vma, 'extract', '-d', 'drive-a,drive-c', '-r', "$dir/map2",
    $archive, "$dir/mapped2");
is($status, 1 << 8, 'a selected device missing from the map fails');
like($err, qr/no device name mapping for drive-a/, 'with the usual message');

# the usage names -d as pve-qemu 10's vma does
($status, $out) = run_captured($vma);
is($status, 1 << 8, 'vma without a command exits 1');
is($out, <<'USAGE', 'and prints the usage of pve-qemu 10');
usage: vma command [command options]

vma list <filename>
vma config <filename> [-c <config>]
vma create <filename> [-c <config>] [-d format=<format>:<device name>=<path> [-d ...]]
vma extract <filename> [-d <drive-list>] [-r <fifo>] <targetdir>
vma verify <filename> [-v]
USAGE

done_testing();
