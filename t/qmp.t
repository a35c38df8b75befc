#!/usr/bin/perl
# The QMP/agent Perl API: how arguments are typed on the wire and results
# decoded (against a fake peer that echoes what it received), the dies'
# texts, and the calls against a real QEMU (status, getfd with a Perl file
# handle, HMP).

use strict;
use warnings;

use File::Temp qw(tempdir);
use IO::Socket::UNIX;
use JSON::PP;
use POSIX ();
use Socket qw(SOCK_STREAM);
use Test::More;
use Time::HiRes qw(usleep);

use FindBin;
use lib "$FindBin::Bin/lib";

use PVE::VZDump::QemuServer::Engine;
use QemuProbe;

my $engine = 'PVE::VZDump::QemuServer::Engine';
my $dir = tempdir(CLEANUP => 1);
my $json = JSON::PP->new->canonical;

# Serves $count connections on $path in a child: greeting, capabilities, then
# each command answered by $answer->($command) (a JSON text, or undef to stay
# silent). Returns the child's pid.
my sub fake_qmp_peer {
    my ($path, $count, $answer) = @_;
    unlink $path;
    my $listen = IO::Socket::UNIX->new(Type => SOCK_STREAM, Local => $path, Listen => 4)
	or die "listen $path: $!\n";
    my $pid = fork() // die "fork: $!\n";
    if ($pid) {
	close($listen);
	return $pid;
    }
    for (1 .. $count) {
	my $client = $listen->accept() or POSIX::_exit(1);
	print $client qq({"QMP": {"version": {}, "capabilities": []}}\r\n);
	my $buffer = '';
	while (1) {
	    # commands come without a newline: read until a whole object parsed
	    my $got = sysread($client, $buffer, 65536, length($buffer));
	    last if !$got;
	    my $command = eval { JSON::PP->new->decode($buffer) } or next;
	    $buffer = '';
	    my $reply = $command->{execute} eq 'qmp_capabilities' ? '{}' : $answer->($command);
	    next if !defined($reply);
	    print $client qq({"return": $reply, "id": "$command->{id}"}\r\n);
	}
	close($client);
    }
    POSIX::_exit(0);
}

my sub reap { waitpid($_[0], 0) }

# --- argument typing and result decoding -------------------------------------

my $echo = "$dir/echo.qmp";
my $pid = fake_qmp_peer($echo, 2, sub { JSON::PP->new->canonical->encode($_[0]->{arguments}) });

my $number = 42;
my $string = "42";
my $stringified = 7;
my $unused = "$stringified"; # last used as a string: sent as a string
my $arguments = {
    int => $number,
    float_int => 1.0 * 3,
    fraction => 0.5,
    string => $string,
    stringified => $stringified,
    true => JSON::PP::true,
    false => JSON::PP::false,
    ref_true => \1,
    null => undef,
    list => [1, "a", { nested => JSON::PP::true }],
};
my $echoed = $engine->can('qmp_cmd')->($echo, 100, 'echo', $arguments, 5);
is(
    $json->encode($echoed),
    '{"false":false,"float_int":3,"fraction":0.5,"int":42,"list":[1,"a",{"nested":true}],'
	. '"null":null,"ref_true":true,"string":"42","stringified":"7","true":true}',
    'arguments keep their JSON types, as to_json sends them',
);
isa_ok($echoed->{true}, 'JSON::PP::Boolean', 'a true result');
ok($echoed->{true} && !$echoed->{false}, 'booleans are true and false in boolean context');
is($echoed->{null}, undef, 'null is undef');

my $empty = $engine->can('qmp_cmd')->($echo, 100, 'echo', undef, undef);
is(ref($empty), 'HASH', 'undef arguments are sent as {}');
is(scalar(keys %$empty), 0, '... and empty');
reap($pid);

eval { PVE::VZDump::QemuServer::Engine::qmp_cmd($echo, 100, 'echo', [1], 1) };
is($@, "QMP arguments must be a hash reference\n", 'arguments must be a hash');

# --- PVE's die texts ---------------------------------------------------------

