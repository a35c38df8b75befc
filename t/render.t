#!/usr/bin/perl
# The engine's formatting, called from Perl, against fixed expectations and
# against a transcription of PVE::Format (the reference) over many values.

use strict;
use warnings;

use Test::More;

use PVE::VZDump::QemuServer::Engine;

my sub reference_render_bytes {
    my ($value, $precision) = @_;
    $precision = $precision->{precision} if ref($precision) eq 'HASH';
    $precision ||= 2;
    my @units = qw(B KiB MiB GiB TiB PiB);
    my $exponent = 0;
    if ($value > 1023) {
	$exponent = int(log($value) / log(1024));
	$value /= 1024**$exponent;
    }
    no warnings 'uninitialized'; # past PiB the unit is undef, as in PVE::Format
    return sprintf("%.${precision}f $units[$exponent]", $value);
}

my sub reference_render_duration {
    my ($seconds, $auto_limit) = @_;
    my $rest = $seconds // 0;
    $rest = $rest < 0 ? -int(-$rest + 0.5) : int($rest + 0.5);
    return '0s' if !$rest;
    my $text = '';
    my $step = sub {
	my ($unit, $length) = @_;
	my $count = int($rest / $length);
	return 0 if $count <= 0;
	$text .= ' ' if length($text);
	$text .= "$count$unit";
	$rest -= $count * $length;
	return 1;
    };
    my $weeks = $step->('w', 7 * 24 * 3600);
    my $days = $step->('d', 24 * 3600) || $weeks;
    $step->('h', 3600);
    $step->('m', 60) if !$auto_limit || !$weeks;
    $step->('s', 1) if !$auto_limit || !$days;
    return $text;
}

my $render_bytes = \&PVE::VZDump::QemuServer::Engine::render_bytes;
my $render_duration = \&PVE::VZDump::QemuServer::Engine::render_duration;

is(PVE::VZDump::QemuServer::Engine::version(), $PVE::VZDump::QemuServer::Engine::VERSION,
    'engine version matches the module');

my @bytes = (
    [0, undef, '0.00 B'],
    [1, undef, '1.00 B'],
    [1023, undef, '1023.00 B'],
    [1024, undef, '1.00 KiB'],
    [1536, undef, '1.50 KiB'],
    [1536, 1, '1.5 KiB'],
    [1536, 0, '1.50 KiB'],
    [1536, { precision => 3 }, '1.500 KiB'],
    [1280, 1, '1.2 KiB'],
    [512, 1, '512.0 B'],
    [1023, 4, '1023.0000 B'],
    [10 * 1024**3 + 1, undef, '10.00 GiB'],
    [123 * 1024**2 + 300 * 1024, 1, '123.3 MiB'],
    [4 * 1024**4 + 16 * 1024**3, undef, '4.02 TiB'],
    [1048575, 1, '1024.0 KiB'],
    [2**63, undef, '8.00 '],
);
for my $case (@bytes) {
    my ($value, $precision, $expected) = @$case;
    my $shown = ref($precision) ? "{precision}" : $precision // 'undef';
    is($render_bytes->($value, $precision), $expected, "render_bytes($value, $shown)");
}
is($render_bytes->(1536), '1.50 KiB', 'render_bytes without precision');

my @durations = (
    [0, '0s'], [undef, '0s'], [59, '59s'], [60, '1m'], [61, '1m 1s'], [3599, '59m 59s'],
    [3600, '1h'], [86399, '23h 59m 59s'], [3 * 86400 + 3600, '3d 1h'],
    [9 * 86400 + 5, '1w 2d 5s'], [1286544, '2w 21h 22m 24s'], [59.6, '1m'], [2.5, '3s'],
    [-5, ''],
);
for my $case (@durations) {
    my ($seconds, $expected) = @$case;
    is($render_duration->($seconds), $expected, 'render_duration(' . ($seconds // 'undef') . ')');
}
is($render_duration->(1286544, 1), '2w 21h', 'render_duration with auto limit');

eval { $render_bytes->(1, -1) };
like($@, qr/precision -1 out of range/, 'negative precision dies');

# differential check against the reference over powers, neighbours and random values
srand(42);
my @values = (map { (2**$_ - 1, 2**$_, 2**$_ + 1) } 0 .. 62);
push @values, map { int(rand(2**48)) } 1 .. 2000;
my $mismatch = 0;
for my $value (@values) {
    for my $precision (undef, 1, 3) {
	my $got = $render_bytes->($value, $precision);
	my $want = reference_render_bytes($value, $precision);
	next if $got eq $want;
	diag("render_bytes($value): got '$got', want '$want'") if $mismatch++ < 5;
    }
    my $got = $render_duration->($value / 1000);
    my $want = reference_render_duration($value / 1000);
    diag("render_duration($value/1000): got '$got', want '$want'")
	if $got ne $want && $mismatch++ < 5;
}
is($mismatch, 0, 'engine agrees with PVE::Format over ' . scalar(@values) . ' values');

done_testing();
