package PVE::INotify;

use strict;
use warnings;

use PVE::TestNode;

sub nodename {
    return PVE::TestNode::nodename();
}

1;
