package PVE::QemuServer::Machine;

# The machine type of a running VM, as QEMU reports it (Blockdev::attach asks
# for it before generating a node).

use strict;
use warnings;

use PVE::QemuServer::Monitor qw(mon_cmd);

sub get_current_qemu_machine {
    my ($vmid) = @_;

    my ($current, $pve_version, $default);
    for my $machine (mon_cmd($vmid, 'query-machines')->@*) {
        $default = $machine->{name} if $machine->{'is-default'};
        $current = $machine->{name} if $machine->{'is-current'};
        $pve_version = $machine->{'pve-version'} if $machine->{'pve-version'};
    }
    # fall back to the default machine if QEMU does not report the current one
    $current = $default || 'pc' if !$current;

    return wantarray ? ($current, $pve_version) : $current;
}

1;
