package CapturedRun;

# Runs a command (no shell features: every argument is quoted) with its
# stdout and stderr captured, for the tests that drive build/vma.

use strict;
use warnings;

use Exporter qw(import);
use File::Temp ();

our @EXPORT_OK = qw(run_captured);

# Returns ($status, $stdout, $stderr), $status as in $?.
sub run_captured {
    my (@cmd) = @_;
    my $out = File::Temp->new();
    my $err = File::Temp->new();
    system(join(' ', map { "'$_'" } @cmd) . " >'$out' 2>'$err'");
    my $status = $?;
    local $/;
    open(my $ofh, '<', "$out") or die "open $out: $!\n";
    open(my $efh, '<', "$err") or die "open $err: $!\n";
    return ($status, scalar(<$ofh>) // '', scalar(<$efh>) // '');
}

1;
