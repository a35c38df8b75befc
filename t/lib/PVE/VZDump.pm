package PVE::VZDump;

# The parts of pve-manager's PVE::VZDump that drive a guest plugin: option
# defaults, file names, the compressor choice and exec_backup_task's call
# order and log lines (file targets and stdout; no hooks, retention or notes).

use strict;
use warnings;

use File::Path qw(make_path remove_tree);
use IO::File;
use POSIX qw(strftime);

use PVE::Storage;
use PVE::VZDump::Plugin;

my $debugmsg = \&PVE::VZDump::Plugin::debugmsg;

sub check_bin {
    my ($bin) = @_;

    foreach my $p (split(/:/, $ENV{PATH})) {
        my $fn = "$p/$bin";
        return $fn if -x $fn;
    }
    die "unable to find command '$bin'\n";
}

sub format_size {
    my ($size) = @_;

    my $kb = $size / 1024;
    return int($kb) . "KB" if $kb < 1024;
    my $mb = $size / (1024 * 1024);
    return int($mb) . "MB" if $mb < 1024;
    my $gb = $mb / 1024;
    return sprintf("%.2fGB", $gb) if $gb < 1024;
    return sprintf("%.2fTB", $gb / 1024);
}

sub format_time {
    my ($seconds) = @_;

    my $hours = int($seconds / 3600);
    $seconds = $seconds - $hours * 3600;
    my $min = int($seconds / 60);
    $seconds = $seconds - $min * 60;
    return sprintf("%02d:%02d:%02d", $hours, $min, $seconds);
}

my sub compressor_info {
    my ($opts) = @_;

    my $opt_compress = $opts->{compress};
    if (!$opt_compress || $opt_compress eq '0') {
        return (undef, undef);
    } elsif ($opt_compress eq '1' || $opt_compress eq 'lzo') {
        return ('lzop', 'lzo');
    } elsif ($opt_compress eq 'gzip') {
        if ($opts->{pigz} > 0) {
            my $pigz_threads = $opts->{pigz};
            if ($pigz_threads == 1) {
                my $cpuinfo = `nproc`;
                chomp $cpuinfo;
                $pigz_threads = int(($cpuinfo + 1) / 2);
            }
            return ("pigz -p ${pigz_threads} --rsyncable", 'gz');
        } else {
            return ('gzip --rsyncable', 'gz');
        }
    } elsif ($opt_compress eq 'zstd') {
        my $zstd_threads = $opts->{zstd} // 1;
        if ($zstd_threads == 0) {
            my $cpuinfo = `nproc`;
            chomp $cpuinfo;
            $zstd_threads = int(($cpuinfo + 1) / 2);
        }
        return ("zstd --threads=${zstd_threads}", 'zst');
    } else {
        die "internal error - unknown compression option '$opt_compress'";
    }
}

# $opts: dumpdir (required unless stdout), compress, pigz, zstd, bwlimit,
# stdout, fleecing, performance, stopwait, storage, scfg, pbs, tmpdir;
# $opts->{'backup-provider'}: an external backup provider object
sub new {
    my ($class, $cmdline, $opts, $skiplist) = @_;

    $opts->{stopwait} //= 10;
    $opts->{bwlimit} //= 0;
    $opts->{pigz} //= 0;
    $opts->{fleecing} //= { enabled => 0 };
    $opts->{performance} //= {};
    $opts->{performance}->{'max-workers'} //= 16;
    $opts->{performance}->{'pbs-entries-max'} //= 1048576;
    $opts->{storage} //= 'local' if !$opts->{dumpdir};

    my $self = bless { cmdline => $cmdline, opts => $opts, skiplist => $skiplist }, $class;
    $self->{'backup-provider'} = delete $opts->{'backup-provider'} if $opts->{'backup-provider'};

    require PVE::VZDump::QemuServer;
    $self->{plugins} = [PVE::VZDump::QemuServer->new($self)];

    return $self;
}

