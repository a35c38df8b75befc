package PVE::QemuServer::Monitor;

# PVE's monitor helpers, on the engine's QMP client, for the other doubles
# and (on qemu-server 9) the plugin. qemu-server 8: qmp_cmd($vmid, $cmd) by
# VMID, errors name "qmp" also for agent commands. qemu-server 9: a QMP peer
# ({name, id, type}) from vm_qmp_peer, qmp_cmd($peer, $execute, %arguments)
# with the 'noerr' argument, errors naming the peer's type.

use strict;
use warnings;

use PVE::QemuServer::Helpers;
use PVE::TestNode;
use PVE::VZDump::QemuServer::Engine;

use base qw(Exporter);

my $qemu_server_9 = PVE::TestNode::release() >= 9;

our @EXPORT_OK = $qemu_server_9 ? qw(mon_cmd qmp_cmd vm_qmp_peer) : qw(mon_cmd);

# One command through the engine, which dies with PVE::QMPClient's text
# "VM <vmid> qmp command '<execute>' failed - <queue error>".
my sub engine_cmd {
    my ($vmid, $execute, $arguments, $timeout) = @_;

    if ($execute =~ m/^guest-/) {
        return PVE::VZDump::QemuServer::Engine::qga_cmd(
            PVE::TestNode::vm_socket($vmid, 'qga'), $vmid, $execute, $arguments, $timeout,
        );
    }
    return PVE::VZDump::QemuServer::Engine::qmp_cmd(
        PVE::TestNode::vm_socket($vmid, 'qmp'), $vmid, $execute, $arguments, $timeout,
    );
}

# PVE::QMPClient's default timeouts of qemu-server 9 where they differ from
# 8's (the engine's table)
my $qemu_server_9_timeouts = {
    'blockdev-add' => 60,
    'blockdev-del' => 10 * 60,
    'object-add' => 60,
    'object-del' => 60,
};

if ($qemu_server_9) {
    *vm_qmp_peer = sub {
        my ($vmid) = @_;
        return { name => "VM $vmid", id => $vmid, type => 'qmp' };
    };

    *qmp_cmd = sub {
        my ($peer, $execute, %arguments) = @_;

        my ($noerr, $timeout) = delete(@arguments{qw(noerr timeout)});
        $timeout //= $qemu_server_9_timeouts->{$execute};
        die "qmp_cmd - unknown peer type $peer->{type}\n"
            if $peer->{type} ne 'qmp' && $peer->{type} ne 'qga';
        die "$peer->{name} not running\n"
            if !PVE::QemuServer::Helpers::vm_running_locally($peer->{id});
        die "unable to open monitor socket\n" if !-e PVE::QemuServer::Helpers::qmp_socket($peer);

        my $res = eval { engine_cmd($peer->{id}, $execute, \%arguments, $timeout) };
        my $err = $@ or return $res;
        # PVE::QMPClient of qemu-server 9 names the peer and its type
        $err =~ s/^\Q$peer->{name}\E qmp command /$peer->{name} $peer->{type} command /;
        die $err if !$noerr;
        # with noerr, the caller gets the queue's own error text
        my $queue_error = $err =~ s/^\Q$peer->{name}\E \S+ command '[^']*' failed - //r;
        my $error = { error => $queue_error };
        $error->{'error-is-timeout'} = 1 if $queue_error eq "got timeout\n";
        return $error;
    };

    *mon_cmd = sub {
        my ($vmid, $execute, %params) = @_;

        my $type = ($execute =~ /^guest\-+/) ? 'qga' : 'qmp';
        return qmp_cmd({ name => "VM $vmid", id => $vmid, type => $type }, $execute, %params);
    };

    *hmp_cmd = sub {
        my ($vmid, $cmdline, $timeout) = @_;

        return qmp_cmd(
            vm_qmp_peer($vmid), 'human-monitor-command',
            'command-line' => $cmdline,
            timeout => $timeout,
        );
    };
} else {
    *qmp_cmd = sub {
        my ($vmid, $cmd) = @_;

        my $arguments = { %{ $cmd->{arguments} // {} } };
        my $timeout = delete $arguments->{timeout};

        die "VM $vmid not running\n" if !PVE::QemuServer::Helpers::vm_running_locally($vmid);
        die "unable to open monitor socket\n" if !-e PVE::QemuServer::Helpers::qmp_socket($vmid);

        return engine_cmd($vmid, $cmd->{execute}, $arguments, $timeout);
    };

    *mon_cmd = sub {
        my ($vmid, $execute, %params) = @_;

        return qmp_cmd($vmid, { execute => $execute, arguments => \%params });
    };

    *hmp_cmd = sub {
        my ($vmid, $cmdline, $timeout) = @_;

        die "VM $vmid not running\n" if !PVE::QemuServer::Helpers::vm_running_locally($vmid);
        return PVE::VZDump::QemuServer::Engine::hmp_cmd(
            PVE::TestNode::vm_socket($vmid, 'qmp'), $vmid, $cmdline, $timeout,
        );
    };
}

1;
