package PVE::RESTEnvironment;

use strict;
use warnings;

use base qw(Exporter);
our @EXPORT_OK = qw(log_warn);

# Counts the warnings of the running task, as the worker's task status does.
our $warning_count = 0;

sub log_warn {
    my ($message) = @_;

    $warning_count++;
    chomp($message);
    print STDERR "WARN: $message\n";
}

1;