my $missing = "$dir/none.qmp";
eval { PVE::VZDump::QemuServer::Engine::qmp_cmd($missing, 100, 'query-status') };
is(
    $@,
    "VM 100 qmp command 'query-status' failed - unable to connect to VM 100 qmp socket - "
	. "No such file or directory\n",
    'connect failure worded as PVE::QMPClient::cmd dies',
);

{
    my @warnings;
    local $SIG{__WARN__} = sub { push @warnings, @_ };
    eval { PVE::VZDump::QemuServer::Engine::qmp_batch($missing, 100, [['stop', {}]]) };
    my $text = "unable to connect to VM 100 qmp socket - No such file or directory\n";
    is($@, $text, 'a batch dies with the bare queue error');
    is_deeply(\@warnings, [$text], '... after warning it, as queue_execute does');
}

my $silent = "$dir/silent.qmp";
$pid = fake_qmp_peer($silent, 1, sub { undef });
eval { PVE::VZDump::QemuServer::Engine::qmp_cmd($silent, 100, 'query-backup', {}, 0.3) };
is($@, "VM 100 qmp command 'query-backup' failed - got timeout\n", 'a silent peer times out');
reap($pid);

# --- guest agent --------------------------------------------------------------

my $qga = "$dir/100.qga";
unlink $qga;
my $agent_listen = IO::Socket::UNIX->new(Type => SOCK_STREAM, Local => $qga, Listen => 1)
    or die "listen $qga: $!\n";
$pid = fork() // die "fork: $!\n";
if (!$pid) {
    my $client = $agent_listen->accept() or POSIX::_exit(1);
    my $sync = JSON::PP->new->decode(scalar(<$client>));
    my $command = JSON::PP->new->decode(scalar(<$client>));
    print $client "\xff{\"return\": $sync->{arguments}->{id}}\n"
	. qq({"error": {"class": "CommandNotFound", "desc": "Command $command->{execute} has been disabled"}}\n);
    sleep(5); # until the client closes
    POSIX::_exit(0);
}
close($agent_listen);
my $agent_error = PVE::VZDump::QemuServer::Engine::qga_cmd($qga, 100, 'guest-fsfreeze-freeze');
is_deeply(
    $agent_error,
    { error => { class => 'CommandNotFound', desc => 'Command guest-fsfreeze-freeze has been disabled' } },
    'an agent error is returned as { error => ... }',
);
kill('TERM', $pid);
reap($pid);

eval { PVE::VZDump::QemuServer::Engine::qga_cmd("$dir/none.qga", 100, 'guest-ping', {}, 3) };
is(
    $@,
    "VM 100 qmp command 'guest-ping' failed - unable to connect to VM 100 qga socket - "
	. "No such file or directory\n",
    'agent connect failure worded as PVE',
);

# --- a real QEMU --------------------------------------------------------------

