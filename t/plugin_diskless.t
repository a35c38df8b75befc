#!/usr/bin/perl
# A VM without disks: the plugin runs `vma create` itself (no QEMU), with
# and without compressor, to a file and to stdout. The archive must hold
# the config and the firewall file and verify with our vma.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use VZDumpReleases; # runs this file on PVE 8 and on PVE 9

use Test::More;

use VZDumpScenario;
use PVE::Tools;

my $node = VZDumpScenario->new();
$node->create_sample_vm(120, name => 'diskless', disks => [], plain => 1);
my $vma = VZDumpScenario::vma_binary();

for my $compress (0, 'zstd', 'gzip', 'lzo') {
    my $run = $node->run_backup(120, mode => 'snapshot', compress => $compress);
    my $task = $run->{task};
    is($task->{state}, 'ok', "diskless backup ($compress) succeeds") or diag($task->{msg});

    my ($comp, $ext) = {
        0 => ['cat', 'vma'],
        zstd => ['zstd --threads=1', 'vma.zst'],
        gzip => ['gzip --rsyncable', 'vma.gz'],
        lzo => ['lzop', 'vma.lzo'],
    }->{$compress}->@*;
    like($run->{archive}, qr/\.\Q$ext\E$/, "archive name ends in .$ext");
    my $tmpdir = $task->{tmpdir};
    my $tmptar = $task->{tmptar};
    my @messages = VZDumpScenario::messages($run->{task_log})->@*;
    is_deeply(
        [@messages[2 .. 9]],
        [
            "INFO: status = stopped",
            "INFO: backup mode: stop",
            "INFO: ionice priority: 7",
            "INFO: VM Name: diskless",
            "INFO: creating vzdump archive '$run->{archive}'",
            "INFO: backup contains no disks",
            "INFO: starting diskless backup",
            "INFO: $vma create -v -c $tmpdir/qemu-server.conf -c $tmpdir/qemu-server.fw "
                . "exec:$comp > $tmptar",
        ],
        "log lines of the diskless path ($compress)",
    ) or diag(explain(\@messages));
    ok((grep { m/^INFO: archive file size: \d+KB$/ } @messages), 'archive size logged');
    is($run->{qmp}->@*, 0, 'no QEMU involved');

    my $plain = $node->decompressed_archive($run->{archive});
    my $listing = `'$vma' list '$plain' 2>&1`;
    like($listing, qr/CFG: size: \d+ name: qemu-server\.conf/, 'config in the archive');
    like($listing, qr/CFG: size: \d+ name: qemu-server\.fw/, 'firewall file in the archive');
    my $config = `'$vma' config '$plain'`;
    like($config, qr/^name: diskless$/m, 'vma config prints the VM config');
    is(system("'$vma' verify '$plain' >/dev/null 2>&1"), 0, 'vma verify accepts the archive');
    is_deeply([$node->verify_archive($run->{archive}, 120, disks => [])], [], 'vma extract restores the config');
    unlink $run->{archive};
}

# stdout mode: the archive goes to the handle vzdump passes, no file
my $out = $node->root . "/stdout.vma.zst";
open(my $stdout, '>', $out) or die;
my $run = $node->run_backup(120, mode => 'snapshot', compress => 'zstd', stdout => $stdout);
close($stdout);
is($run->{task}->{state}, 'ok', 'stdout diskless backup succeeds');
my @messages = VZDumpScenario::messages($run->{task_log})->@*;
ok((grep { $_ eq 'INFO: sending archive to stdout' } @messages), 'stdout mode announced');
ok(
    (grep { m/^INFO: \Q$vma\E create -v -c \S+ -c \S+ exec:zstd --threads=1$/ } @messages),
    'no redirection in stdout mode',
);
my $plain = $node->decompressed_archive($out);
is(system("'$vma' verify '$plain' >/dev/null 2>&1"), 0, 'stdout archive verifies');

done_testing();
