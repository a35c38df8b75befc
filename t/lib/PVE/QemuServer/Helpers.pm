package PVE::QemuServer::Helpers;

use strict;
use warnings;

use IO::File;

use PVE::TestNode;

our $var_run_tmpdir;

my sub run_dir { return $var_run_tmpdir // PVE::TestNode::run_dir() }

sub qmp_socket {
    my ($vmid, $qga) = @_;

    my $sockettype = $qga ? 'qga' : 'qmp';
    return run_dir() . "/$vmid.$sockettype";
}

sub pidfile_name {
    my ($vmid) = @_;

    return run_dir() . "/$vmid.pid";
}

# The pid of the VM's QEMU if the pid file names a live process that was
# started with that very pid file (as QEMU's -pidfile option), else undef.
sub vm_running_locally {
    my ($vmid) = @_;

    my $pidfile = pidfile_name($vmid);
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
