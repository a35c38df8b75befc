package UpstreamQemu;

# A real, stock QEMU (Debian's qemu-system-x86_64) as a VM's QEMU for the
# upstream-path tests, the benchmark and the demo: no OS, disks attached
# Proxmox style (drive-<key> drives on scsi-hd / virtio-blk devices with the
# key as device id), QMP and pid file where PVE::QemuServer::Helpers looks for
# them. Started as scripts/qemu-probe found QEMU can start on this host.

use strict;
use warnings;

use IO::File;
use JSON;
use POSIX ();
use Time::HiRes qw(usleep);

use PVE::VZDump::QemuServer::Engine;
use QemuProbe;

our $qemu_binary = 'qemu-system-x86_64';

sub slurp {
    my ($path) = @_;
    my $fh = IO::File->new($path, 'r') or return undef;
    local $/;
    return scalar(<$fh>);
}

# Why QEMU cannot be used here (it is not installed), or undef.
sub not_installed {
    return QemuProbe::not_installed();
}

# QEMU's version string, e.g. "7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)".
sub version {
    my ($self) = @_;
    my $v = $self->qmp('query-version');
    return "$v->{qemu}->{major}.$v->{qemu}->{minor}.$v->{qemu}->{micro} ($v->{package})";
}

# Starts QEMU. %param: vmid, qmp (socket path), pidfile, drives => [{ key,
# path, format }] (key scsiN or virtioN), paused (start with -S), qga
# (socket path of an agent chardev nobody answers on), log (QEMU's output).
sub start {
    my ($class, %param) = @_;

    my @cmd = (
        $qemu_binary, QemuProbe::options(), '-machine', 'q35', '-nodefaults', '-nographic',
        '-m', '64', '-name', "vm$param{vmid}", '-qmp', "unix:$param{qmp},server=on,wait=off",
        '-pidfile', $param{pidfile}, '-device', 'virtio-scsi-pci,id=scsihw0',
    );
    push @cmd, '-S' if $param{paused};
    my $lun = 0;
    for my $drive ($param{drives}->@*) {
        my $key = $drive->{key};
        # file.locking=off: the storage double runs a plain `qemu-img info` on the
        # live images, which QEMU's image lock would refuse
        push @cmd, '-drive', "file=$drive->{path},if=none,id=drive-$key,format=$drive->{format},"
            . "cache=none,aio=io_uring,discard=on,detect-zeroes=on,file.locking=off";
        if ($key =~ m/^virtio/) {
            push @cmd, '-device', "virtio-blk-pci,drive=drive-$key,id=$key";
        } else {
            push @cmd, '-device',
                "scsi-hd,bus=scsihw0.0,channel=0,scsi-id=0,lun=" . $lun++ . ",drive=drive-$key,id=$key";
        }
    }
    if ($param{qga}) {
        push @cmd, '-chardev', "socket,path=$param{qga},server=on,wait=off,id=qga0",
            '-device', 'virtio-serial,id=vser0',
            '-device', 'virtserialport,chardev=qga0,name=org.qemu.guest_agent.0';
    }
    unlink $param{qmp}, $param{pidfile};

    # daemonized as QEMU is on a node: the VM is nobody's child
    my $starter = fork() // die "fork failed - $!\n";
    if (!$starter) {
        POSIX::setsid();
        my $grandchild = fork();
        POSIX::_exit(0) if !defined($grandchild) || $grandchild;
        open(STDIN, '<', '/dev/null');
        open(STDOUT, '>>', $param{log} // '/dev/null');
        open(STDERR, '>&', \*STDOUT);
        exec({ $cmd[0] } @cmd) or POSIX::_exit(1);
    }
    waitpid($starter, 0);
    my $self = bless { %param, accel => QemuProbe::describe() }, $class;
    for (1 .. 200) {
        if (-S $param{qmp} && eval { $self->qmp('query-status'); 1 }) {
            $self->{pid} = slurp($param{pidfile}) =~ s/\s+$//r;
            return $self;
        }
        usleep(50_000);
    }
    my $output = $param{log} ? `tail -5 '$param{log}'` : '';
    die "QEMU did not start or open its QMP socket\n$output";
}

sub pid { return $_[0]->{pid} }

sub qmp {
    my ($self, $execute, %arguments) = @_;
    return PVE::VZDump::QemuServer::Engine::qmp_cmd(
        $self->{qmp}, $self->{vmid}, $execute, \%arguments, 30,
    );
}

sub hmp {
    my ($self, $command_line) = @_;
    return PVE::VZDump::QemuServer::Engine::hmp_cmd($self->{qmp}, $self->{vmid}, $command_line, 30);
}

# Writes $length bytes of the byte $pattern at $offset of drive-$key, through
# the guest's device path (HMP qemu-io), then flushes, so the image file
# holds the data.
sub write_pattern {
    my ($self, $key, $pattern, $offset, $length) = @_;
    my $out = $self->hmp(sprintf('qemu-io -d %s "write -P 0x%02x %d %d"', $key, $pattern, $offset, $length));
    die "qemu-io write on $key failed: $out\n" if $out =~ m/\S/;
    $out = $self->hmp("qemu-io -d $key \"flush\"");
    die "qemu-io flush on $key failed: $out\n" if $out =~ m/\S/;
}

# The block graph as a comparable text: every drive's device, node, driver
# and read-only flag, the named nodes, block jobs and NBD exports.
sub graph {
    my ($self) = @_;
    my @lines;
    for my $b (sort { $a->{device} cmp $b->{device} } $self->qmp('query-block')->@*) {
        my $i = $b->{inserted} // {};
        push @lines, "drive $b->{device} qdev=" . ($b->{qdev} // '') . " node=" . ($i->{'node-name'} // '')
            . " drv=" . ($i->{drv} // '') . " ro=" . ($i->{ro} ? 1 : 0);
    }
    push @lines, map { "node $_->{'node-name'} drv=$_->{drv}" }
        sort { $a->{'node-name'} cmp $b->{'node-name'} } $self->qmp('query-named-block-nodes', flat => JSON::true)->@*;
    push @lines, map { "job $_->{id}" } $self->qmp('query-jobs')->@*;
    push @lines, map { "export $_->{id}" } $self->qmp('query-block-exports')->@*;
    return join("\n", @lines) . "\n";
}

sub status {
    my ($self) = @_;
    return $self->qmp('query-status')->{status};
}

# Quits QEMU (QMP quit, SIGKILL after 10 s) and waits until it is gone.
sub stop {
    my ($self) = @_;
    return if !$self->{pid};
    eval { $self->qmp('quit') };
    for (1 .. 100) {
        last if !$self->running;
        usleep(100_000);
    }
    $self->kill;
}

sub running {
    my ($self) = @_;
    my $pid = $self->{pid} or return 0;
    my $stat = slurp("/proc/$pid/stat");
    return defined($stat) && $stat !~ m/^\d+ \(.*\) Z /;
}

sub kill {
    my ($self) = @_;
    return if !$self->{pid};
    kill 'KILL', $self->{pid};
    usleep(50_000) while $self->running;
    delete $self->{pid};
}

sub DESTROY {
    my ($self) = @_;
    local ($@, $?, $!);
    $self->stop;
}

1;
