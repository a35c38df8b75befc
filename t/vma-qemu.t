#!/usr/bin/perl
# vma through QEMU's block layer, with Debian's real qemu-img and qemu-nbd:
# extract -r onto qcow2, vmdk, a raw file, a loop device (root only) and a
# protocol path (nbd:unix:SOCKET served by a separate qemu-nbd, standing in
# for rbd: and iscsi:) with qmrestore's map lines; create from qcow2
# (unallocated and zero clusters, a backing file), vmdk, a protocol path, a
# json: filename and the -d form, each read back and compared with
# `qemu-img convert -O raw`; a qcow2's allocated clusters read and written in
# its file, without qemu-nbd, and everything else through it (a logging
# qemu-nbd in PATH tells which); and the failures (qemu-nbd missing, QEMU's open
# error, qemu-nbd killed in the middle of a restore and of a create), each
# checked for leftovers: no qemu-nbd process, no socket or temporary
# directory (vma runs with a private TMPDIR), no extract directory, no
# archive.

use strict;
use warnings;

use File::Temp qw(tempdir);
use POSIX ();
use Test::More;
use Time::HiRes qw(sleep);

use lib 't/lib';
use CapturedRun qw(run_captured);

my $vma = $ENV{VMA} // 'build/vma';
plan skip_all => "$vma not built" if !-x $vma;
for my $tool (qw(qemu-img qemu-nbd qemu-io)) {
    plan skip_all => "$tool not installed (qemu-utils)" if system("$tool --version >/dev/null 2>&1") != 0;
}

my $dir = tempdir(CLEANUP => 1);
my $tmp = "$dir/tmp"; # vma's TMPDIR: its qemu-nbd socket directories go here
mkdir($tmp) or die "mkdir $tmp: $!\n";
$ENV{TMPDIR} = $tmp;

my $KiB = 1024;
my $MiB = 1024 * $KiB;
my $SIZE = 4 * $MiB + 192 * $KiB; # a multiple of 64 KiB and not of 1 MiB
my $FILL = "\xa5";                 # what a target held before the restore

