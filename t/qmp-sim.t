#!/usr/bin/perl
# The pve-qemu simulator through the engine's Perl API, for the parts the
# plugin's provider and PBS paths use: query-proxmox-support with overrides,
# a PBS backup with its bitmap info, backup access with an NBD export, the
# agent, and the command log the scenario tests read.

use strict;
use warnings;

use File::Temp qw(tempdir);
use JSON::PP;
use POSIX ();
use Test::More;
use Time::HiRes qw(usleep);

use PVE::VZDump::QemuServer::Engine;

my $sim = $ENV{PVE_QEMU_SIM} // 'build/pve-qemu-sim';
plan(skip_all => "$sim not built") if !-x $sim;

my $dir = tempdir(CLEANUP => 1);
my ($qmp, $qga, $log) = ("$dir/100.qmp", "$dir/100.qga", "$dir/commands.log");

my sub image {
    my ($name, $size) = @_;
    open(my $fh, '>', "$dir/$name") or die "create $name: $!\n";
    truncate($fh, $size) or die "truncate: $!\n";
    close($fh);
    return "$dir/$name";
}

my $disk0 = image('disk0.raw', 8 * 1024 * 1024);
my $efi = image('efi.raw', 528 * 1024);

my $pid = fork() // die "fork: $!\n";
if (!$pid) {
    exec($sim, '--qmp', $qmp, '--qga', $qga, '--log', $log, '--pidfile', "$dir/100.pid",
	'--drive', "drive-scsi0=$disk0", '--drive', "drive-efidisk0=$efi",
	'--support', 'backup-access-api=false', '--support', 'pbs-masterkey=absent',
	'--pbs-dirty', '1048576', '--fs-count', '2') or POSIX::_exit(127);
}
for (1 .. 200) { last if -S $qmp; usleep(50_000) }
ok(-S $qmp, 'simulator listens');

my sub qmp { PVE::VZDump::QemuServer::Engine::qmp_cmd($qmp, 100, @_) }

my $support = qmp('query-proxmox-support');
ok($support->{'pbs-dirty-bitmap'}, 'support flags are true by default');
ok(!$support->{'backup-access-api'}, '--support KEY=false');
ok(!exists($support->{'pbs-masterkey'}), '--support KEY=absent drops the flag');
like($support->{'pbs-library-version'}, qr/^\d/, 'library version string');

# PBS: validated, progress simulated; incremental with the bitmap
my $pbs = {
    'backup-file' => 'root@pam@localhost:store', format => 'pbs', password => 'secret',
    'backup-id' => '100', 'backup-time' => time(), 'use-dirty-bitmap' => JSON::PP::true,
    devlist => 'drive-scsi0',
};
my sub run_pbs {
    my $uuid = qmp('backup', $pbs)->{UUID};
    my $status;
    for (1 .. 200) {
	$status = qmp('query-backup');
	last if $status->{status} ne 'active';
	usleep(20_000);
    }
    is($status->{uuid}, $uuid, 'query-backup reports the job');
    return $status;
}
my $first = run_pbs();
is($first->{status}, 'done', 'first PBS backup done');
is($first->{reused}, 0, '... nothing reused');
is(qmp('query-pbs-bitmap-info')->[0]->{action}, 'new', '... bitmap new');
my $second = run_pbs();
is($second->{dirty}, 1024 * 1024, 'incremental PBS backup: --pbs-dirty bytes dirty');
is($second->{reused}, 7 * 1024 * 1024, '... the rest reused');
is($second->{transferred}, 1024 * 1024, '... only dirty bytes transferred');
is(qmp('query-pbs-bitmap-info')->[0]->{action}, 'used', '... bitmap used');

# backup access for an external provider, exported over NBD
eval { qmp('backup-access-setup', { 'target-id' => 'snapshot-access:ext', devices => [{ device => 'drive-scsi0' }] }) };
is($@, "VM 100 qmp command 'backup-access-setup' failed - Device 'drive-scsi0-fleecing' not found\n",
    'backup access needs fleecing images');
my $fleece = image('fleece.raw', 8 * 1024 * 1024);
is(PVE::VZDump::QemuServer::Engine::hmp_cmd(
    $qmp, 100, qq(drive_add auto "file=$fleece,if=none,id=drive-scsi0-fleecing,format=raw")), "OK\r\n",
    'fleecing drive added');
my $access = qmp('backup-access-setup', {
    'target-id' => 'snapshot-access:ext', devices => [{ device => 'drive-scsi0', 'bitmap-mode' => 'new' }],
}, 60);
is($access->[0]->{size}, 8 * 1024 * 1024, 'access setup reports the size');
is($access->[0]->{'bitmap-name'}, 'snapshot-access:ext', '... bitmap named after the target');
is_deeply(qmp('nbd-server-start', { addr => { type => 'unix', data => { path => "$dir/nbd.sock" } } }), {},
    'nbd-server-start');
is_deeply(qmp('block-export-add', {
    type => 'nbd', id => 'drive-scsi0', 'node-name' => $access->[0]->{'node-name'}, writable => JSON::PP::false,
}), {}, 'the access node can be exported');
eval { qmp('backup-access-teardown', { 'target-id' => 'other', success => JSON::PP::true }) };
is($@, "VM 100 qmp command 'backup-access-teardown' failed - cannot teardown backup access - "
    . "got target other instead of snapshot-access:ext\n", 'teardown checks the target');
is_deeply(qmp('backup-access-teardown', { 'target-id' => 'snapshot-access:ext', success => JSON::PP::true }),
    {}, 'teardown');
is(PVE::VZDump::QemuServer::Engine::hmp_cmd($qmp, 100, 'drive_del drive-scsi0-fleecing'), '', 'drive_del');

# the agent
is(PVE::VZDump::QemuServer::Engine::qga_cmd($qga, 100, 'guest-fsfreeze-freeze'), 2, 'freeze: --fs-count');
is_deeply(PVE::VZDump::QemuServer::Engine::qga_cmd($qga, 100, 'guest-ping'), {}, 'a frozen agent answers pings');
is(PVE::VZDump::QemuServer::Engine::qga_cmd($qga, 100, 'guest-get-osinfo')->{error}->{desc},
    'Command guest-get-osinfo has been disabled: the agent is in frozen state', '... but refuses the rest');
is(PVE::VZDump::QemuServer::Engine::qga_cmd($qga, 100, 'guest-fsfreeze-thaw'), 2, 'thaw');

# the log holds every command with its arguments
is_deeply(qmp('quit'), {}, 'quit');
waitpid($pid, 0);
is($?, 0, 'simulator exited cleanly');
ok(!-e $qmp && !-e "$dir/100.pid", 'socket and pid file removed');
open(my $fh, '<', $log) or die "log: $!\n";
my @log = map { decode_json($_) } <$fh>;
my (undef, $setup) = grep { $_->{execute} eq 'backup-access-setup' } @log;
is($setup->{arguments}->{devices}->[0]->{'bitmap-mode'}, 'new', 'the log records the arguments');
my @agent = map { $_->{execute} } grep { $_->{socket} eq 'qga' } @log;
is_deeply([@agent[0 .. 1]], ['guest-sync-delimited', 'guest-fsfreeze-freeze'], 'agent commands logged with the sync');

done_testing();
