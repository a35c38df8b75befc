#!/usr/bin/perl
# The compressor pipe of a VMA backup of a running VM: none, gzip, pigz,
# lzo and zstd with threads, to a file and to vzdump's stdout handle. Each
# archive decompresses, verifies and matches the disks; the compressor
# leaves no child process or fd behind.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use VZDumpReleases; # runs this file on PVE 8 and on PVE 9

use Test::More;

use VZDumpScenario;

plan skip_all => "the pve-qemu simulator is not built" if !-x PVE::TestNode::simulator();

my $node = VZDumpScenario->new();
my $pve9 = VZDumpScenario::pve9();

# PVE 9 announces the QMP batch that hands the compressor's pipe to QEMU
my sub check_job_start {
    my ($run, $what) = @_;
    my $messages = VZDumpScenario::messages($run->{task_log});
    my @start = grep { m/starting backup via QMP command|started backup task/ } @$messages;
    is(scalar(@start), $pve9 ? 2 : 1, "$what: job start logged as the release does");
    is($start[0], 'INFO: starting backup via QMP command', "$what: the QMP batch announced") if $pve9;
    is_deeply([grep { m/^(?:getfd|backup)$/ } VZDumpScenario::commands($run)->@*], ['getfd', 'backup'],
        "$what: getfd and backup");
}
my $vmid = 160;
$node->create_sample_vm($vmid);
$node->start_vm($vmid);

my @cases = (
    [{ compress => 0 }, qr/\.vma$/],
    [{ compress => 'gzip' }, qr/\.vma\.gz$/],
    [{ compress => 'gzip', pigz => 2 }, qr/\.vma\.gz$/],
    [{ compress => 'lzo' }, qr/\.vma\.lzo$/],
    [{ compress => 'zstd', zstd => 2 }, qr/\.vma\.zst$/],
);
for my $case (@cases) {
    my ($opts, $name_re) = @$case;
    my $what = join(' ', map { "$_=$opts->{$_}" } sort keys %$opts);
    my $fds = VZDumpScenario::open_fds();
    my $run = $node->run_backup($vmid, mode => 'snapshot', %$opts);
    is($run->{task}->{state}, 'ok', "$what: backup succeeds") or diag($run->{task}->{msg});
    like($run->{archive}, $name_re, "$what: archive name");
    check_job_start($run, $what);
    is_deeply([$node->verify_archive($run->{archive}, $vmid)], [], "$what: archive matches the disks");
    VZDumpScenario::check_no_leaks($fds, $what);
    unlink $run->{archive};
}

# stdout mode: vzdump's handle is the output, the compressor writes to it
{
    my $out = $node->root . "/stdout.vma.zst";
    open(my $stdout, '>', $out) or die;
    my $run = $node->run_backup($vmid, mode => 'snapshot', compress => 'zstd', stdout => $stdout);
    close($stdout);
    is($run->{task}->{state}, 'ok', 'stdout: backup succeeds') or diag($run->{task}->{msg});
    my $messages = VZDumpScenario::messages($run->{task_log});
    ok((grep { $_ eq 'INFO: sending archive to stdout' } @$messages), 'stdout: announced');
    check_job_start($run, 'stdout');
    ok(!(grep { m/creating vzdump archive|archive file size/ } @$messages), 'stdout: no file lines');
    is_deeply([$node->verify_archive($out, $vmid)], [], 'stdout: archive matches the disks');

    open($stdout, '>', my $plain = $node->root . "/stdout.vma") or die;
    $run = $node->run_backup($vmid, mode => 'snapshot', stdout => $stdout);
    close($stdout);
    is_deeply([$node->verify_archive($plain, $vmid)], [], 'stdout without compressor: archive matches');
}

# bandwidth limit and max-workers reach QEMU as typed numbers
{
    my $run = $node->run_backup($vmid, mode => 'snapshot', bwlimit => 10240,
        performance => { 'max-workers' => 4 });
    my ($backup, $raw) = VZDumpScenario::arguments_of($run, 'backup');
    is($backup->{speed}, 10240 * 1024, 'bwlimit: speed in bytes per second');
    is($backup->{'max-workers'}, 4, 'max-workers passed');
    like($raw, qr/"speed":10485760[,}]/, 'speed is a JSON number');
    like($raw, qr/"max-workers":4[,}]/, 'max-workers is a JSON number');
    ok((grep { $_ eq 'INFO: bandwidth limit: 10240 KiB/s' } VZDumpScenario::messages($run->{task_log})->@*),
        'bwlimit logged by vzdump');
}

$node->stop_vm($vmid);
done_testing();
