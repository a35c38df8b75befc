package QemuProbe;

# scripts/qemu-probe for Perl callers (tests, demo, benchmarks): run once per
# process, its choice exported in QEMU_ACCEL_OPTIONS so that child processes
# keep it. When QEMU starts, the probe's report (which way, and the ways that
# failed) goes to stderr; otherwise the caller says why it cannot.

use strict;
use warnings;

use File::Basename qw(dirname);
use File::Spec;
use File::Temp;

our $script = File::Spec->rel2abs(dirname(__FILE__) . '/../../scripts/qemu-probe');

my $result;

# { status => 0 (found) | 1 (no accelerator starts QEMU) | 2 (not installed),
#   options => [...], report => the probe's stderr }
sub result {
    return $result if $result;
    my $report = File::Temp->new();
    my $options = qx{"$script" 2>"$report"};
    my $status = $? >> 8;
    my $text = do { local $/; <$report> } // '';
    print STDERR $text if $status == 0;
    $result = { status => $status, options => [split(' ', $options)], report => $text };
    $ENV{QEMU_ACCEL_OPTIONS} = join(' ', $result->{options}->@*) if $status == 0;
    return $result;
}

# Probes again, e.g. after QEMU has been installed.
sub reprobe {
    undef $result;
    return result();
}

# Why QEMU cannot be used here because it is not installed, or undef.
sub not_installed {
    my $r = result();
    return $r->{status} == 2 ? $r->{report} =~ s/^qemu-probe: //r =~ s/\s+$//r : undef;
}

# The accelerator options QEMU starts with here; dies with QEMU's own errors
# when it is installed but starts with none.
sub options {
    my $r = result();
    return $r->{options}->@* if $r->{status} == 0;
    die "QEMU cannot start here:\n$r->{report}";
}

# The options as one word for log lines, e.g. "kvm -cpu host".
sub describe {
    return join(' ', options()) =~ s/^-accel //r;
}

1;