# One guest, in the order and with the log lines of pve-manager's
# exec_backup_task. Returns the task hash (state ok|err, msg on error).
sub exec_backup_task {
    my ($self, $task) = @_;

    my $opts = $self->{opts};
    my $vmid = $task->{vmid};
    my $plugin = $task->{plugin};

    $task->{backup_time} = time();
    my $vmstarttime = time();
    my $logfd;
    my $cleanup = {};
    my $log_vm_online_again = sub {
        return if !defined($task->{vmstoptime});
        $task->{vmconttime} //= time();
        my $delay = $task->{vmconttime} - $task->{vmstoptime};
        $delay = '<1' if $delay < 1;
        $debugmsg->('info', "guest is online again after $delay seconds", $logfd);
    };

    eval {
        die "unable to find VM '$vmid'\n" if !$plugin;
        my $vmtype = $plugin->type();
        $task->{vmtype} = $vmtype;

        my $bkname = "vzdump-$vmtype-$vmid";
        my $basename = $bkname . strftime("-%Y_%m_%d-%H_%M_%S", localtime($task->{backup_time}));

        my ($comp, $comp_ext) = compressor_info($opts);
        $task->{compressor} = $comp;

        my $ext = ".vma";
        $ext .= ".$comp_ext" if $comp_ext;

        if ($opts->{pbs}) {
            $task->{target} = "vm/$vmid/" . strftime("%FT%TZ", gmtime($task->{backup_time}));
            $task->{tmpdir} = "/var/tmp/vzdumptmp${$}_$vmid";
        } elsif (my $provider = $self->{'backup-provider'}) {
            $task->{target} =
                $provider->backup_get_archive_name($vmid, $vmtype, $task->{backup_time});
            $task->{tmpdir} = "/var/tmp/vzdumptmp${$}_$vmid";
        } else {
            $task->{target} = $task->{tmptar} = "$opts->{dumpdir}/$basename$ext";
            $task->{tmptar} =~ s/\.[^\.]+$/\.dat/;
            unlink $task->{tmptar};
            $task->{tmpdir} = "$opts->{dumpdir}/$basename.tmp";
        }
        $task->{target} = '-' if $opts->{stdout};
        remove_tree($task->{tmpdir});
        make_path($task->{tmpdir});

        $task->{logfile} = "$opts->{dumpdir}/$basename.log" if $opts->{dumpdir};
        $task->{tmplog} = "$task->{tmpdir}.log";
        $logfd = IO::File->new(">$task->{tmplog}") or die "unable to create log file '$task->{tmplog}'\n";
        $logfd->autoflush(1);

        $debugmsg->('info', "Starting Backup of VM $vmid ($vmtype)", $logfd, 1);
        $debugmsg->('info', "Backup started at " . strftime("%F %H:%M:%S", localtime()));

        $plugin->set_logfd($logfd);

        my ($vmrunning, $status_text) = $plugin->vm_status($vmid);
        $debugmsg->('info', "status = $status_text", $logfd);

        $plugin->lock_vm($vmid);
        $cleanup->{unlock} = 1;

        my $mode = $vmrunning ? $task->{mode} : 'stop';
        if ($mode eq 'snapshot') {
            $plugin->prepare($task, $vmid, $mode);
        }
        $task->{mode} = $mode;
        $cleanup->{prepared} = 1;

        $debugmsg->('info', "backup mode: $mode", $logfd);
        $debugmsg->('info', "bandwidth limit: $opts->{bwlimit} KiB/s", $logfd) if $opts->{bwlimit};
        $debugmsg->('info', "ionice priority: " . ($opts->{ionice} // 7), $logfd);

        if ($mode eq 'stop') {
            $plugin->prepare($task, $vmid, $mode);
            if ($vmrunning) {
                $debugmsg->('info', "stopping virtual guest", $logfd);
                $task->{vmstoptime} = time();
                $plugin->stop_vm($task, $vmid);
                $cleanup->{restart} = 1;
            }
        } elsif ($mode eq 'suspend') {
            $plugin->prepare($task, $vmid, $mode);
            $debugmsg->('info', "suspending guest", $logfd);
            $task->{vmstoptime} = time();
            $plugin->suspend_vm($task, $vmid);
            $cleanup->{resume} = 1;
        } elsif ($mode eq 'snapshot') {
            $plugin->snapshot($task, $vmid);
        } else {
            die "internal error - unknown mode '$mode'\n";
        }

        $plugin->assemble($task, $vmid);

        if ($opts->{stdout}) {
            $debugmsg->('info', "sending archive to stdout", $logfd);
            $plugin->archive($task, $vmid, $task->{tmptar}, $comp);
        } else {
            my $what = $opts->{pbs} ? 'Proxmox Backup Server archive' : 'vzdump archive';
            $debugmsg->('info', "creating $what '$task->{target}'", $logfd);
            $plugin->archive($task, $vmid, $task->{tmptar}, $comp);
            if ($task->{tmptar}) {
                rename($task->{tmptar}, $task->{target})
                    or die "unable to rename '$task->{tmptar}' to '$task->{target}'\n";
                $task->{size} = -s $task->{target};
                my $cs = format_size($task->{size});
                $debugmsg->('info', "archive file size: $cs", $logfd);
            }
        }
    };
    my $err = $@;

    if ($plugin) {
        if ($cleanup->{unlock}) {
            eval { $plugin->unlock_vm($vmid); };
            warn $@ if $@;
        }
        if ($cleanup->{prepared}) {
            eval { $plugin->cleanup($task, $vmid) };
            warn $@ if $@;
        }
        eval { $plugin->set_logfd(undef); };
        warn $@ if $@;

        if ($cleanup->{resume} || $cleanup->{restart}) {
            eval {
                if ($cleanup->{resume}) {
                    $debugmsg->('info', "resume vm", $logfd);
                    $plugin->resume_vm($task, $vmid);
                } else {
                    my $running = $plugin->vm_status($vmid);
                    if (!$running) {
                        $debugmsg->('info', "restarting vm", $logfd);
                        $plugin->start_vm($task, $vmid);
                    }
                }
                $log_vm_online_again->();
            };
            my $err = $@;
            $debugmsg->('err', "resume/restart failed: $err", $logfd) if $err;
        } else {
            $log_vm_online_again->();
        }
    }

    unlink $task->{tmptar} if $task->{tmptar} && -f $task->{tmptar};
    remove_tree($task->{tmpdir}) if $task->{tmpdir} && -d $task->{tmpdir};

    $task->{backuptime} = time() - $vmstarttime;

    if ($err) {
        $task->{state} = 'err';
        $task->{msg} = $err;
        $debugmsg->('err', "Backup of VM $vmid failed - $err", $logfd, 1);
        $debugmsg->('info', "Failed at " . strftime("%F %H:%M:%S", localtime()));
    } else {
        $task->{state} = 'ok';
        my $tstr = format_time($task->{backuptime});
        $debugmsg->('info', "Finished Backup of VM $vmid ($tstr)", $logfd, 1);
        $debugmsg->('info', "Backup finished at " . strftime("%F %H:%M:%S", localtime()));
    }

    close($logfd) if $logfd;

    if ($task->{tmplog} && -f $task->{tmplog}) {
        if ($task->{logfile}) {
            require File::Copy;
            File::Copy::copy($task->{tmplog}, $task->{logfile});
        }
        unlink $task->{tmplog};
    }

    return $task;
}

1;
