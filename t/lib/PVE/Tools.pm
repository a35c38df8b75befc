package PVE::Tools;

use strict;
use warnings;

use File::Copy ();
use IO::File;
use IO::Select;
use POSIX ();

use base qw(Exporter);
our @EXPORT_OK = qw(run_command file_get_contents file_set_contents file_read_firstline $IPV6RE);

our $IPV6RE = qr/(?:[0-9a-fA-F]{0,4}:){2,7}[0-9a-fA-F]{0,4}/;

sub shellquote {
    my ($word) = @_;

    return "''" if !length($word);
    return $word if $word =~ m/^[-\w.,:\/=@+%]+$/;
    $word =~ s/'/'\\''/g;
    return "'$word'";
}

sub cmd2string {
    my ($cmd) = @_;

    return $cmd if !ref($cmd);
    return join(' ', map { shellquote($_) } @$cmd);
}

# Runs a command as PVE::Tools::run_command does: each line of the child's
# stdout goes to outfunc (else logfunc), each stderr line to errfunc (else
# logfunc); `output => ">&N"` sends stdout to fd N instead; LC_ALL=C.
sub run_command {
    my ($cmd, %param) = @_;

    my $cmdstr = cmd2string($cmd);
    $cmd = ['/bin/bash', '-c', ($cmd =~ m/\|/ ? "set -o pipefail && $cmd" : $cmd)] if !ref($cmd);

    my $outfunc = $param{outfunc} // $param{logfunc};
    my $errfunc = $param{errfunc} // $param{logfunc};
    my $output_fd;
    if (defined(my $output = $param{output})) {
        $output =~ m/^>&(\d+)$/ or die "run_command: unsupported output '$output'\n";
        $output_fd = $1;
    }

    pipe(my $out_read, my $out_write) or die "pipe failed - $!\n";
    pipe(my $err_read, my $err_write) or die "pipe failed - $!\n";

    my $pid = fork() // die "fork failed - $!\n";
    if (!$pid) {
        eval {
            close($out_read);
            close($err_read);
            open(STDIN, '<', '/dev/null') or die "stdin - $!\n";
            if (defined($output_fd)) {
                POSIX::dup2($output_fd, 1) // die "stdout - $!\n";
            } else {
                open(STDOUT, '>&', $out_write) or die "stdout - $!\n";
            }
            open(STDERR, '>&', $err_write) or die "stderr - $!\n";
            $ENV{LC_ALL} = 'C';
            exec({ $cmd->[0] } @$cmd) or die "exec failed - $!\n";
        };
        print STDERR $@;
        POSIX::_exit(-1);
    }
    close($out_write);
    close($err_write);

    my $select = IO::Select->new($out_read, $err_read);
    my $buffers = { "$out_read" => '', "$err_read" => '' };
    # without a function, lines go where the child would have written them
    my $emit = sub {
        my ($fh, $final) = @_;
        my $is_stdout = $fh == $out_read;
        my $func = $is_stdout ? $outfunc : $errfunc;
        $func //= sub { print { $is_stdout ? \*STDOUT : \*STDERR } "$_[0]\n" };
        my $buffer = \$buffers->{"$fh"};
        while ($$buffer =~ s/^(.*?)(?:\r\n|\n|\r)//) {
            $func->($1);
        }
        if ($final && length($$buffer)) {
            $func->($$buffer);
            $$buffer = '';
        }
    };
    while ($select->count()) {
        for my $fh ($select->can_read()) {
            my $count = sysread($fh, my $chunk, 65536);
            if (!defined($count)) {
                next if $! == POSIX::EINTR;
                die "read from child failed - $!\n";
            }
            if ($count == 0) {
                $emit->($fh, 1);
                $select->remove($fh);
                close($fh);
                next;
            }
            $buffers->{"$fh"} .= $chunk;
            $emit->($fh, 0);
        }
    }

    waitpid($pid, 0);
    my $status = $?;
    my $prefix = $param{errmsg} ? "$param{errmsg}: " : "command '$cmdstr' failed: ";
    if (my $signal = $status & 127) {
        die "${prefix}got signal $signal\n" if !$param{noerr};
    } elsif (my $code = $status >> 8) {
        die "${prefix}exit code $code\n" if !$param{noerr};
    }
    return $status >> 8;
}

sub file_get_contents {
    my ($filename) = @_;

    my $fh = IO::File->new($filename, "r") or die "can't open '$filename' - $!\n";
    local $/;
    my $content = <$fh>;
    close($fh);
    return $content // '';
}

sub file_set_contents {
    my ($filename, $data, $perm) = @_;

    $perm = 0644 if !defined($perm);
    my $tmpname = "$filename.tmp.$$";
    my $fh = IO::File->new($tmpname, O_WRONLY | O_CREAT, $perm)
        or die "unable to open file '$tmpname' - $!\n";
    print $fh $data or die "unable to write '$tmpname' - $!\n";
    close($fh) or die "closing file '$tmpname' failed - $!\n";
    rename($tmpname, $filename) or die "rename '$tmpname' to '$filename' failed - $!\n";
}

sub file_read_firstline {
    my ($filename) = @_;

    my $fh = IO::File->new($filename, "r") or return undef;
    my $line = <$fh>;
    close($fh);
    return undef if !defined($line);
    chomp $line;
    return $line;
}

sub file_copy {
    my ($filename, $dst, $max, $perm) = @_;

    File::Copy::copy($filename, $dst) or die "copy '$filename' to '$dst' failed - $!\n";
    chmod($perm, $dst) if defined($perm);
}

# convert_size(1023, b => 'kb') rounds up to whole KiB, as PVE does
sub convert_size {
    my ($value, $from, $to) = @_;

    my $units = { b => 0, kb => 1, mb => 2, gb => 3, tb => 4, pb => 5 };
    die "unknown unit '$from'\n" if !defined($units->{$from});
    die "unknown unit '$to'\n" if !defined($units->{$to});

    my $shift = $units->{$from} - $units->{$to};
    return $value * 1024**$shift if $shift >= 0;
    my $divisor = 1024**(-$shift);
    my $result = int($value / $divisor);
    $result++ if $result * $divisor < $value;
    return $result;
}

1;