# qemu-nbd as vma finds it in PATH, logging each image it is started for
my ($real_qemu_nbd) = grep { -x } map { "$_/qemu-nbd" } split(/:/, $ENV{PATH});
my $nbd_log = "$dir/qemu-nbd.log";
mkdir("$dir/bin") or die "mkdir $dir/bin: $!\n";
{
    open(my $fh, '>', "$dir/bin/qemu-nbd") or die "open $dir/bin/qemu-nbd: $!\n";
    print $fh qq(#!/bin/bash\nprintf '%s\\n' "\${\@: -1}" >> '$nbd_log'\nexec -a qemu-nbd '$real_qemu_nbd' "\$\@"\n);
    close($fh) or die "close: $!\n";
    chmod(0755, "$dir/bin/qemu-nbd") or die "chmod: $!\n";
}
$ENV{PATH} = "$dir/bin:$ENV{PATH}";

# The images vma started qemu-nbd for since the last call.
my sub qemu_nbd_runs {
    open(my $fh, '<', $nbd_log) or return [];
    my @images = map { chomp; $_ } <$fh>;
    close($fh);
    unlink($nbd_log);
    return \@images;
}

my %servers; # pid => socket of the qemu-nbd servers this test started
my %attached;

END {
    local $?;
    for my $pid (keys %servers) {
        kill('TERM', $pid);
        waitpid($pid, 0);
    }
    system('losetup', '-d', $_) for keys %attached;
}
$SIG{$_} = sub { die "killed by SIG$_[0]\n" } for qw(INT TERM HUP);

my sub shell {
    my ($cmd) = @_;
    system($cmd) == 0 or die "'$cmd' failed\n";
}

# A raw image whose 4 KiB blocks are data (each different), zeros, or mixed
# within a 64 KiB cluster.
my sub make_raw {
    my ($path, $seed) = @_;
    open(my $fh, '>', $path) or die "open $path: $!\n";
    binmode($fh);
    truncate($fh, $SIZE) or die "truncate $path: $!\n";
    for my $c (0 .. $SIZE / (64 * $KiB) - 1) {
        my $kind = ($c * 7 + $seed) % 5;
        my $mask = $kind == 0 ? 0 : $kind == 2 ? 0x5a3c : $kind == 3 ? 1 << ($c % 16) : 0xffff;
        for my $j (0 .. 15) {
            next if !($mask & (1 << $j));
            my $offset = $c * 64 * $KiB + $j * 4 * $KiB;
            my $text = "seed $seed block at $offset\n";
            sysseek($fh, $offset, 0) or die "seek $path: $!\n";
            syswrite($fh, substr($text x (4 * $KiB / length($text) + 1), 0, 4 * $KiB)) == 4 * $KiB
                or die "write $path: $!\n";
        }
    }
    close($fh) or die "close $path: $!\n";
}

my sub make_filled {
    my ($path, $size) = @_;
    open(my $fh, '>', $path) or die "open $path: $!\n";
    binmode($fh);
    print $fh $FILL x $size;
    close($fh) or die "close $path: $!\n";
}

my sub write_map {
    my ($path, @lines) = @_;
    open(my $fh, '>', $path) or die "open $path: $!\n";
    print $fh "$_\n" for @lines, 'done';
    close($fh) or die "close $path: $!\n";
}

# qemu-img compare's verdict on two images (formats given, no probing).
my sub compare {
    my ($fmt_a, $a, $fmt_b, $b) = @_;
    my ($status, $out, $err) = run_captured('qemu-img', 'compare', '-f', $fmt_a, '-F', $fmt_b, $a, $b);
    return $status == 0 ? 'identical' : "differ: $out$err";
}

# The raw bytes of any image, as qemu-img convert reads it.
my sub as_raw {
    my ($image, $out) = @_;
    # -U: a protocol test's server holds the image open
    shell("qemu-img convert -U -O raw '$image' '$out'");
    return $out;
}

# A qemu-nbd serving image on a unix socket until the test ends, as the
# remote storage behind a protocol path. Returns the socket.
my sub serve {
    my ($image, $format, $name) = @_;
    my $socket = "$dir/$name.sock";
    my $pid = fork() // die "fork: $!\n";
    if (!$pid) {
        exec($real_qemu_nbd, '--persistent', '--shared=4', "--format=$format", "--socket=$socket", $image)
            or POSIX::_exit(127);
    }
    $servers{$pid} = $socket;
    for (1 .. 500) {
        return $socket if -S $socket;
        sleep(0.01);
    }
    die "qemu-nbd on $socket did not come up\n";
}

# What a vma run may have left behind: qemu-nbd processes on this test's
# files other than the servers above, and anything in vma's TMPDIR.
my sub leftovers {
    my @left;
    opendir(my $dh, '/proc') or die "opendir /proc: $!\n";
    for my $pid (grep { /^\d+$/ } readdir($dh)) {
        next if $servers{$pid};
        open(my $fh, '<', "/proc/$pid/cmdline") or next;
        my $cmdline = do { local $/; <$fh> } // '';
        push @left, "process $pid: $cmdline" if $cmdline =~ /^qemu-nbd\0/ && index($cmdline, $dir) >= 0;
    }
    opendir(my $th, $tmp) or die "opendir $tmp: $!\n";
    push @left, map { "$tmp/$_" } grep { !/^\.\.?$/ } readdir($th);
    return \@left;
}

# --- extract -r onto every kind of target ------------------------------------

my @names = qw(qcow2 qcow2-old vmdk raw nbd loop qcow2-backed qcow2-prealloc qcow2-mixed qcow2-snap);
make_raw("$dir/src-$names[$_].raw", $_ + 1) for 0 .. $#names;
my ($status, $out, $err) = run_captured($vma, 'create', "$dir/a.vma",
    map { "drive-$_=$dir/src-$_.raw" } @names);
is($status, 0, 'create the restore archive from raw files') or diag($err);

shell("qemu-img create -q -f qcow2 '$dir/t.qcow2' $SIZE");
# a qcow2 that held data before: "1:" must zero what the archive has as zero
shell("qemu-img create -q -f qcow2 '$dir/t-old.qcow2' $SIZE");
shell("qemu-io -f qcow2 -c 'write -P 0xa5 0 $SIZE' '$dir/t-old.qcow2' >/dev/null");
# a qcow2 over a backing file that held data: "1:" must hide that data
make_filled("$dir/old-base.raw", $SIZE);
shell("qemu-img create -q -f qcow2 -b '$dir/old-base.raw' -F raw '$dir/t-backed.qcow2' $SIZE");
# as Proxmox creates qcow2 volumes: every cluster allocated in the file
shell("qemu-img create -q -f qcow2 -o preallocation=metadata '$dir/t-prealloc.qcow2' $SIZE");
# old data in the first half (allocated), nothing in the second
shell("qemu-img create -q -f qcow2 '$dir/t-mixed.qcow2' $SIZE");
shell("qemu-io -f qcow2 -c 'write -P 0xa5 0 @{[$SIZE / 2]}' '$dir/t-mixed.qcow2' >/dev/null");
# old data kept by an internal snapshot, which QEMU's copy-on-write protects
shell("qemu-img create -q -f qcow2 '$dir/t-snap.qcow2' $SIZE");
shell("qemu-io -f qcow2 -c 'write -P 0xa5 0 $SIZE' '$dir/t-snap.qcow2' >/dev/null");
shell("qemu-img snapshot -c before '$dir/t-snap.qcow2'");
shell("qemu-img create -q -f vmdk '$dir/t.vmdk' $SIZE");
make_filled("$dir/t.raw", $SIZE);
make_filled("$dir/remote.raw", $SIZE);
my $socket = serve("$dir/remote.raw", 'raw', 'remote');

my $loop;
if ($> == 0 && system('losetup --version >/dev/null 2>&1') == 0) {
    make_filled("$dir/loop.img", $SIZE);
    $loop = `losetup --find --show '$dir/loop.img' 2>/dev/null`;
    chomp($loop);
    if ($? == 0 && $loop =~ m|^/dev/loop\d+$|) {
        $attached{$loop} = 1;
    } else {
        undef $loop;
    }
}

# qmrestore's forms: throttling prefix for a storage with a limit, format=,
# 0: on storage that reads as zeros when new, 1: otherwise; cache= as a
# hand-written map may have it
my @map = (
    "throttling.bps=104857600:throttling.group=local:format=qcow2:0:drive-qcow2=$dir/t.qcow2",
    "throttling.bps=104857600:throttling.group=local:format=qcow2:1:drive-qcow2-old=$dir/t-old.qcow2",
    "format=vmdk:cache=none:0:drive-vmdk=$dir/t.vmdk",
    "format=raw:1:drive-raw=$dir/t.raw",
    "format=raw:cache=writeback:1:drive-nbd=nbd:unix:$socket",
    $loop ? "format=raw:1:drive-loop=$loop" : "format=raw:1:drive-loop=$dir/t-loop.raw",
    "format=qcow2:1:drive-qcow2-backed=$dir/t-backed.qcow2",
    "throttling.bps=104857600:throttling.group=local:format=qcow2:0:drive-qcow2-prealloc=$dir/t-prealloc.qcow2",
    "format=qcow2:cache=none:1:drive-qcow2-mixed=$dir/t-mixed.qcow2",
    "format=qcow2:1:drive-qcow2-snap=$dir/t-snap.qcow2",
);
make_filled("$dir/t-loop.raw", $SIZE) if !$loop;
write_map("$dir/map", @map);
($status, $out, $err) = run_captured($vma, 'extract', '-v', '-r', "$dir/map", "$dir/a.vma", "$dir/x");
is($status, 0, 'extract -r onto qcow2, vmdk, raw, nbd: and a block device') or diag($err);
like($out, qr/^DEV: dev_id=1 size: $SIZE devname: drive-qcow2$/m, 'the content is listed first');
like($out, qr/^total bytes read /m, 'and the summary printed');

is(compare('raw', "$dir/src-qcow2.raw", 'qcow2', "$dir/t.qcow2"), 'identical', 'qcow2 target');
is(compare('raw', "$dir/src-qcow2-old.raw", 'qcow2', "$dir/t-old.qcow2"), 'identical',
    'qcow2 target with old data: 1: zeroed it');
is(compare('raw', "$dir/src-qcow2-backed.raw", 'qcow2', "$dir/t-backed.qcow2"), 'identical',
    'qcow2 target over a backing file: 1: hid its data');
is(compare('raw', "$dir/src-qcow2-prealloc.raw", 'qcow2', "$dir/t-prealloc.qcow2"), 'identical',
    'preallocated qcow2 target');
is(compare('raw', "$dir/src-qcow2-mixed.raw", 'qcow2', "$dir/t-mixed.qcow2"), 'identical',
    'qcow2 target, half allocated (cache=none)');
is(compare('raw', "$dir/src-qcow2-snap.raw", 'qcow2', "$dir/t-snap.qcow2"), 'identical',
    'qcow2 target with a snapshot');
shell("qemu-img convert -O raw -l snapshot.name=before '$dir/t-snap.qcow2' '$dir/snap-before.raw'");
make_filled("$dir/filled.raw", $SIZE);
is(compare('raw', "$dir/filled.raw", 'raw', "$dir/snap-before.raw"), 'identical',
    'the snapshot still holds the old data');
for my $image (map { "$dir/t$_.qcow2" } '', qw(-old -backed -prealloc -mixed -snap)) {
    my ($status, $out, $err) = run_captured('qemu-img', 'check', '-q', $image);
    is($status, 0, "qemu-img check of $image: no errors or leaks") or diag("$out$err");
}
# qemu-nbd ran for every qcow2 with a cluster QEMU had to allocate or
# protect; the allocated clusters of the others were written in their files
is_deeply([sort grep { /qcow2$/ } @{qemu_nbd_runs()}],
    [map { "$dir/t$_.qcow2" } qw(-backed -mixed -snap), ''],
    'qemu-nbd ran for the qcow2 targets with clusters to allocate or a snapshot, not for t-old and t-prealloc');
is(compare('raw', "$dir/src-vmdk.raw", 'vmdk', "$dir/t.vmdk"), 'identical', 'vmdk target (cache=none)');
is(compare('raw', "$dir/src-raw.raw", 'raw', "$dir/t.raw"), 'identical', 'raw file target');
is(compare('raw', "$dir/src-nbd.raw", 'raw', "$dir/remote.raw"), 'identical', 'nbd:unix: protocol target');
is(compare('raw', "$dir/src-loop.raw", 'raw', $loop // "$dir/t-loop.raw"), 'identical',
    $loop ? 'loop device target' : 'raw target (no loop device here)');

# 0: leaves a fresh qcow2 sparse: only clusters with data are allocated
my $allocated = 0;
$allocated += $1
    while `qemu-img map --output=json '$dir/t.qcow2'` =~ /"length": (\d+), "depth": 0, "present": true, "zero": false, "data": true/g;
my $data_clusters = grep { (($_ * 7 + 1) % 5) != 0 } 0 .. $SIZE / (64 * $KiB) - 1;
is($allocated, $data_clusters * 64 * $KiB, '0: keeps a fresh qcow2 sparse (only data clusters allocated)');
# 1: wrote the zero ranges as write-zeroes: QEMU records zero clusters
like(`qemu-img map --output=json '$dir/t-backed.qcow2'`, qr/"depth": 0, "present": true, "zero": true, "data": false/,
    '1: zeroes become qcow2 zero clusters');
# in allocated clusters they are zeros written in place: nothing is freed
unlike(`qemu-img map --output=json '$dir/t-old.qcow2'`, qr/"data": false/,
    '1: zeroes in allocated clusters are written in the file');
is_deeply(leftovers(), [], 'no qemu-nbd, socket or directory left after a restore');

# without format=, a qcow2 is probed as QEMU would
shell("qemu-img create -q -f qcow2 '$dir/probed.qcow2' $SIZE");
write_map("$dir/map-probe", map { "0:drive-$_=" . ($_ eq 'qcow2' ? "$dir/probed.qcow2" : "$dir/t.raw") } @names);
($status, undef, $err) = run_captured($vma, 'extract', '-r', "$dir/map-probe", "$dir/a.vma", "$dir/probe");
is($status, 0, 'extract -r without format= onto a qcow2') or diag($err);
is(compare('raw', "$dir/src-qcow2.raw", 'qcow2', "$dir/probed.qcow2"), 'identical', 'probed qcow2 target');

# a json: filename, as QEMU takes one
shell("qemu-img create -q -f qcow2 '$dir/json.qcow2' $SIZE");
my $json = qq(json:{"driver":"qcow2","file":{"driver":"file","filename":"$dir/json.qcow2"}});
write_map("$dir/map-json", map { $_ eq 'qcow2' ? "0:drive-qcow2=$json" : "0:drive-$_=$dir/t.raw" } @names);
($status, undef, $err) = run_captured($vma, 'extract', '-r', "$dir/map-json", "$dir/a.vma", "$dir/json");
is($status, 0, 'extract -r onto a json: filename') or diag($err);
is(compare('raw', "$dir/src-qcow2.raw", 'qcow2', "$dir/json.qcow2"), 'identical', 'json: target');

# --- extract failures -----------------------------------------------------------

my sub other_targets {
    my ($skip) = @_;
    return map { "format=raw:0:drive-$_=$dir/t.raw" } grep { $_ ne $skip } @names;
}

my sub check_failed_extract {
    my ($what, $map_line, $message) = @_;
    write_map("$dir/map-fail", $map_line, other_targets('qcow2'));
    my ($status, undef, $err) = run_captured($vma, 'extract', '-r', "$dir/map-fail", "$dir/a.vma", "$dir/fail");
    is($status >> 8, 1, "$what: exit status 1");
    like($err, $message, "$what: message");
    ok(!-e "$dir/fail", "$what: no extract directory left");
    is_deeply(leftovers(), [], "$what: no qemu-nbd, socket or directory left");
}

shell("qemu-img create -q -f qcow2 '$dir/small.qcow2' " . ($SIZE - 64 * $KiB));
check_failed_extract('a qcow2 smaller than the disk', "format=qcow2:0:drive-qcow2=$dir/small.qcow2",
    qr/unexpected size @{[$SIZE - 64 * $KiB]} != $SIZE/);
check_failed_extract('a missing qcow2', "format=qcow2:0:drive-qcow2=$dir/missing.qcow2",
    qr/^vma: can't open file \Q$dir\E\/missing.qcow2 - Could not open '\Q$dir\E\/missing.qcow2': No such file or directory$/m);
check_failed_extract('a raw file named as qcow2', "format=qcow2:0:drive-qcow2=$dir/t.raw",
    qr/^vma: can't open file \Q$dir\E\/t.raw - Image is not in qcow2 format$/m);
check_failed_extract('an unknown protocol', "format=raw:0:drive-qcow2=nosuch:thing",
    qr/^vma: can't open file nosuch:thing - Unknown protocol 'nosuch'$/m);
{
    local $ENV{PATH} = "$dir/empty-path";
    mkdir($ENV{PATH});
    check_failed_extract('qemu-nbd missing', "format=qcow2:0:drive-qcow2=$dir/t.qcow2",
        qr/^vma: can't open file \Q$dir\E\/t.qcow2 - qemu-nbd not found in PATH - install the package qemu-utils$/m);
}

# The qemu-nbd child of pid, if it has one.
my sub qemu_nbd_child_of {
    my ($pid) = @_;
    opendir(my $dh, '/proc') or die "opendir /proc: $!\n";
    for my $candidate (grep { /^\d+$/ } readdir($dh)) {
        open(my $fh, '<', "/proc/$candidate/stat") or next;
        my $stat = <$fh> // '';
        my ($comm, $ppid) = $stat =~ /^\d+ \((.*)\) \S+ (\d+)/;
        return $candidate if defined($ppid) && $ppid == $pid && $comm eq 'qemu-nbd';
    }
    return undef;
}

# Runs vma with args in the background, kills its qemu-nbd child (or, with
# $kill_vma, vma itself) with SIGKILL half a second into its run, then
# returns vma's exit status, its stderr and the qemu-nbd pid.
my sub run_killing_qemu_nbd {
    my ($kill_vma, @args) = @_;
    my $pid = fork() // die "fork: $!\n";
    if (!$pid) {
        open(STDOUT, '>', "$dir/kill.out") or POSIX::_exit(127);
        open(STDERR, '>', "$dir/kill.err") or POSIX::_exit(127);
        exec($vma, @args) or POSIX::_exit(127);
    }
    my $child;
    for (1 .. 1000) {
        last if waitpid($pid, POSIX::WNOHANG()) == $pid;
        last if $child = qemu_nbd_child_of($pid);
        sleep(0.01);
    }
    sleep(0.5); # well into the transfer
    kill('KILL', $kill_vma ? $pid : $child) if $child;
    waitpid($pid, 0);
    my $status = $?;
    open(my $fh, '<', "$dir/kill.err") or die "open $dir/kill.err: $!\n";
    return ($status, do { local $/; <$fh> } // '', $child);
}

shell("qemu-img create -q -f qcow2 '$dir/slow.qcow2' $SIZE");
# 1 MB/s: the restore of this disk takes seconds, the kill comes well before
write_map("$dir/map-slow", "throttling.bps=1000000:format=qcow2:1:drive-qcow2=$dir/slow.qcow2",
    other_targets('qcow2'));
my ($killed_status, $killed_err, $victim) =
    run_killing_qemu_nbd(0, 'extract', '-r', "$dir/map-slow", "$dir/a.vma", "$dir/killed");
ok($victim, 'vma ran a qemu-nbd child');
is($killed_status >> 8, 1, 'qemu-nbd killed mid-restore: exit status 1');
like($killed_err, qr/^vma: restore failed - write to \Q$dir\E\/slow.qcow2 failed - qemu-nbd was killed by signal 9$/m,
    'qemu-nbd killed mid-restore: message');
ok(!-e "$dir/killed", 'qemu-nbd killed mid-restore: no extract directory left');
is_deeply(leftovers(), [], 'qemu-nbd killed mid-restore: no qemu-nbd, socket or directory left');

# vma itself killed: its qemu-nbd follows (PR_SET_PDEATHSIG), and the socket
# and its directory went as soon as vma had connected
(undef, undef, $victim) = run_killing_qemu_nbd(1, 'extract', '-r', "$dir/map-slow", "$dir/a.vma", "$dir/killed-vma");
ok($victim, 'the killed vma ran a qemu-nbd child');
for (1 .. 500) {
    last if !kill(0, $victim);
    sleep(0.01);
}
is_deeply(leftovers(), [], 'vma killed mid-restore: no qemu-nbd, socket or directory left');
shell("rm -rf '$dir/killed-vma'"); # what a SIGKILL cannot clean up

# --- create from images QEMU opens ------------------------------------------------

# a qcow2 over a raw backing file: data from the backing file, data and zero
# clusters of its own, and unallocated clusters that read as zeros
make_raw("$dir/base.raw", 11);
shell("qemu-img create -q -f qcow2 -b '$dir/base.raw' -F raw '$dir/top.qcow2' $SIZE");
shell("qemu-io -f qcow2 -c 'write -P 0x33 64k 192k' -c 'write -z 1M 512k' -c 'write -P 0x44 3M 4k' '$dir/top.qcow2' >/dev/null");
shell("qemu-img create -q -f qcow2 '$dir/thin.qcow2' $SIZE");
shell("qemu-io -f qcow2 -c 'write -P 0x66 2M 128k' '$dir/thin.qcow2' >/dev/null");
shell("qemu-img convert -q -f raw -O vmdk '$dir/src-vmdk.raw' '$dir/src.vmdk'");
shell("qemu-img convert -q -f raw -O qcow2 '$dir/src-nbd.raw' '$dir/remote.qcow2'");
my $remote = serve("$dir/remote.qcow2", 'qcow2', 'remote-qcow2');
# compressed clusters, which only QEMU reads
shell("qemu-img convert -q -c -f raw -O qcow2 '$dir/src-raw.raw' '$dir/compressed.qcow2'");
# as Proxmox creates them, with some data: allocated clusters that read as zeros
shell("qemu-img create -q -f qcow2 -o preallocation=metadata '$dir/prealloc.qcow2' $SIZE");
shell("qemu-io -f qcow2 -c 'write -P 0x55 1M 256k' -c 'write -P 0x56 4M 64k' '$dir/prealloc.qcow2' >/dev/null");

my %create = (
    'drive-top'   => ["drive-top=$dir/top.qcow2",              "$dir/top.qcow2"],
    'drive-thin'  => ["drive-thin=$dir/thin.qcow2",            "$dir/thin.qcow2"],
    'drive-vmdk'  => ["drive-vmdk=$dir/src.vmdk",              "$dir/src.vmdk"],
    'drive-nbd'   => ["drive-nbd=nbd:unix:$remote",            "$dir/remote.qcow2"],
    'drive-json'  => [qq(drive-json=json:{"driver":"qcow2","file":{"driver":"file","filename":"$dir/thin.qcow2"}}),
                      "$dir/thin.qcow2"],
    'drive-compressed' => ["drive-compressed=$dir/compressed.qcow2", "$dir/compressed.qcow2"],
    'drive-prealloc'   => ["drive-prealloc=$dir/prealloc.qcow2",     "$dir/prealloc.qcow2"],
);
my @order = sort keys %create;
qemu_nbd_runs();
($status, undef, $err) = run_captured($vma, 'create', '-v', "$dir/c.vma", map { $create{$_}[0] } @order);
is($status, 0, 'create from qcow2 (backing file), qcow2 (thin), vmdk, nbd: and json:') or diag($err);
like($err, qr/^image drive-thin: size=$SIZE zeros=@{[$SIZE - 128 * $KiB]} saved=@{[128 * $KiB]}$/m,
    'a thin qcow2 is archived at its virtual size with its data only');
like($err, qr/^image drive-prealloc: size=$SIZE zeros=@{[$SIZE - 320 * $KiB]} saved=@{[320 * $KiB]}$/m,
    'a preallocated qcow2 too');
# the qcow2 images with data outside their file (a backing file, compressed
# clusters) went through qemu-nbd; thin and prealloc were read from their files
is_deeply([sort grep { /qcow2$/ } @{qemu_nbd_runs()}], ["$dir/compressed.qcow2", "$dir/top.qcow2"],
    'qemu-nbd read the qcow2 images with data outside their file, not the others');
($status, $out, $err) = run_captured($vma, 'extract', "$dir/c.vma", "$dir/c");
is($status, 0, 'extract the created archive') or diag($err);
for my $name (@order) {
    my $ref = as_raw($create{$name}[1], "$dir/ref-$name.raw");
    is(compare('raw', "$dir/c/disk-$name.raw", 'raw', $ref), 'identical',
        "$name read back as qemu-img convert -O raw reads it");
}
is_deeply(leftovers(), [], 'no qemu-nbd, socket or directory left after a create');

# the -d form, repeatable, beside plain arguments
($status, undef, $err) = run_captured($vma, 'create', "$dir/d.vma", '-d', "format=qcow2:drive-scsi0=$dir/top.qcow2",
    '-d', "format=raw:drive-scsi1=$dir/src-raw.raw", "drive-scsi2=$dir/src.vmdk");
is($status, 0, 'create -d format=FMT:DEVNAME=PATH') or diag($err);
($status, $out) = run_captured($vma, 'list', "$dir/d.vma");
like($out, qr/devname: drive-scsi0\n.*devname: drive-scsi1\n.*devname: drive-scsi2\n/s, 'devices in order');
($status, undef, $err) = run_captured($vma, 'extract', "$dir/d.vma", "$dir/d");
is($status, 0, 'extract the -d archive') or diag($err);
is(compare('raw', "$dir/d/disk-drive-scsi0.raw", 'raw', "$dir/ref-drive-top.raw"), 'identical', '-d qcow2');
is(compare('raw', "$dir/d/disk-drive-scsi1.raw", 'raw', "$dir/src-raw.raw"), 'identical', '-d raw');
is(compare('raw', "$dir/d/disk-drive-scsi2.raw", 'raw', "$dir/ref-drive-vmdk.raw"), 'identical', 'probed vmdk');

# format=raw reads a qcow2 file as its bytes, as QEMU would
($status, undef, $err) = run_captured($vma, 'create', "$dir/r.vma", '-d', "format=raw:drive-scsi0=$dir/thin.qcow2");
is($status, 0, 'create -d format=raw of a qcow2 file') or diag($err);
($status, $out) = run_captured($vma, 'list', "$dir/r.vma");
my $container_size = -s "$dir/thin.qcow2";
like($out, qr/size: $container_size devname: drive-scsi0/, 'archives the container file');

# --- create failures ------------------------------------------------------------

my sub check_failed_create {
    my ($what, $args, $message) = @_;
    unlink("$dir/f.vma");
    my ($status, undef, $err) = run_captured($vma, 'create', "$dir/f.vma", @$args);
    is($status >> 8, 1, "$what: exit status 1");
    like($err, $message, "$what: message");
    ok(!-e "$dir/f.vma", "$what: no archive left");
    is_deeply(leftovers(), [], "$what: no qemu-nbd, socket or directory left");
}

check_failed_create('create from a missing qcow2', ['-d', "format=qcow2:drive-scsi0=$dir/missing.qcow2"],
    qr/^vma: bdrv_open '\Q$dir\E\/missing.qcow2' failed - Could not open '\Q$dir\E\/missing.qcow2': No such file or directory$/m);
check_failed_create('create -d with a malformed argument', ['-d', "drive-scsi0=$dir/top.qcow2"],
    qr/^vma: invalid device 'drive-scsi0=\Q$dir\E\/top.qcow2' - expected format=<format>:<device name>=<path>$/m);
{
    local $ENV{PATH} = "$dir/empty-path";
    check_failed_create('create with qemu-nbd missing', ["drive-scsi0=$dir/top.qcow2"],
        qr/^vma: bdrv_open '\Q$dir\E\/top.qcow2' failed - qemu-nbd not found in PATH - install the package qemu-utils$/m);
}

# qemu-nbd killed while create reads from it: the archive goes to a FIFO
# that is not read until the kill, so vma is stuck well before the end; the
# data is in a backing file, which only QEMU reads
shell("qemu-img create -q -f qcow2 '$dir/big-base.qcow2' 64M");
shell("qemu-io -f qcow2 -c 'write -P 0x77 0 64M' '$dir/big-base.qcow2' >/dev/null");
shell("qemu-img create -q -f qcow2 -b '$dir/big-base.qcow2' -F qcow2 '$dir/big.qcow2'");
POSIX::mkfifo("$dir/out.fifo", 0600) or die "mkfifo: $!\n";
{
    my $pid = fork() // die "fork: $!\n";
    if (!$pid) {
        open(STDERR, '>', "$dir/create-kill.err") or POSIX::_exit(127);
        exec($vma, 'create', "$dir/out.fifo", "drive-scsi0=$dir/big.qcow2") or POSIX::_exit(127);
    }
    # vma opens the FIFO after its qemu-nbd serves the image
    open(my $fifo, '<', "$dir/out.fifo") or die "open $dir/out.fifo: $!\n";
    my $victim = qemu_nbd_child_of($pid);
    ok($victim, 'create runs a qemu-nbd child');
    kill('KILL', $victim) if $victim;
    binmode($fifo);
    1 while read($fifo, my $buf, 1 << 20);
    close($fifo);
    waitpid($pid, 0);
    is($? >> 8, 1, 'qemu-nbd killed mid-create: exit status 1');
    open(my $fh, '<', "$dir/create-kill.err") or die "open: $!\n";
    my $text = do { local $/; <$fh> } // '';
    like($text, qr/^vma: creating vma archive failed - read error on '\Q$dir\E\/big.qcow2' - qemu-nbd was killed by signal 9$/m,
        'qemu-nbd killed mid-create: message');
    is_deeply(leftovers(), [], 'qemu-nbd killed mid-create: no qemu-nbd, socket or directory left');
}

done_testing();
