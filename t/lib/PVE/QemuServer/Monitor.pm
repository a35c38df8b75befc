package PVE::QemuServer::Monitor;

# PVE's monitor helpers for the other doubles, on the engine's QMP client.

use strict;
use warnings;

use PVE::QemuServer::Helpers;
use PVE::VZDump::QemuServer::Engine;

use base qw(Exporter);
our @EXPORT_OK = qw(mon_cmd);

sub qmp_cmd {
    my ($vmid, $cmd) = @_;

    my $arguments = { %{ $cmd->{arguments} // {} } };
    my $timeout = delete $arguments->{timeout};

    die "VM $vmid not running\n" if !PVE::QemuServer::Helpers::vm_running_locally($vmid);
    my $socket = PVE::QemuServer::Helpers::qmp_socket($vmid);
    die "unable to open monitor socket\n" if !-e $socket;

    if ($cmd->{execute} =~ m/^guest-/) {
        return PVE::VZDump::QemuServer::Engine::qga_cmd(
            PVE::QemuServer::Helpers::qmp_socket($vmid, 1),
            $vmid, $cmd->{execute}, $arguments, $timeout,
        );
    }
    return PVE::VZDump::QemuServer::Engine::qmp_cmd(
        $socket, $vmid, $cmd->{execute}, $arguments, $timeout,
    );
}

sub mon_cmd {
    my ($vmid, $execute, %params) = @_;

    return qmp_cmd($vmid, { execute => $execute, arguments => \%params });
}

sub hmp_cmd {
    my ($vmid, $cmdline, $timeout) = @_;

    my $socket = PVE::QemuServer::Helpers::qmp_socket($vmid);
    die "VM $vmid not running\n" if !PVE::QemuServer::Helpers::vm_running_locally($vmid);
    return PVE::VZDump::QemuServer::Engine::hmp_cmd($socket, $vmid, $cmdline, $timeout);
}

1;