SKIP: {
    my $qmp = "$dir/100.qmp";
    my $disk = "$dir/disk0.raw";
    if (my $why = QemuProbe::not_installed()) {
	skip($why, 16);
    }
    system("qemu-img create -f raw $disk 32M >/dev/null") == 0 or die "qemu-img create failed\n";
    my @accel = QemuProbe::options();
    my $qemu_pid = fork() // die "fork: $!\n";
    if (!$qemu_pid) {
	open(STDERR, '>', "$dir/qemu.log");
	exec(
	    'qemu-system-x86_64', @accel, '-machine', 'q35', '-nodefaults',
	    '-display', 'none', '-m', '64', '-S', '-name', 'vm100',
	    '-qmp', "unix:$qmp,server=on,wait=off",
	    '-device', 'virtio-scsi-pci,id=scsihw0',
	    '-drive', "file=$disk,if=none,id=drive-scsi0,format=raw,cache=none",
	    '-device', 'scsi-hd,bus=scsihw0.0,channel=0,scsi-id=0,lun=0,drive=drive-scsi0,id=scsi0',
	) or POSIX::_exit(127);
    }
    for (1 .. 200) {
	last if -S $qmp;
	usleep(50_000);
    }
    if (!-S $qmp) {
	kill('KILL', $qemu_pid);
	reap($qemu_pid);
	die "qemu-system-x86_64 @accel did not open its QMP socket: " . `cat '$dir/qemu.log'`;
    }

    my $status = PVE::VZDump::QemuServer::Engine::qmp_cmd($qmp, 100, 'query-status');
    is($status->{status}, 'prelaunch', 'real QEMU: prelaunch');
    ok(!$status->{running}, 'real QEMU: running is false');
    isa_ok($status->{running}, 'JSON::PP::Boolean', 'real QEMU: running');

    is_deeply(PVE::VZDump::QemuServer::Engine::qmp_cmd($qmp, 100, 'cont', {}, 45), {}, 'cont');
    is(PVE::VZDump::QemuServer::Engine::qmp_cmd($qmp, 100, 'query-status')->{status}, 'running', 'running');

    my $blocks = PVE::VZDump::QemuServer::Engine::qmp_cmd($qmp, 100, 'query-block');
    my ($scsi0) = grep { $_->{device} eq 'drive-scsi0' } @$blocks;
    is($scsi0->{inserted}->{image}->{'virtual-size'}, 32 * 1024 * 1024, 'query-block size');

    open(my $target, '>', "$dir/target") or die "open: $!\n";
    my $results = PVE::VZDump::QemuServer::Engine::qmp_batch(
	$qmp, 100, [['getfd', { fdname => 'backup' }], ['query-status', {}]], $target,
    );
    is(scalar(@$results), 2, 'batch: one result per command');
    is($results->[1]->{status}, 'running', 'batch: results in order');
    # a callback runs on its reply and queues more on the same connection
    my @seen;
    $results = PVE::VZDump::QemuServer::Engine::qmp_batch(
	$qmp, 100,
	[
	    ['query-status', {}, sub {
		my ($vmid, $result, $queue) = @_;
		push @seen, "$vmid $result->{status}";
		push $queue->@*, ['query-name', {}, sub { push @seen, "name $_[1]->{name}" }];
	    }],
	    ['query-kvm', {}],
	],
    );
    is_deeply(\@seen, ['100 running', 'name vm100'], 'batch: callbacks see their replies, in order');
    is_deeply([map { exists($_->{status}) ? 'status' : exists($_->{present}) ? 'kvm' : 'name' } @$results],
	['status', 'kvm', 'name'], 'batch: queued commands come after those already queued');
    eval {
	PVE::VZDump::QemuServer::Engine::qmp_batch(
	    $qmp, 100, [['query-status', {}, sub { die "callback died\n" }], ['quit', {}]]);
    };
    is($@, "callback died\n", "batch: a callback's die is the batch's, nothing more sent");
    eval { PVE::VZDump::QemuServer::Engine::qmp_batch($qmp, 100, [['query-status', {}, 'not code']]) };
    is($@, "qmp_batch: a callback must be a code reference\n", 'batch: a callback must be code');
    my $held = grep { (readlink($_) // '') eq "$dir/target" } glob("/proc/$qemu_pid/fd/*");
    ok($held, 'getfd passed the Perl file handle to QEMU');
    is_deeply(
	PVE::VZDump::QemuServer::Engine::qmp_cmd($qmp, 100, 'closefd', { fdname => 'backup' }), {}, 'closefd',
    );

    my $add = qq(drive_add auto "file=$disk,if=none,id=drive-extra,format=raw,read-only=on");
    is(PVE::VZDump::QemuServer::Engine::hmp_cmd($qmp, 100, $add, 60), "OK\r\n", 'hmp drive_add');
    is(PVE::VZDump::QemuServer::Engine::hmp_cmd($qmp, 100, 'drive_del drive-extra'), '', 'hmp drive_del');

    eval { PVE::VZDump::QemuServer::Engine::qmp_cmd($qmp, 100, 'backup', { 'backup-file' => '/dev/null' }) };
    is($@, "VM 100 qmp command 'backup' failed - The command backup has not been found\n",
	'upstream QEMU has no backup command');

    PVE::VZDump::QemuServer::Engine::qmp_cmd($qmp, 100, 'quit');
    reap($qemu_pid);
}

done_testing();
