package PVE::QemuServer::QMPHelpers;

use strict;
use warnings;

use PVE::QemuServer::Monitor qw(mon_cmd);

sub nbd_stop {
    my ($vmid) = @_;

    mon_cmd($vmid, 'nbd-server-stop', timeout => 25);
}

1;
