package PVE::Format;

use strict;
use warnings;

use PVE::VZDump::QemuServer::Engine;

use base qw(Exporter);
our @EXPORT_OK = qw(render_bytes render_duration);

sub render_bytes { return PVE::VZDump::QemuServer::Engine::render_bytes(@_) }

sub render_duration { return PVE::VZDump::QemuServer::Engine::render_duration(@_) }

1;
