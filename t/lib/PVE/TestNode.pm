package PVE::TestNode;

# Where the test doubles find the node: one scratch directory holding what a
# Proxmox node keeps under /etc/pve and /run (VM configs, storage.cfg,
# firewall files, QEMU sockets and pid files). Set VZDUMP_TEST_NODE_DIR
# before the first double is used; child processes (the `qm` double) inherit it.
#
# The node runs one Proxmox VE release, VZDUMP_TEST_PVE_RELEASE (8, the
# default, or 9), fixed for the process: the doubles whose signatures differ
# between qemu-server 8 and 9 follow it, and on 9 the modules only
# qemu-server 9 ships (t/lib/pve9) are found in @INC, so the plugin sees them
# installed exactly as on a PVE 9 node and misses them as on a PVE 8 node.

use strict;
use warnings;

my $release = $ENV{VZDUMP_TEST_PVE_RELEASE} // 8;
die "VZDUMP_TEST_PVE_RELEASE must be 8 or 9, not '$release'\n" if $release !~ m/^[89]$/;

sub release { return $release }

if ($release == 9) {
    my $pve9_lib = __FILE__ =~ s|/PVE/TestNode\.pm$|/pve9|r;
    unshift @INC, $pve9_lib if !grep { $_ eq $pve9_lib } @INC;
}

sub root {
    my $root = $ENV{VZDUMP_TEST_NODE_DIR}
        or die "VZDUMP_TEST_NODE_DIR is not set - the test doubles need a node directory\n";
    return $root;
}

sub nodename { return 'testnode' }

sub etc_pve { return root() . "/etc/pve" }

sub run_dir { return root() . "/run/qemu-server" }

# A VM's sockets ('qmp' or 'qga') and pid file, for the doubles and tests
# (qemu-server's Helpers names them with release-specific signatures).
sub vm_socket {
    my ($vmid, $type) = @_;
    return run_dir() . "/$vmid.$type";
}

sub vm_pidfile { return run_dir() . "/$_[0].pid" }

# The pve-qemu simulator started as a VM's QEMU.
sub simulator {
    return $ENV{VZDUMP_TEST_SIMULATOR} // (checkout_dir() . "/build/pve-qemu-sim");
}

sub checkout_dir {
    my $dir = __FILE__;
    $dir =~ s|/t/lib/PVE/TestNode\.pm$||;
    return $dir =~ m|^/| ? $dir : do { require Cwd; Cwd::abs_path($dir) };
}

1;
