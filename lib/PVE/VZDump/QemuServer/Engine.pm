package PVE::VZDump::QemuServer::Engine;

use strict;
use warnings;

use XSLoader;

our $VERSION = '0.1.0';

XSLoader::load('PVE::VZDump::QemuServer::Engine', $VERSION);

1;

__END__

=head1 NAME

PVE::VZDump::QemuServer::Engine - the C++ engine behind PVE::VZDump::QemuServer

=head1 SYNOPSIS

    use PVE::VZDump::QemuServer::Engine;

    my $text = PVE::VZDump::QemuServer::Engine::render_bytes(1536, 1);   # "1.5 KiB"
    my $took = PVE::VZDump::QemuServer::Engine::render_duration(3605);  # "1h 5s"

=head1 DESCRIPTION

The plugin keeps Proxmox policy in Perl; the mechanism lives in a C++ engine
reached through this module. Every function dies with the text the original
Perl code would have died with, so a die seen by vzdump reads as before.

=head1 FUNCTIONS

=head2 version()

The engine's version, the same string as C<$VERSION>.

=head2 render_bytes($value, $precision)

Renders a byte count exactly as C<PVE::Format::render_bytes> does: the largest
unit among B, KiB, MiB, GiB, TiB and PiB whose integer exponent fits, printed
with C printf rounding and C<$precision> decimals (2 when it is 0 or undef).
C<$precision> may also be given as a hash C<< { precision => $n } >>. Values of
1024^6 and more get an empty unit, as in the original. Dies on a negative
precision.

=head2 render_duration($seconds, $auto_limit)

Renders a duration exactly as C<PVE::Format::render_duration> does: rounded
half away from zero, then weeks, days, hours, minutes and seconds without the
zero components (C<"1d 1h 1m 1s">). 0 or undef is C<"0s">, a negative duration
the empty string. With C<$auto_limit> true, minutes are dropped once there are
weeks and seconds once there are days.

=cut
