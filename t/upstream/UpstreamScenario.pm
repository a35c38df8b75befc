package UpstreamScenario;

# A scratch Proxmox node (VZDumpScenario) whose VM runs on a real, stock
# QEMU (UpstreamQemu): VM 100 with a raw disk (scsi0) and a qcow2 disk
# (scsi1) holding known data and zero regions. Used by t/upstream_*.t, the
# benchmark and the demo.

use strict;
use warnings;

use File::Copy qw(copy);
use File::Path qw(make_path);

use PVE::QemuServer::Helpers;
use UpstreamQemu;
use VZDumpScenario;

our $mib = 1024 * 1024;

# %param: vmid, disks => [{ key, size, format, layout }], paused, and the
# node's dir, storage_dir and dump_dir (see VZDumpScenario::new)
sub new {
    my ($class, %param) = @_;

    my $node = VZDumpScenario->new(map { $param{$_} ? ($_ => $param{$_}) : () } qw(dir storage_dir dump_dir));
    my $vmid = $param{vmid} // 100;
    my $disks = $param{disks} // [
        { key => 'scsi0', size => 64 * $mib, layout => [[0, 6 * $mib], [40 * $mib, 2 * $mib]] },
        { key => 'scsi1', size => 32 * $mib, format => 'qcow2', layout => [[$mib, 3 * $mib], [30 * $mib, 64 * 1024]] },
    ];
    my $vm = $node->create_sample_vm($vmid, disks => $disks, plain => 1, %{ $param{vm} // {} });

    # the qcow2 disks: the same content converted, the config pointing at it
    my $conffile = PVE::QemuConfig->config_file($vmid);
    my $config = PVE::Tools::file_get_contents($conffile);
    for my $disk ($vm->{disks}->@*) {
        $disk->{format} //= 'raw';
        next if $disk->{format} ne 'qcow2';
        my $qcow2 = $disk->{path} =~ s/\.raw$/.qcow2/r;
        system('qemu-img', 'convert', '-q', '-f', 'raw', '-O', 'qcow2', $disk->{path}, $qcow2) == 0
            or die "qemu-img convert failed\n";
        unlink $disk->{path};
        $config =~ s/\Q$disk->{volid}\E/$disk->{volid} =~ s|\.raw$|.qcow2|r/e;
        $disk->{volid} =~ s/\.raw$/.qcow2/;
        $disk->{path} = $qcow2;
    }
    VZDumpScenario::write_file($conffile, $config);

    my $self = bless { node => $node, vmid => $vmid, disks => $vm->{disks} }, $class;
    $self->start_qemu(paused => $param{paused});
    return $self;
}

sub node { return $_[0]->{node} }
sub vmid { return $_[0]->{vmid} }
sub disks { return $_[0]->{disks} }
sub qemu { return $_[0]->{qemu} }

sub start_qemu {
    my ($self, %param) = @_;
    my $vmid = $self->{vmid};
    $self->{qemu} = UpstreamQemu->start(
        vmid => $vmid,
        qmp => PVE::TestNode::vm_socket($vmid, 'qmp'),
        pidfile => PVE::TestNode::vm_pidfile($vmid),
        log => $self->{node}->root . "/qemu-$vmid.log",
        paused => $param{paused},
        drives => [map { { key => $_->{key}, path => $_->{path}, format => $_->{format} } } $self->{disks}->@*],
    );
}

# The guest-visible content of every disk now, as raw files in $dir
# (<key>.raw); QEMU's caches are flushed first.
sub disk_contents {
    my ($self, $dir) = @_;
    make_path($dir);
    my %files;
    for my $disk ($self->{disks}->@*) {
        $self->{qemu}->hmp("qemu-io drive-$disk->{key} \"flush\"") if $self->{qemu}->{pid};
        my $out = "$dir/$disk->{key}.raw";
        system('qemu-img', 'convert', '-U', '-q', '-f', $disk->{format}, '-O', 'raw', $disk->{path}, $out) == 0
            or die "qemu-img convert of $disk->{path} failed\n";
        $files{ $disk->{key} } = $out;
    }
    return \%files;
}

# Verifies the archive with build/vma and extracts it into $dir; returns the
# extracted disk files by key, and the problems found.
sub extract_archive {
    my ($self, $archive, $dir) = @_;
    my @problems;
    my $vma = $self->{node}->decompressed_archive($archive);
    my $vma_bin = VZDumpScenario::vma_binary();
    my $verify = `'$vma_bin' verify '$vma' -v 2>&1`;
    push @problems, "vma verify failed: $verify" if $?;
    my $extract = `'$vma_bin' extract '$vma' '$dir' 2>&1`;
    push @problems, "vma extract failed: $extract" if $?;
    unlink $vma if $vma ne $archive;
    my %files = map { $_->{key} => "$dir/disk-drive-$_->{key}.raw" } $self->{disks}->@*;
    return (\%files, \@problems);
}

# Files left anywhere under the node that the engine should have removed.
sub leftovers {
    my ($self) = @_;
    my $root = $self->{node}->root;
    return grep { m/fleece|nbd\.sock/ } split(/\n/, `find '$root' -name 'fleece*' -o -name 'nbd.sock' -o -name '*fleece*'`);
}

1;
