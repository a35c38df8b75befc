package PVE::TestNode;

# Where the test doubles find the node: one scratch directory holding what a
# Proxmox node keeps under /etc/pve and /run (VM configs, storage.cfg,
# firewall files, QEMU sockets and pid files). Set VZDUMP_TEST_NODE_DIR
# before the first double is used; child processes (the `qm` double) inherit it.

use strict;
use warnings;

sub root {
    my $root = $ENV{VZDUMP_TEST_NODE_DIR}
        or die "VZDUMP_TEST_NODE_DIR is not set - the test doubles need a node directory\n";
    return $root;
}

sub nodename { return 'testnode' }

sub etc_pve { return root() . "/etc/pve" }

sub run_dir { return root() . "/run/qemu-server" }

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
