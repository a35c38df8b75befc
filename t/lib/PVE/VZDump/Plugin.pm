package PVE::VZDump::Plugin;

# pve-guest-common's base class of the vzdump guest plugins: the logging the
# task log and the per-guest log file show, and command execution.

use strict;
use warnings;

use POSIX qw(strftime);

use PVE::RESTEnvironment qw(log_warn);
use PVE::Tools;

my $log_level = {
    err => 'ERROR:',
    info => 'INFO:',
    warn => 'WARN:',
};

sub debugmsg {
    my ($mtype, $msg, $logfd, $syslog) = @_;

    chomp $msg;

    return if !$msg;

    my $level = $log_level->{$mtype} ? $mtype : 'err';
    my $pre = $log_level->{$level};

    my $timestr = strftime("%F %H:%M:%S", CORE::localtime);

    # syslog is not part of the test node
    foreach my $line (split(/\n/, $msg)) {
        if ($level eq 'warn') {
            log_warn($line);
        } else {
            print STDERR "$pre $line\n";
        }
        print $logfd "$timestr $pre $line\n" if $logfd;
    }
}

sub set_logfd {
    my ($self, $logfd) = @_;

    $self->{logfd} = $logfd;
}

sub cmd {
    my ($self, $cmdstr, %param) = @_;

    my $logfunc = sub {
        my $line = shift;
        debugmsg('info', $line, $self->{logfd});
    };

    PVE::Tools::run_command($cmdstr, %param, logfunc => $logfunc);
}

sub cmd_noerr {
    my ($self, $cmdstr, %param) = @_;

    my $res;
    eval { $res = $self->cmd($cmdstr, %param); };
    $self->logerr($@) if $@;
    return $res;
}

sub log {
    my ($self, $level, $msg, $to_syslog) = @_;

    debugmsg($level, $msg, $self->{logfd}, $to_syslog);
}

sub loginfo {
    my ($self, $msg) = @_;

    debugmsg('info', $msg, $self->{logfd}, 0);
}

sub logerr {
    my ($self, $msg) = @_;

    debugmsg('err', $msg, $self->{logfd}, 0);
}

1;
