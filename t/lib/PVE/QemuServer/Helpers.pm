package PVE::QemuServer::Helpers;

# Sockets and pid files of the node's VMs. qemu-server 9 names a socket by a
# QMP peer ({name, id, type}, see Monitor::vm_qmp_peer) and the pid file with
# vm_pidfile_name; qemu-server 8 takes the VMID (and a flag for the agent) and
# has pidfile_name. Each release gets only its own signatures.

use strict;
use warnings;

use IO::File;

use PVE::TestNode;

my sub run_dir { return PVE::TestNode::run_dir() }

my sub vm_pid_path {
    my ($vmid) = @_;
    return run_dir() . "/$vmid.pid";
}

if (PVE::TestNode::release() >= 9) {
    *qmp_socket = sub {
        my ($peer) = @_;
        my ($id, $type) = $peer->@{qw(id type)};
        return run_dir() . "/${id}.${type}";
    };
    *vm_pidfile_name = \&vm_pid_path;
} else {
    *qmp_socket = sub {
        my ($vmid, $qga) = @_;
        my $sockettype = $qga ? 'qga' : 'qmp';
        return run_dir() . "/$vmid.$sockettype";
    };
    *pidfile_name = \&vm_pid_path;
}

# The pid of the VM's QEMU if the pid file names a live process that was
# started with that very pid file (as QEMU's -pidfile option), else undef.
sub vm_running_locally {
    my ($vmid) = @_;

    my $pidfile = vm_pid_path($vmid);
    my $fh = IO::File->new("<$pidfile") or return undef;
    my $line = <$fh>;
    close($fh);
    return undef if !defined($line) || $line !~ m/^(\d+)$/;
    my $pid = $1;

    my $cmdline_fh = IO::File->new("</proc/$pid/cmdline") or return undef;
    my $cmdline = do { local $/; <$cmdline_fh> } // '';
    close($cmdline_fh);
    my @args = split(/\0/, $cmdline);
    for my $i (0 .. $#args - 1) {
        next if $args[$i] !~ m/^--?pidfile$/;
        next if $args[$i + 1] ne $pidfile;
        my $stat_fh = IO::File->new("</proc/$pid/stat") or return undef;
        my $stat = <$stat_fh> // '';
        close($stat_fh);
        return undef if $stat =~ m/^\d+ \(.*\) Z /; # a zombie is gone
        return $pid;
    }
    return undef;
}

1;
