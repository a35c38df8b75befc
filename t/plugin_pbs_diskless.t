#!/usr/bin/perl
# PBS backups of a VM without disks go through proxmox-backup-client: the
# command line (repository, namespace, key files), its environment
# (password, fingerprint) and the encryption key checks with their messages.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use VZDumpReleases; # runs this file on PVE 8 and on PVE 9

use JSON;
use Test::More;

use VZDumpScenario;
use PVE::Tools;

my $node = VZDumpScenario->new();
my $vmid = 130;
$node->create_sample_vm($vmid, name => 'pbs-vm', disks => [], plain => 1);

my $priv = $node->root . "/etc/pve/priv/storage";
PVE::Tools::file_set_contents("$priv/pbs1.pw", "s3cret\n");
my $record = $node->root . "/pbs-client.json";
$ENV{PBS_CLIENT_RECORD} = $record;
{
    no warnings 'once';
    $PVE::VZDump::QemuServer::pbs_client_binary = "$FindBin::Bin/bin/proxmox-backup-client";
}

my sub run_pbs {
    my (%scfg) = @_;
    unlink $record;
    my $scfg = { type => 'pbs', server => 'pbs.example.com', datastore => 'store1', %scfg };
    my $run = $node->run_backup($vmid, mode => 'snapshot', pbs => 1, storage => 'pbs1', scfg => $scfg);
    $run->{client} = -f $record ? decode_json(PVE::Tools::file_get_contents($record)) : undef;
    $run->{messages} = VZDumpScenario::messages($run->{task_log});
    return $run;
}

my sub files_of {
    my ($run) = @_;
    my $tmpdir = $run->{task}->{tmpdir};
    return ("qemu-server.conf:$tmpdir/qemu-server.conf", "fw.conf:$tmpdir/qemu-server.fw");
}

# plain: namespace, fingerprint, user and port in the repository
{
    my $run = run_pbs(
        namespace => 'dept/a', fingerprint => 'aa:bb:cc', username => 'backup@pbs', port => 8008,
    );
    is($run->{task}->{state}, 'ok', 'diskless PBS backup succeeds') or diag($run->{task}->{msg});
    my $time = $run->{task}->{backup_time};
    my @argv = (
        'backup', '--repository', 'backup@pbs@pbs.example.com:8008:store1', '--backup-type', 'vm',
        '--backup-id', $vmid, '--backup-time', $time, '--ns', 'dept/a', files_of($run),
    );
    is_deeply($run->{client}->{argv}, \@argv, 'client arguments');
    is($run->{client}->{password}, 's3cret', 'password in PBS_PASSWORD');
    is($run->{client}->{fingerprint}, 'aa:bb:cc', 'fingerprint in PBS_FINGERPRINT');
    ok(
        (grep { m{^INFO: creating Proxmox Backup Server archive 'vm/$vmid/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ'$} }
            $run->{messages}->@*),
        'PBS target announced',
    );
    my $client = $PVE::VZDump::QemuServer::pbs_client_binary;
    my @tail = grep { m/no disks|diskless|\Q$client\E/ } $run->{messages}->@*;
    is_deeply(
        \@tail,
        [
            "INFO: backup contains no disks",
            "INFO: starting diskless backup",
            "INFO: " . join(' ', $client, @argv),
        ],
        'log lines of the diskless PBS path',
    ) or diag(explain($run->{messages}));
    # stdout and stderr of the client are two pipes: their lines may interleave
    is_deeply(
        [sort grep { m/Starting backup|Client name/ } $run->{messages}->@*],
        ["INFO: Client name: testnode", "INFO: Starting backup: vm/$vmid/..."],
        'the client output is logged',
    );
}

# default user and port, no namespace, no fingerprint
{
    my $run = run_pbs();
    my @argv = $run->{client}->{argv}->@*;
    is($argv[2], 'root@pam@pbs.example.com:store1', 'default user, default port omitted');
    ok(!(grep { $_ eq '--ns' } @argv), 'no namespace option');
    ok(!defined($run->{client}->{fingerprint}), 'no fingerprint in the environment');
}

# encryption key
PVE::Tools::file_set_contents("$priv/pbs1.enc", "{}\n");
{
    my $run = run_pbs();
    ok((grep { $_ eq 'INFO: enabling encryption' } $run->{messages}->@*), 'encryption announced');
    my @argv = $run->{client}->{argv}->@*;
    is_deeply([@argv[9, 10]], ['--keyfile', "$priv/pbs1.enc"], 'key file passed');
    ok(!(grep { $_ eq '--master-pubkey-file' } @argv), 'no master key');

    $run = run_pbs('master-pubkey' => 'xyz');
    is($run->{task}->{state}, 'err', 'master key configured without its file fails');
    is($run->{task}->{msg}, "master public key configured but no key file found\n", 'with the original message');
}

# encryption key and master key
PVE::Tools::file_set_contents("$priv/pbs1.master.pem", "pem\n");
{
    my $run = run_pbs();
    ok((grep { $_ eq 'INFO: enabling encryption with master key feature' } $run->{messages}->@*),
        'master key announced');
    my @argv = $run->{client}->{argv}->@*;
    is_deeply(
        [@argv[9 .. 12]],
        ['--keyfile', "$priv/pbs1.enc", '--master-pubkey-file', "$priv/pbs1.master.pem"],
        'key file and master key passed',
    );
}

# master key without encryption key: a warning, unencrypted
unlink "$priv/pbs1.enc";
{
    my $run = run_pbs();
    is($run->{task}->{state}, 'ok', 'backup without key succeeds');
    ok(
        (grep {
            $_ eq "WARN: backup target storage is configured with master-key, but no encryption key set!"
                . " Ignoring master key settings and creating unencrypted backup."
        } $run->{messages}->@*),
        'warned about the unused master key',
    );
    ok(!(grep { m/^--(?:keyfile|master-pubkey-file)$/ } $run->{client}->{argv}->@*), 'no key options');
}

# encryption configured but the key file is missing
{
    my $run = run_pbs('encryption-key' => '12:34');
    is($run->{task}->{state}, 'err', 'missing key file fails the backup');
    is($run->{task}->{msg}, "encryption configured ('12:34') but no encryption key file found!\n", 'message');
    ok(!defined($run->{client}), 'client not started');
}

# the client failing fails the backup with run_command's message
{
    local $ENV{PBS_CLIENT_EXIT} = 2;
    my $run = run_pbs();
    is($run->{task}->{state}, 'err', 'client failure fails the backup');
    like($run->{task}->{msg}, qr/^command '.*proxmox-backup-client backup .*' failed: exit code 2\n$/, 'message');
}

done_testing();
