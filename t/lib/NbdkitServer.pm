package NbdkitServer;

# Runs nbdkit in the foreground in a session of its own, for the tests of
# the VMA plugin: start() waits until it listens on its Unix socket (or has
# exited), stop() ends it, and leftovers() lists any process still in its
# session, so a test can prove nothing was left running.

use strict;
use warnings;

use POSIX qw(WNOHANG);
use Time::HiRes qw(usleep);

# start($dir, @nbdkit_args): returns the server ({pid, socket, log}); when
# nbdkit exits before listening, {status} holds its wait status instead.
sub start {
    my ($dir, @args) = @_;
    my $n = ++$NbdkitServer::count;
    my $self = { socket => "$dir/nbdkit-$n.sock", log => "$dir/nbdkit-$n.log" };
    my $pid = fork() // die "fork: $!\n";
    if (!$pid) {
	POSIX::setsid();
	open(STDERR, '>', $self->{log}) or POSIX::_exit(126);
	open(STDOUT, '>&', \*STDERR) or POSIX::_exit(126);
	# a sanitizer build of a plugin needs its runtime loaded first
	$ENV{LD_PRELOAD} = $ENV{NBDKIT_LD_PRELOAD} if $ENV{NBDKIT_LD_PRELOAD};
	exec('nbdkit', '-f', '-U', $self->{socket}, @args) or POSIX::_exit(127);
    }
    $self->{pid} = $pid;
    for (1 .. 1200) {
	return bless($self) if -S $self->{socket};
	if (waitpid($pid, WNOHANG) == $pid) {
	    $self->{status} = $?;
	    return bless($self);
	}
	usleep(50_000);
    }
    kill('KILL', $pid);
    waitpid($pid, 0);
    die "nbdkit did not start within 60 s\n";
}

sub failed { return defined($_[0]{status}) }

sub log_text {
    my ($self) = @_;
    open(my $fh, '<', $self->{log}) or return '';
    local $/;
    return scalar(<$fh>) // '';
}

# nbd+unix URI of an export ('' = the default one)
sub uri {
    my ($self, $export) = @_;
    return "nbd+unix:///" . ($export // '') . "?socket=$self->{socket}";
}

sub stop {
    my ($self) = @_;
    return $self->{status} if defined($self->{status});
    kill('TERM', $self->{pid});
    waitpid($self->{pid}, 0);
    return $self->{status} = $?;
}

# pids still in the server's session (nbdkit was its leader)
sub leftovers {
    my ($self) = @_;
    my @pids;
    for my $stat (glob('/proc/[0-9]*/stat')) {
	open(my $fh, '<', $stat) or next;
	my $line = <$fh> // next;
	# pid (comm) state ppid pgrp session ...
	my ($pid, $rest) = $line =~ m/^(\d+) \(.*\) (.*)$/s or next;
	my (undef, undef, undef, $session) = split(' ', $rest);
	push @pids, $pid if $session == $self->{pid};
    }
    return @pids;
}

1;
