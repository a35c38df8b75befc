#!/usr/bin/perl
# The vma command on archives it did not write: a real Proxmox archive piece
# (../shared/samples) and damaged archives. Every failure is exit status 1
# with a message on stderr, never a signal.

use strict;
use warnings;

use File::Temp qw(tempdir);
use Test::More;

use lib 't/lib';
use CapturedRun qw(run_captured);

my $vma = 'build/vma';
plan skip_all => "$vma not built" if !-x $vma;

my $dir = tempdir(CLEANUP => 1);

my sub slurp {
    my ($path) = @_;
    local $/;
    open(my $fh, '<', $path) or die "open $path: $!\n";
    binmode($fh);
    return scalar(<$fh>);
}

my sub spew {
    my ($path, $data) = @_;
    open(my $fh, '>', $path) or die "open $path: $!\n";
    binmode($fh);
    print $fh $data;
    close($fh) or die;
}

SKIP: {
    my $sample = '../shared/samples/proxmox-live-backup-piece.vma.gz';
    skip "sample $sample not present", 9 if !-f $sample;
    system("gzip -dc '$sample' > '$dir/sample.vma'") == 0 or die "gunzip failed\n";

    my ($status, $out, $err) = run_captured($vma, 'list', "$dir/sample.vma");
    is($status, 0, 'list reads the Proxmox archive');
    like($out, qr/\ACFG: size: 417 name: qemu-server.conf\nDEV: dev_id=1 size: 10737418240 devname: drive-scsi0\nCTIME: \w{3} Oct 31 \d\d:\d\d:\d\d 2021\n\z/,
	'with its config, device and ctime');
    ($status, $out) = run_captured($vma, 'config', "$dir/sample.vma");
    is(length($out), 417, 'config prints the whole VM config');
    like($out, qr/^scsi0: /m, 'which is a qemu-server config');

    ($status, $out, $err) = run_captured($vma, 'verify', "$dir/sample.vma");
    is($status, 1 << 8, 'the incomplete archive fails verify with exit status 1');
    like($err, qr/^vma: verify failed - detected missing cluster \d+ for stream drive-scsi0/,
	'naming the missing cluster');

    system("gzip -dc '$sample' | $vma verify - 2>'$dir/err'");
    is($? >> 8, 1, 'the same from stdin');

    # cut right after the header: Proxmox's vma calls this good
    my $data = slurp("$dir/sample.vma");
    my $header_size = unpack('N', substr($data, 56, 4));
    spew("$dir/head.vma", substr($data, 0, $header_size));
    ($status, undef, $err) = run_captured($vma, 'verify', "$dir/head.vma");
    is($status, 1 << 8, 'an archive cut after its header fails verify');
    like($err, qr/detected missing cluster 0 for stream drive-scsi0/, 'as a missing cluster');
}

# a small archive of our own, damaged in several ways
system("head -c 300000 /dev/urandom > '$dir/disk.img'") == 0 or die;
my ($status, undef, $err) = run_captured($vma, 'create', "$dir/ok.vma", "drive-scsi0=$dir/disk.img");
is($status, 0, 'create the archive to damage') or diag($err);
my $good = slurp("$dir/ok.vma");
my $header_size = unpack('N', substr($good, 56, 4));

my @cases = (
    ['truncated inside the header', substr($good, 0, 5000), qr/can't read vma header - got EOF/],
    ['truncated inside the header data', substr($good, 0, 12300), qr/can't read vma header data/],
    ['truncated inside an extent header', substr($good, 0, $header_size + 100),
	qr/read short extent \(100 bytes\)/],
    ['truncated inside the payload', substr($good, 0, length($good) - 10), qr/short vma extent/],
    ['a flipped header byte', do { my $d = $good; substr($d, 100, 1) = "\x01"; $d },
	qr/wrong vma header chechsum/],
    ['a flipped extent header byte', do { my $d = $good; substr($d, $header_size + 45, 1) = "\xff"; $d },
	qr/wrong vma extent header chechsum/],
    ['not a vma file', "hello\n" x 3000, qr/not a vma file - wrong magic number/],
    ['an empty file', '', qr/can't read vma header - got EOF/],
);
for my $case (@cases) {
    my ($name, $data, $re) = @$case;
    spew("$dir/bad.vma", $data);
    for my $cmd (['verify'], ['extract', "$dir/bad.vma", "$dir/x-$name"]) {
	my @args = $cmd->[0] eq 'verify' ? ('verify', "$dir/bad.vma") : @$cmd;
	my ($status, $out, $err) = run_captured($vma, @args);
	is($status, 1 << 8, "$name: $cmd->[0] exits 1");
	like($err, $re, "$name: $cmd->[0] says why");
    }
    ok(!-e "$dir/x-$name", "$name: a failed extract leaves nothing behind");
}

done_testing();
