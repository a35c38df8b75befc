#!/usr/bin/perl
# vma mount / vma umount with real nbdkit, nbdfuse, losetup and mount: an
# ext4 file system built here (mkfs.ext4 -d), backed up with vma create, on
# the whole disk and inside an MBR partition, mounted read-only from the
# archive; a file read from the mount equals the original; umount and every
# failure leave nothing mounted, attached or running.

use strict;
use warnings;

use File::Temp qw(tempdir);
use Test::More;

use lib 't/lib';
use CapturedRun qw(run_captured);

my $vma = 'build/vma';
plan skip_all => "$vma or the plugin not built" if !-x $vma || !-f 'build/nbdkit-vma-plugin.so';
for my $tool (qw(nbdkit nbdfuse fusermount3 losetup mount mkfs.ext4)) {
    plan skip_all => "$tool not installed" if system("command -v $tool >/dev/null") != 0;
}
plan skip_all => 'needs root (loop devices, mount)' if $> != 0;
plan skip_all => 'no /dev/fuse' if !-c '/dev/fuse';

my $dir = tempdir(CLEANUP => 1);
$ENV{TMPDIR} = $dir;

my sub slurp {
    my ($path) = @_;
    open(my $fh, '<', $path) or return undef;
    binmode($fh);
    local $/;
    return scalar(<$fh>) // '';
}

# what a mount left: mounts under $dir, loop devices over its files, live
# processes whose command line names its state (nbdkit, nbdfuse)
my sub leftovers {
    my ($mountpoint) = @_;
    my @left;
    my $mounts = slurp('/proc/self/mountinfo');
    push @left, "mounted" if $mounts =~ m{ \Q$mountpoint\E };
    push @left, "fuse mounted" if $mounts =~ m{/run/vma-mount/};
    my $state = '/run/vma-mount/' . ($mountpoint =~ s{/}{_}gr);
    push @left, "state dir" if -e $state;
    for my $cmdline (glob('/proc/[0-9]*/cmdline')) {
	my $cmd = slurp($cmdline) // next;
	push @left, "process: $cmd" if index($cmd, $state) >= 0;
    }
    my $loops = `losetup --list --noheadings --output BACK-FILE 2>/dev/null`;
    push @left, "loop device" if index($loops, $state) >= 0;
    return join(', ', @left);
}

mkdir("$dir/files") or die;
system("head -c 300000 /dev/urandom > '$dir/files/data.bin'") == 0 or die;
system("echo hello > '$dir/files/hello.txt'") == 0 or die;
system("truncate -s 24M '$dir/fs.img' && mkfs.ext4 -q -d '$dir/files' '$dir/fs.img'") == 0
    or die "mkfs.ext4 failed\n";

# the same file system in partition 1 of an MBR disk (starting at 1 MiB)
my $fs = slurp("$dir/fs.img");
my $mbr = "\0" x 1048576;
substr($mbr, 446, 16) = pack('CCCCCCCCVV', 0, 0, 0, 0, 0x83, 0, 0, 0, 2048, length($fs) / 512);
substr($mbr, 510, 2) = "\x55\xaa";
open(my $fh, '>', "$dir/part.img") or die;
print $fh $mbr, $fs, "\0" x 1048576;
close($fh) or die;

my ($status, $out, $err) = run_captured($vma, 'create', "$dir/backup.vma",
    "drive-scsi0=$dir/fs.img", "drive-scsi1=$dir/part.img");
is($status, 0, 'vma create backs up both disks') or diag($err);

mkdir("$dir/mnt") or die;
my $mnt = "$dir/mnt";
for my $case (['drive-scsi0', 'a whole-disk file system'], ['drive-scsi1', 'the first partition']) {
    my ($dev, $what) = @$case;
    ($status, $out, $err) = run_captured($vma, 'mount', "$dir/backup.vma", $dev, $mnt);
    is($status, 0, "vma mount: $what") or diag($err);
    like($out, qr/^mounted \Q$dev\E of \S+ read-only on \Q$mnt\E \(\/dev\/loop\d+\)$/, 'says what it mounted');
    ok(slurp("$mnt/data.bin") eq slurp("$dir/files/data.bin"), 'a file read from the mount equals the original');
    is(slurp("$mnt/hello.txt"), "hello\n", 'and another');
    ok(!open(my $w, '>', "$mnt/new"), 'the mount is read-only');
    ($status, undef, $err) = run_captured($vma, 'mount', "$dir/backup.vma", $dev, $mnt);
    isnt($status, 0, 'a second mount on the same point is refused');
    ($status, undef, $err) = run_captured($vma, 'umount', $mnt);
    is($status, 0, 'vma umount') or diag($err);
    is(leftovers($mnt), '', 'leaves nothing mounted, attached or running');
}

# a compressed archive: decompressed once into a cache that has no name
system("zstd -q -c '$dir/backup.vma' > '$dir/backup.vma.zst'") == 0 or die "zstd failed\n";
($status, $out, $err) = run_captured($vma, 'mount', "$dir/backup.vma.zst", 'drive-scsi1', $mnt);
is($status, 0, 'vma mount of a .vma.zst') or diag($err);
like($err, qr/decompressing \S+backup\.vma\.zst with zstd .* it needs up to \d+ MiB/, 'says it decompresses');
ok(slurp("$mnt/data.bin") eq slurp("$dir/files/data.bin"), 'the file equals the original');
($status, undef, $err) = run_captured($vma, 'umount', $mnt);
is($status, 0, 'vma umount') or diag($err);
is(leftovers($mnt), '', 'leaves nothing mounted, attached or running');
is(join(' ', glob("$dir/nbdkit-vma-*")), '', 'nor a cache directory');

($status, $out, $err) = run_captured($vma, 'mount', '-p', '0', "$dir/backup.vma", 'drive-scsi1', $mnt);
isnt($status, 0, '-p 0 mounts the whole partitioned disk, which holds no file system');
is(leftovers($mnt), '', 'the failed mount is undone');

($status, undef, $err) = run_captured($vma, 'mount', "$dir/backup.vma", 'drive-nope', $mnt);
isnt($status, 0, 'an unknown device fails');
like($err, qr/dev=drive-nope: no such device/, "with the plugin's message");
is(leftovers($mnt), '', 'and leaves nothing');

system("head -c 20000 '$dir/backup.vma' > '$dir/cut.vma'");
($status, undef, $err) = run_captured($vma, 'mount', "$dir/cut.vma", 'drive-scsi0', $mnt);
isnt($status, 0, 'a damaged archive fails');
like($err, qr/short vma extent|detected missing cluster/, "with the reader's message");
is(leftovers($mnt), '', 'and leaves nothing');

($status, undef, $err) = run_captured($vma, 'mount', '-p', '3', "$dir/backup.vma", 'drive-scsi1', $mnt);
like($err, qr/drive-scsi1 has no partition 3/, 'a missing partition fails');
is(leftovers($mnt), '', 'and leaves nothing');

($status, undef, $err) = run_captured($vma, 'umount', $mnt);
like($err, qr/is not mounted by vma mount/, 'umount of something vma did not mount is refused');

done_testing();
