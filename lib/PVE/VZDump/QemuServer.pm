package PVE::VZDump::QemuServer;

use strict;
use warnings;

use Fcntl qw(:mode O_RDWR O_DIRECT);
use File::Path qw(make_path remove_tree);
use IO::File;
use IPC::Open3;
use JSON;
use POSIX qw(EINTR EAGAIN);
use Time::HiRes qw(usleep);

use PVE::INotify;
use PVE::JSONSchema;
use PVE::PBSClient;
use PVE::RESTEnvironment qw(log_warn);
use PVE::Storage::PBSPlugin;
use PVE::Storage;
use PVE::Tools qw(run_command);
use PVE::VZDump;

use PVE::QemuConfig;
use PVE::QemuServer;
use PVE::QemuServer::Drive qw(checked_volume_format);
use PVE::QemuServer::Helpers;

use PVE::VZDump::QemuServer::Engine;

use base qw (PVE::VZDump::Plugin);

# The release is detected once, at load time: qemu-server 9 (PVE 9) ships
# PVE::QemuServer::Blockdev, qemu-server 8 does not. The few places where
# qemu-server 9's plugin differs are marked "qemu-server 9" below; everything
# else is the same on both.
our $qemu_server_9;
if (eval { require PVE::QemuServer::Blockdev; 1 }) {
    require PVE::QemuServer::Agent;
    require PVE::QemuServer::Monitor;
    $qemu_server_9 = 1;
} else {
    die $@ if $@ !~ m|^Can't locate PVE/QemuServer/Blockdev\.pm in \@INC|;
    $qemu_server_9 = 0;
}

# Fixed paths of a Proxmox node that the plugin names itself. The test suite
# points them into a scratch node directory.
our $firewall_config_dir = '/etc/pve/firewall';
our $vma_binary = '/usr/bin/vma';
our $pbs_client_binary = '/usr/bin/proxmox-backup-client';
our $nbdfuse_binary = '/usr/bin/nbdfuse';
our $backup_access_run_dir = '/run/qemu-server';

# The VM's QMP socket, or its guest agent's. qemu-server 9 names sockets by
# the QMP peer.
my sub vm_socket {
    my ($vmid, $agent) = @_;

    if ($qemu_server_9) {
        my $peer = PVE::QemuServer::Monitor::vm_qmp_peer($vmid);
        $peer->{type} = 'qga' if $agent;
        return PVE::QemuServer::Helpers::qmp_socket($peer);
    }
    return PVE::QemuServer::Helpers::qmp_socket($vmid, $agent);
}

# QMP, HMP and guest-agent commands go through the engine. The checks before
# them and the error texts are those of PVE::QemuServer::Monitor::qmp_cmd, so
# a failing command dies as it always did.
my sub qmp_socket_checked {
    my ($vmid) = @_;

    die "VM $vmid not running\n" if !PVE::QemuServer::Helpers::vm_running_locally($vmid);
    my $socket = vm_socket($vmid);
    die "unable to open monitor socket\n" if !-e $socket;

    return $socket;
}

my sub mon_cmd {
    my ($vmid, $execute, %arguments) = @_;

    my $timeout = delete $arguments{timeout};
    my $socket = qmp_socket_checked($vmid);

    if ($execute =~ m/^guest-/) {
        my $agent_socket = vm_socket($vmid, 1);
        return PVE::VZDump::QemuServer::Engine::qga_cmd(
            $agent_socket, $vmid, $execute, \%arguments, $timeout,
        );
    }
    return PVE::VZDump::QemuServer::Engine::qmp_cmd(
        $socket, $vmid, $execute, \%arguments, $timeout,
    );
}

my sub hmp_cmd {
    my ($vmid, $command_line, $timeout) = @_;

    my $socket = qmp_socket_checked($vmid);
    return PVE::VZDump::QemuServer::Engine::hmp_cmd($socket, $vmid, $command_line, $timeout);
}

# PVE::QemuServer::qemu_drivedel
my sub qemu_drivedel {
    my ($vmid, $deviceid) = @_;

    my $ret = hmp_cmd($vmid, "drive_del drive-$deviceid", 10 * 60);
    $ret =~ s/^\s+//;
    return 1 if $ret eq "";
    # a device that is not found was already deleted along with its last user
    return 1 if $ret =~ m/Device \'.*?\' not found/s;
    die "deleting drive $deviceid failed : $ret\n";
}

# PVE::QemuServer::qga_check_running
my sub qga_check_running {
    my ($vmid, $nowarn) = @_;

    eval { mon_cmd($vmid, "guest-ping", timeout => 3); };
    if ($@) {
        warn "QEMU Guest Agent is not running - $@" if !$nowarn;
        return 0;
    }
    return 1;
}

# PVE::QemuServer::QMPHelpers::nbd_stop
my sub nbd_stop {
    my ($vmid) = @_;

    mon_cmd($vmid, 'nbd-server-stop', timeout => 25);
}

sub new {
    my ($class, $vzdump) = @_;

    PVE::VZDump::check_bin('qm');

    my $self = bless { vzdump => $vzdump }, $class;

    $self->{vmlist} = PVE::QemuServer::vzlist();
    $self->{storecfg} = PVE::Storage::config();

    return $self;
}

sub type {
    return 'qemu';
}

sub vmlist {
    my ($self) = @_;
    return [keys %{ $self->{vmlist} }];
}

sub prepare {
    my ($self, $task, $vmid, $mode) = @_;

    my $running = PVE::QemuServer::Helpers::vm_running_locally($vmid);

    # --- stock QEMU (engine's snapshot path): it has no backup job to find ---
    my $status = $running ? eval { mon_cmd($vmid, 'query-backup') } : undef;
    die $@ if $@ && $@ !~ m/The command query-backup has not been found/;
    # --- end stock QEMU ---
    if ($status) {
        if ($status->{status} && $status->{status} eq 'active') {
            $self->log('warn', "left-over backup job still running inside QEMU - canceling now");
            mon_cmd($vmid, 'backup-cancel');
        }
    }

    $task->{disks} = [];

    my $conf = $self->{vmlist}->{$vmid} = PVE::QemuConfig->load_config($vmid);

    $self->loginfo("VM Name: $conf->{name}")
        if defined($conf->{name});

    $self->{vm_was_running} = $running ? 1 : 0;
    $self->{vm_was_paused} = 0;
    if ($running && PVE::QemuServer::vm_is_paused($vmid, 0)) {
        # Do not treat a suspended VM as paused, as it would cause us to skip
        # fs-freeze even if the VM wakes up before we reach qga_fs_freeze.
        $self->{vm_was_paused} = 1;
    }

    $task->{hostname} = $conf->{name};

    my $hostname = PVE::INotify::nodename();

    my $vollist = [];
    my $drivehash = {};
    my $backup_volumes = PVE::QemuConfig->get_backup_volumes($conf);

    foreach my $volume (@{$backup_volumes}) {
        my $name = $volume->{key};
        my $volume_config = $volume->{volume_config};
        my $volid = $volume_config->{file};

        if (!$volume->{included}) {
            $self->loginfo("exclude disk '$name' '$volid' ($volume->{reason})");
            next;
        } else {
            my $log = "include disk '$name' '$volid'";
            if (defined(my $size = $volume_config->{size})) {
                my $readable_size = PVE::JSONSchema::format_size($size);
                $log .= " $readable_size";
            }
            $self->loginfo($log);
        }

        my ($storeid, $volname) = PVE::Storage::parse_volume_id($volid, 1);
        push @$vollist, $volid if $storeid;
        $drivehash->{$name} = $volume->{volume_config};
    }

    PVE::Storage::activate_volumes($self->{storecfg}, $vollist);

    foreach my $ds (sort keys %$drivehash) {
        my $drive = $drivehash->{$ds};

        my $volid = $drive->{file};
        my ($storeid, $volname) = PVE::Storage::parse_volume_id($volid, 1);

        my $path = $volid;
        if ($storeid) {
            $path = PVE::Storage::path($self->{storecfg}, $volid);
        }
        next if !$path;

        my ($size, $format);
        if ($storeid) {
            # The call in list context can be expensive for certain plugins like RBD, just get size
            $size = eval { PVE::Storage::volume_size_info($self->{storecfg}, $volid, 5) };
            die "cannot determine size of volume '$volid' - $@\n" if $@;

            $format = checked_volume_format($self->{storecfg}, $volid);
        } else {
            ($size, $format) =
                eval { PVE::Storage::volume_size_info($self->{storecfg}, $volid, 5); };
            die "cannot determine size and format of volume '$volid' - $@\n" if $@;
        }

        my $diskinfo = {
            path => $path,
            volid => $volid,
            storeid => $storeid,
            size => $size,
            format => $format,
            virtdev => $ds,
            qmdevice => "drive-$ds",
        };

        if ($ds eq 'tpmstate0') {
            # TPM drive only exists for backup, which is reflected in the name
            $diskinfo->{qmdevice} = 'drive-tpmstate0-backup';
            if ($qemu_server_9) {
                $task->{'tpm-volid'} = $volid;
            } else {
                $task->{tpmpath} = $path;
            }
        }

        if (-b $path) {
            $diskinfo->{type} = 'block';
        } else {
            $diskinfo->{type} = 'file';
        }

        push @{ $task->{disks} }, $diskinfo;
    }
}

sub vm_status {
    my ($self, $vmid) = @_;

    my $running = PVE::QemuServer::check_running($vmid) ? 1 : 0;

    return wantarray ? ($running, $running ? 'running' : 'stopped') : $running;
}

sub lock_vm {
    my ($self, $vmid) = @_;

    PVE::QemuConfig->set_lock($vmid, 'backup');
}

sub unlock_vm {
    my ($self, $vmid) = @_;

    PVE::QemuConfig->remove_lock($vmid, 'backup');
}

sub stop_vm {
    my ($self, $task, $vmid) = @_;

    my $opts = $self->{vzdump}->{opts};

    my $wait = $opts->{stopwait} * 60;
    # send shutdown and wait
    $self->cmd("qm shutdown $vmid --skiplock --keepActive --timeout $wait");
}

sub start_vm {
    my ($self, $task, $vmid) = @_;

    $self->cmd("qm start $vmid --skiplock");
}

sub suspend_vm {
    my ($self, $task, $vmid) = @_;

    return if $self->{vm_was_paused};

    $self->cmd("qm suspend $vmid --skiplock");
}

sub resume_vm {
    my ($self, $task, $vmid) = @_;

    return if $self->{vm_was_paused};

    $self->cmd("qm resume $vmid --skiplock");
}

sub assemble {
    my ($self, $task, $vmid) = @_;

    my $conffile = PVE::QemuConfig->config_file($vmid);

    my $outfile = "$task->{tmpdir}/qemu-server.conf";
    my $firewall_src = "$firewall_config_dir/$vmid.fw";
    my $firewall_dest = "$task->{tmpdir}/qemu-server.fw";

    my $outfd = IO::File->new(">$outfile") or die "unable to open '$outfile' - $!\n";
    my $conffd = IO::File->new($conffile, 'r') or die "unable to open '$conffile' - $!\n";

    my $found_snapshot;
    my $found_pending;
    my $found_special;
    while (defined(my $line = <$conffd>)) {
        next if $line =~ m/^\#vzdump\#/; # just to be sure
        next if $line =~ m/^\#qmdump\#/; # just to be sure
        if ($line =~ m/^\[(.*)\]\s*$/) {
            if ($1 =~ m/^PENDING$/i) {
                $found_pending = 1;
            } elsif ($1 =~ m/^special:.*$/) {
                $found_special = 1;
            } else {
                $found_snapshot = 1;
            }
        }
        # skip all snapshots, pending changes and special sections
        next if $found_snapshot || $found_pending || $found_special;

        if ($line =~ m/^unused\d+:\s*(\S+)\s*/) {
            $self->loginfo("skip unused drive '$1' (not included into backup)");
            next;
        }
        next if $line =~ m/^lock:/ || $line =~ m/^parent:/;

        print $outfd $line;
    }

    foreach my $di (@{ $task->{disks} }) {
        if ($di->{type} eq 'block' || $di->{type} eq 'file') {
            my $storeid = $di->{storeid} || '';
            my $format = $di->{format} || '';
            print $outfd "#qmdump#map:$di->{virtdev}:$di->{qmdevice}:$storeid:$format:\n";
        } else {
            die "internal error";
        }
    }

    if ($found_special) {
        $self->loginfo("special config section found (not included into backup)");
    }
    if ($found_snapshot) {
        $self->loginfo("snapshots found (not included into backup)");
    }
    if ($found_pending) {
        $self->loginfo("pending configuration changes found (not included into backup)");
    }

    PVE::Tools::file_copy($firewall_src, $firewall_dest) if -f $firewall_src;
}

sub archive {
    my ($self, $task, $vmid, $filename, $comp) = @_;

    my $opts = $self->{vzdump}->{opts};
    my $scfg = $opts->{scfg};

    if ($self->{vzdump}->{opts}->{pbs}) {
        $self->archive_pbs($task, $vmid);
    } elsif ($self->{vzdump}->{'backup-provider'}) {
        $self->archive_external($task, $vmid);
    } else {
        $self->archive_vma($task, $vmid, $filename, $comp);
    }
}

my $bitmap_action_to_human = sub {
    my ($self, $info) = @_;

    return PVE::VZDump::QemuServer::Engine::bitmap_status_text($info);
};

# Polls query-backup in the engine, which logs each progress line as it
# happens. A signal arriving meanwhile ends the poll within a second and
# reaches the handler installed by the caller.
my $query_backup_status_loop = sub {
    my ($self, $vmid, $job_uuid, $qemu_support) = @_;

    my $has_query_bitmap = $qemu_support && $qemu_support->{'query-bitmap-info'};
    my $is_template = PVE::QemuConfig->is_template($self->{vmlist}->{$vmid});

    return PVE::VZDump::QemuServer::Engine::backup_status_loop(
        vm_socket($vmid),
        $vmid,
        $job_uuid,
        $has_query_bitmap ? 1 : 0,
        $is_template ? 1 : 0,
        sub { qmp_socket_checked($vmid) },
        sub { $self->loginfo($_[0]) },
    );
};

# qemu-server 9: a read-only blockdev node drive-tpmstate0-backup
my $attach_tpmstate_drive_blockdev = sub {
    my ($self, $task, $vmid) = @_;

    return if !$task->{'tpm-volid'};

    # unconditionally try to remove the tpmstate-named drive - it only exists
    # for backing up, and avoids errors if left over from some previous event
    eval { PVE::QemuServer::Blockdev::detach_tpm_backup_node($vmid); };

    $self->loginfo('attaching TPM drive to QEMU for backup');

    my $drive = { file => $task->{'tpm-volid'}, interface => 'tpmstate', index => 0 };
    my $extra_options = { 'tpm-backup' => 1, 'read-only' => 1 };
    PVE::QemuServer::Blockdev::attach($self->{storecfg}, $vmid, $drive, $extra_options);
};

my $attach_tpmstate_drive = sub {
    my ($self, $task, $vmid) = @_;

    return $attach_tpmstate_drive_blockdev->($self, $task, $vmid) if $qemu_server_9;

    return if !$task->{tpmpath};

    # unconditionally try to remove the tpmstate-named drive - it only exists
    # for backing up, and avoids errors if left over from some previous event
    eval { qemu_drivedel($vmid, "tpmstate0-backup"); };

    $self->loginfo('attaching TPM drive to QEMU for backup');

    my $drive = "file=$task->{tpmpath},if=none,read-only=on,id=drive-tpmstate0-backup";
    $drive =~ s/\\/\\\\/g;
    my $ret = hmp_cmd($vmid, "drive_add auto \"$drive\"", 60);
    die "attaching TPM drive failed - $ret\n" if $ret !~ m/OK/s;
};

my $detach_tpmstate_drive = sub {
    my ($task, $vmid) = @_;

    if ($qemu_server_9) {
        return if !$task->{'tpm-volid'} || !PVE::QemuServer::Helpers::vm_running_locally($vmid);
        eval { PVE::QemuServer::Blockdev::detach_tpm_backup_node($vmid); };
        return;
    }

    return if !$task->{tpmpath} || !PVE::QemuServer::check_running($vmid);
    eval { qemu_drivedel($vmid, "tpmstate0-backup"); };
};

my sub add_backup_performance_options {
    my ($qmp_param, $perf, $qemu_support) = @_;

    return if !$perf || scalar(keys $perf->%*) == 0;

    if (!$qemu_support) {
        my $settings_string = join(', ', sort keys $perf->%*);
        log_warn("ignoring setting(s): $settings_string - issue checking if supported");
        return;
    }

    if (defined($perf->{'max-workers'})) {
        if ($qemu_support->{'backup-max-workers'}) {
            $qmp_param->{'max-workers'} = int($perf->{'max-workers'});
        } else {
            log_warn("ignoring 'max-workers' setting - not supported by running QEMU");
        }
    }
}

sub get_and_check_pbs_encryption_config {
    my ($self) = @_;

    my $opts = $self->{vzdump}->{opts};
    my $scfg = $opts->{scfg};

    my $keyfile = PVE::Storage::PBSPlugin::pbs_encryption_key_file_name($scfg, $opts->{storage});
    my $master_keyfile =
        PVE::Storage::PBSPlugin::pbs_master_pubkey_file_name($scfg, $opts->{storage});

    if (-e $keyfile) {
        if (-e $master_keyfile) {
            $self->loginfo("enabling encryption with master key feature");
            return ($keyfile, $master_keyfile);
        } elsif ($scfg->{'master-pubkey'}) {
            die "master public key configured but no key file found\n";
        } else {
            $self->loginfo("enabling encryption");
            return ($keyfile, undef);
        }
    } else {
        my $encryption_fp = $scfg->{'encryption-key'};
        die "encryption configured ('$encryption_fp') but no encryption key file found!\n"
            if $encryption_fp;
        if (-e $master_keyfile) {
            $self->log(
                'warn',
                "backup target storage is configured with master-key, but no encryption key set!"
                    . " Ignoring master key settings and creating unencrypted backup.",
            );
        }
        return (undef, undef);
    }
    die
        "internal error - unhandled case for getting & checking PBS encryption ($keyfile, $master_keyfile)!";
}

# Helper is intended to be called from allocate_fleecing_images() only. Otherwise, fleecing volids
# have already been recorded in the configuration and PVE::QemuConfig::cleanup_fleecing_images()
# should be used instead.
my sub cleanup_fleecing_images {
    my ($self, $vmid, $disks) = @_;

    my $failed = [];

    for my $di ($disks->@*) {
        if (my $volid = $di->{'fleece-volid'}) {
            eval { PVE::Storage::vdisk_free($self->{storecfg}, $volid); };
            if (my $err = $@) {
                $self->log('warn', "error removing fleecing image '$volid' - $err");
                push $failed->@*, $volid;
            }
        }
    }

    PVE::QemuConfig::record_fleecing_images($vmid, $failed);
}

my sub allocate_fleecing_images {
    my ($self, $disks, $vmid, $fleecing_storeid, $format, $all_images) = @_;

    die "internal error - no fleecing storage specified\n" if !$fleecing_storeid;

    my $fleece_volids = [];

    eval {
        my $n = 0; # counter for fleecing image names

        for my $di ($disks->@*) {
            # EFI/TPM are usually too small to be worth it, but it's required for external providers
            next if !$all_images && $di->{virtdev} =~ m/^(?:tpmstate|efidisk)\d$/;
            if ($di->{type} eq 'block' || $di->{type} eq 'file') {
                my $scfg = PVE::Storage::storage_config($self->{storecfg}, $fleecing_storeid);
                my $name = "vm-$vmid-fleece-$n";
                $name .= ".$format" if $scfg->{path};

                my $size;
                if ($format ne 'raw') {
                    # Since non-raw images cannot be attached with an explicit 'size' parameter to
                    # QEMU later, pass the exact size to the storage layer. This makes qcow2
                    # fleecing images work for non-1KiB-aligned source images.
                    $size = $di->{'block-node-size'} / 1024;
                } else {
                    $size = PVE::Tools::convert_size($di->{'block-node-size'}, 'b' => 'kb');
                }

                $di->{'fleece-volid'} = PVE::Storage::vdisk_alloc(
                    $self->{storecfg}, $fleecing_storeid, $vmid, $format, $name, $size,
                );

                push $fleece_volids->@*, $di->{'fleece-volid'};

                $n++;
            } else {
                die "implement me (type '$di->{type}')";
            }
        }
    };
    if (my $err = $@) {
        cleanup_fleecing_images($self, $vmid, $disks);
        die $err;
    }

    PVE::QemuConfig::record_fleecing_images($vmid, $fleece_volids);
}

my sub detach_fleecing_images {
    my ($disks, $vmid) = @_;

    return if !PVE::QemuServer::Helpers::vm_running_locally($vmid);

    for my $di ($disks->@*) {
        if (my $volid = $di->{'fleece-volid'}) {
            if ($qemu_server_9) {
                my $node_name = "$di->{qmdevice}-fleecing";
                eval {
                    PVE::QemuServer::Blockdev::detach(
                        PVE::QemuServer::Monitor::vm_qmp_peer($vmid), $node_name,
                    );
                };
                next;
            }
            my $devid = "$di->{qmdevice}-fleecing";
            $devid =~ s/^drive-//; # re-added by qemu_drivedel()
            eval { qemu_drivedel($vmid, $devid) };
        }
    }
}

my sub attach_fleecing_images {
    my ($self, $disks, $vmid, $format) = @_;

    # unconditionally try to remove potential left-overs from a previous backup
    detach_fleecing_images($disks, $vmid);

    my $vollist = [map { $_->{'fleece-volid'} } grep { $_->{'fleece-volid'} } $disks->@*];
    PVE::Storage::activate_volumes($self->{storecfg}, $vollist);

    for my $di ($disks->@*) {
        if (my $volid = $di->{'fleece-volid'}) {
            $self->loginfo("$di->{qmdevice}: attaching fleecing image $volid to QEMU");

            if ($qemu_server_9) {
                my ($interface, $index) =
                    PVE::QemuServer::Drive::parse_drive_interface($di->{virtdev});
                my $drive = {
                    file => $volid,
                    interface => $interface,
                    index => $index,
                    format => $format,
                    discard => 'on',
                };
                my $options = { fleecing => 1 };
                $options->{'tpm-backup'} = 1 if $interface eq 'tpmstate';
                # Specify size explicitly, to make it work if storage backend rounded up size
                # for fleecing image when allocating.
                $options->{size} = $di->{'block-node-size'} if $format eq 'raw';
                PVE::QemuServer::Blockdev::attach($self->{storecfg}, $vmid, $drive, $options);
                next;
            }

            my $path = PVE::Storage::path($self->{storecfg}, $volid);
            my $devid = "$di->{qmdevice}-fleecing";
            my $drive = "file=$path,if=none,id=$devid,format=$format,discard=unmap";
            # Specify size explicitly, to make it work if storage backend rounded up size for
            # fleecing image when allocating.
            $drive .= ",size=$di->{'block-node-size'}" if $format eq 'raw';
            $drive =~ s/\\/\\\\/g;
            my $ret = hmp_cmd($vmid, "drive_add auto \"$drive\"", 60);
            die "attaching fleecing image $volid failed - $ret\n" if $ret !~ m/OK/s;
        }
    }
}

# qcow2 where the fleecing storage supports it; qemu-server 9 leaves the
# choice to the storage layer's hint resolution
my $fleecing_format = sub {
    my ($self, $storeid) = @_;

    if ($qemu_server_9) {
        return PVE::Storage::resolve_format_hint($self->{storecfg}, $storeid, 'qcow2');
    }
    my ($default_format, $valid_formats) =
        PVE::Storage::storage_default_format($self->{storecfg}, $storeid);
    return scalar(grep { $_ eq 'qcow2' } $valid_formats->@*) ? 'qcow2' : 'raw';
};

my sub check_and_prepare_fleecing {
    my ($self, $vmid, $fleecing_opts, $disks, $is_template, $qemu_support, $all_images) = @_;

    # Even if the VM was started specifically for fleecing, it's possible that the VM is resumed and
    # then starts doing IO. For VMs that are not resumed the fleecing images will just stay empty,
    # so there is no big cost.

    my $use_fleecing = $fleecing_opts && $fleecing_opts->{enabled} && !$is_template;

    if ($use_fleecing && !$qemu_support->{'backup-fleecing'}) {
        $self->log(
            'warn',
            "running QEMU version does not support backup fleecing - continuing without",
        );
        $use_fleecing = 0;
    }

    # clean up potential left-overs from a previous attempt
    eval {
        PVE::QemuConfig::cleanup_fleecing_images(
            $vmid,
            $self->{storecfg},
            sub { $self->log($_[0], $_[1]); },
        );
    };
    $self->log('warn', "attempt to clean up left-over fleecing images failed - $@") if $@;

    if ($use_fleecing) {
        $self->query_block_node_sizes($vmid, $disks);

        my $format = $fleecing_format->($self, $fleecing_opts->{storage});

        allocate_fleecing_images(
            $self,
            $disks,
            $vmid,
            $fleecing_opts->{storage},
            $format,
            $all_images,
        );
        attach_fleecing_images($self, $disks, $vmid, $format);
    }

    return $use_fleecing;
}

sub archive_pbs {
    my ($self, $task, $vmid) = @_;

    my $conffile = "$task->{tmpdir}/qemu-server.conf";
    my $firewall = "$task->{tmpdir}/qemu-server.fw";

    my $opts = $self->{vzdump}->{opts};
    my $scfg = $opts->{scfg};

    my $starttime = time();

    my $fingerprint = $scfg->{fingerprint};
    my $repo = PVE::PBSClient::get_repository($scfg);
    my $password = PVE::Storage::PBSPlugin::pbs_get_password($scfg, $opts->{storage});
    my ($keyfile, $master_keyfile) = $self->get_and_check_pbs_encryption_config();

    my $diskcount = scalar(@{ $task->{disks} });
    # proxmox-backup-client can only handle raw files and block devs, so only use it (directly) for
    # disk-less VMs
    if (!$diskcount) {
        $self->loginfo("backup contains no disks");

        local $ENV{PBS_PASSWORD} = $password;
        local $ENV{PBS_FINGERPRINT} = $fingerprint if defined($fingerprint);
        my $cmd = [
            $pbs_client_binary,
            'backup',
            '--repository',
            $repo,
            '--backup-type',
            'vm',
            '--backup-id',
            "$vmid",
            '--backup-time',
            $task->{backup_time},
        ];
        if (defined(my $ns = $scfg->{namespace})) {
            push @$cmd, '--ns', $ns;
        }
        if (defined($keyfile)) {
            push @$cmd, '--keyfile', $keyfile;
            push @$cmd, '--master-pubkey-file', $master_keyfile if defined($master_keyfile);
        }

        push @$cmd, "qemu-server.conf:$conffile";
        push @$cmd, "fw.conf:$firewall" if -e $firewall;

        $self->loginfo("starting diskless backup");
        $self->loginfo(join(' ', @$cmd));

        $self->cmd($cmd);

        return;
    }

    # get list early so we die on unknown drive types before doing anything
    my $devlist = _get_task_devlist($task);

    my $backup_job_uuid;
    eval {
        $SIG{INT} = $SIG{TERM} = $SIG{QUIT} = $SIG{HUP} = $SIG{PIPE} = sub {
            die "interrupted by signal\n";
        };

        $self->enforce_vm_running_for_backup($vmid);
        $self->{qmeventd_fh} = PVE::QemuServer::register_qmeventd_handle($vmid);

        my $qemu_support = eval { mon_cmd($vmid, "query-proxmox-support") };
        my $err = $@;
        if (!$qemu_support || $err) {
            die "query-proxmox-support returned empty value\n" if !$err;
            if ($err =~ m/The command query-proxmox-support has not been found/) {
                die "PBS backups are not supported by the running QEMU version. Please make "
                    . "sure you've installed the latest version and the VM has been restarted.\n";
            } else {
                die "QMP command query-proxmox-support failed - $err\n";
            }
        }

        # pve-qemu supports it since 5.2.0-1 (PVE 6.4), so safe to die since PVE 8
        die "master key configured but running QEMU version does not support master keys\n"
            if !$qemu_support->{'pbs-masterkey'} && defined($master_keyfile);

        $attach_tpmstate_drive->($self, $task, $vmid);

        my $is_template = PVE::QemuConfig->is_template($self->{vmlist}->{$vmid});

        $task->{'use-fleecing'} = check_and_prepare_fleecing(
            $self, $vmid, $opts->{fleecing}, $task->{disks}, $is_template, $qemu_support, 0,
        );

        my $fs_frozen = $self->qga_fs_freeze($task, $vmid);

        my $params = {
            format => "pbs",
            'backup-file' => $repo,
            'backup-id' => "$vmid",
            'backup-time' => $task->{backup_time},
            password => $password,
            devlist => $devlist,
            'config-file' => $conffile,
        };
        $params->{fleecing} = JSON::true if $task->{'use-fleecing'};

        if (defined(my $ns = $scfg->{namespace})) {
            $params->{'backup-ns'} = $ns;
        }

        $params->{speed} = $opts->{bwlimit} * 1024 if $opts->{bwlimit};
        add_backup_performance_options($params, $opts->{performance}, $qemu_support);

        $params->{fingerprint} = $fingerprint if defined($fingerprint);
        $params->{'firewall-file'} = $firewall if -e $firewall;

        $params->{encrypt} = defined($keyfile) ? JSON::true : JSON::false;
        if (defined($keyfile)) {
            $params->{keyfile} = $keyfile;
            $params->{"master-keyfile"} = $master_keyfile if defined($master_keyfile);
        }

        $params->{'use-dirty-bitmap'} = JSON::true
            if $qemu_support->{'pbs-dirty-bitmap'} && !$is_template;

        $params->{timeout} = 125; # give some time to connect to the backup server

        $self->loginfo("starting backup via QMP command") if $qemu_server_9;
        my $res = eval { mon_cmd($vmid, "backup", %$params) };
        my $qmperr = $@;
        $backup_job_uuid = $res->{UUID} if $res;

        if ($fs_frozen) {
            $self->qga_fs_thaw($vmid);
        }

        die $qmperr if $qmperr;
        die "got no uuid for backup task\n" if !defined($backup_job_uuid);

        $self->loginfo("started backup task '$backup_job_uuid'");

        $self->resume_vm_after_job_start($task, $vmid);

        my $stat = $query_backup_status_loop->($self, $vmid, $backup_job_uuid, $qemu_support);
        $task->{size} = $stat->{total};
    };
    my $err = $@;
    if ($err) {
        $self->logerr($err);
        $self->mon_backup_cancel($vmid);
        $self->resume_vm_after_job_start($task, $vmid);
    }
    $self->restore_vm_power_state($vmid);

    die $err if $err;
}

# The compressor reads a pipe whose write end goes to QEMU. The engine starts
# it with nothing but that pipe, the output file and stderr.
my $fork_compressor_pipe = sub {
    my ($self, $comp, $outfileno) = @_;

    return PVE::VZDump::QemuServer::Engine::start_compressor($comp, $outfileno);
};

# Cleans up the compressor when archive_vma is left before it did so itself:
# closes the pipe's write end if still open (the original leaks it when the
# job does not start) and kills and reaps the child (the original leaves it
# behind when its own error path dies, e.g. resuming a VM whose QEMU is gone).
package PVE::VZDump::QemuServer::CompressorGuard {
    sub new {
        my ($class, $cpid_ref) = @_;
        return bless { cpid => $cpid_ref }, $class;
    }

    # the pipe is recognized by its inode, so a closed and reused fd number
    # is left alone
    sub watch_pipe {
        my ($self, $fd) = @_;
        $self->{pipe} = [$fd, (POSIX::fstat($fd))[1]];
    }

    sub DESTROY {
        my ($self) = @_;
        local ($?, $!);
        if (my $pipe = $self->{pipe}) {
            my ($fd, $inode) = @$pipe;
            my @stat = POSIX::fstat($fd);
            POSIX::close($fd) if @stat && $stat[1] == $inode;
        }
        my $cpid = ${ $self->{cpid} } or return;
        return if waitpid($cpid, POSIX::WNOHANG()) != 0; # reaped now or before
        kill(9, $cpid);
        waitpid($cpid, 0);
    }
}

# --- stock QEMU (engine's snapshot path) ---
# Without pve-qemu's 'backup' command the engine snapshots the disks itself
# (copy-before-write + snapshot-access, exported over NBD) and writes the VMA.
# Fleecing images come from the fleecing storage when the option names one,
# else the engine keeps temp images in the task's tmpdir.
my $prepare_upstream_fleecing = sub {
    my ($self, $vmid, $fleecing_opts, $disks, $is_template) = @_;

    return 0 if !$fleecing_opts || !$fleecing_opts->{enabled} || !$fleecing_opts->{storage};
    return 0 if $is_template;

    $self->query_block_node_sizes($vmid, $disks);
    my $format = $fleecing_format->($self, $fleecing_opts->{storage});
    allocate_fleecing_images($self, $disks, $vmid, $fleecing_opts->{storage}, $format, 0);
    $_->{'fleece-format'} = $format for grep { $_->{'fleece-volid'} } $disks->@*;

    return 1;
};

my $archive_vma_upstream = sub {
    my ($self, $task, $vmid, $outfileno, $speed, $conffile, $firewall) = @_;

    my $disks = [];
    for my $di ($task->{disks}->@*) {
        my $disk = { device => $di->{qmdevice} };
        if (my $volid = $di->{'fleece-volid'}) {
            $disk->{fleecing_path} = PVE::Storage::path($self->{storecfg}, $volid);
            $disk->{fleecing_format} = $di->{'fleece-format'};
        }
        push $disks->@*, $disk;
    }

    PVE::VZDump::QemuServer::Engine::upstream_backup(
        {
            qmp_socket => qmp_socket_checked($vmid),
            vmid => $vmid,
            work_dir => $task->{tmpdir},
            output_fd => $outfileno,
            bytes_per_second => $speed,
            disks => $disks,
            config_files => [$conffile, -e $firewall ? $firewall : ()],
        },
        {
            log => sub { $self->loginfo($_[0]) },
            freeze => sub { $self->qga_fs_freeze($task, $vmid) },
            thaw => sub { $self->qga_fs_thaw($vmid) },
            started => sub {
                $self->loginfo("started backup task '$_[0]'");
                $self->resume_vm_after_job_start($task, $vmid);
            },
        },
    );
};
# --- end stock QEMU ---

sub archive_vma {
    my ($self, $task, $vmid, $filename, $comp) = @_;

    my $conffile = "$task->{tmpdir}/qemu-server.conf";
    my $firewall = "$task->{tmpdir}/qemu-server.fw";

    my $opts = $self->{vzdump}->{opts};

    my $starttime = time();

    my $speed = 0;
    if ($opts->{bwlimit}) {
        $speed = $opts->{bwlimit} * 1024;
    }

    my $is_template = PVE::QemuConfig->is_template($self->{vmlist}->{$vmid});

    my $diskcount = scalar(@{ $task->{disks} });
    if (!$diskcount) {
        $self->loginfo("backup contains no disks");

        my $outcmd;
        if ($comp) {
            $outcmd = "exec:$comp";
        } else {
            $outcmd = "exec:cat";
        }

        $outcmd .= " > $filename" if !$opts->{stdout};

        my $cmd = [$vma_binary, 'create', '-v', '-c', $conffile];
        push @$cmd, '-c', $firewall if -e $firewall;
        push @$cmd, $outcmd;

        $self->loginfo("starting diskless backup");
        $self->loginfo(join(' ', @$cmd));

        if ($opts->{stdout}) {
            $self->cmd($cmd, output => ">&" . fileno($opts->{stdout}));
        } else {
            $self->cmd($cmd);
        }

        return;
    }

    my $devlist = _get_task_devlist($task);

    my $cpid;
    my $compressor_guard = PVE::VZDump::QemuServer::CompressorGuard->new(\$cpid);
    my $backup_job_uuid;
    my $upstream; # stock QEMU: the engine's snapshot path

    eval {
        $SIG{INT} = $SIG{TERM} = $SIG{QUIT} = $SIG{HUP} = $SIG{PIPE} = sub {
            die "interrupted by signal\n";
        };

        $self->enforce_vm_running_for_backup($vmid);
        $self->{qmeventd_fh} = PVE::QemuServer::register_qmeventd_handle($vmid);

        # Currently, failing to determine Proxmox support is not critical here, because it's only
        # used for performance settings like 'max-workers'.
        my $qemu_support = eval { mon_cmd($vmid, "query-proxmox-support") };
        # --- stock QEMU ---
        if ($@ && $@ =~ m/The command query-proxmox-support has not been found/) {
            $upstream = 1;
            $self->loginfo("QEMU without Proxmox backup support - using the engine's point-in-time"
                . " snapshot over NBD");
        } else {
            log_warn($@) if $@;
        }
        # --- end stock QEMU ---

        $attach_tpmstate_drive->($self, $task, $vmid);

        $task->{'use-fleecing'} =
            $upstream
            ? $prepare_upstream_fleecing->(
                $self, $vmid, $opts->{fleecing}, $task->{disks}, $is_template,
            )
            : check_and_prepare_fleecing(
                $self, $vmid, $opts->{fleecing}, $task->{disks}, $is_template, $qemu_support, 0,
            );

        my $outfh;
        if ($opts->{stdout}) {
            $outfh = $opts->{stdout};
        } else {
            $outfh = IO::File->new($filename, "w")
                || die "unable to open file '$filename' - $!\n";
        }
        my $outfileno = fileno($outfh);

        if ($comp) {
            ($cpid, $outfileno) = $fork_compressor_pipe->($self, $comp, $outfileno);
            $compressor_guard->watch_pipe($outfileno);
        }

        # --- stock QEMU: the engine replaces getfd/backup and the status loop ---
        if ($upstream) {
            eval {
                $archive_vma_upstream->(
                    $self, $task, $vmid, $outfileno, $speed, $conffile, $firewall,
                );
            };
            my $upstream_err = $@;
            POSIX::close($outfileno) if $cpid; # the compressor's input ends here
            die $upstream_err if $upstream_err;
            return; # leaves this eval: the compressor is reaped below
        }
        # --- end stock QEMU ---

        # getfd and the backup that takes the fd over travel on one connection, as
        # PVE::QMPClient's queue does; each callback runs when its reply arrives
        my $backup_cb = sub {
            my ($vmid, $result) = @_;
            $backup_job_uuid = $result->{UUID};
        };
        my $add_fd_cb = sub {
            my ($vmid, $result, $queue) = @_;

            my $params = {
                'backup-file' => "/dev/fdname/backup",
                speed => $speed,
                'config-file' => $conffile,
                devlist => $devlist,
            };
            $params->{'firewall-file'} = $firewall if -e $firewall;
            $params->{fleecing} = JSON::true if $task->{'use-fleecing'};
            add_backup_performance_options($params, $opts->{performance}, $qemu_support);

            push $queue->@*, ['backup', $params, $backup_cb];
        };

        my $fs_frozen = $self->qga_fs_freeze($task, $vmid);

        $self->loginfo("starting backup via QMP command") if $qemu_server_9;
        eval {
            PVE::VZDump::QemuServer::Engine::qmp_batch(
                vm_socket($vmid),
                $vmid,
                [['getfd', { fdname => "backup" }, $add_fd_cb]],
                $outfileno,
                30,
            );
        };
        my $qmperr = $@;

        if ($fs_frozen) {
            $self->qga_fs_thaw($vmid);
        }

        die "executing QMP command to start backup failed - $qmperr" if $qmperr && $qemu_server_9;
        die $qmperr if $qmperr;

        if ($cpid) {
            POSIX::close($outfileno) == 0
                || die "close output file handle failed\n";
        }

        die "got no uuid for backup task\n" if !defined($backup_job_uuid);

        $self->loginfo("started backup task '$backup_job_uuid'");

        $self->resume_vm_after_job_start($task, $vmid);

        $query_backup_status_loop->($self, $vmid, $backup_job_uuid);
    };
    my $err = $@;
    if ($err) {
        $self->logerr($err);
        $self->mon_backup_cancel($vmid) if !$upstream; # the engine has cleaned up
        $self->resume_vm_after_job_start($task, $vmid);
    }

    $self->restore_vm_power_state($vmid);

    if ($err) {
        if ($cpid) {
            kill(9, $cpid);
            waitpid($cpid, 0);
        }
        die $err;
    }

    if ($cpid && (waitpid($cpid, 0) > 0)) {
        my $stat = $?;
        my $ec = $stat >> 8;
        my $signal = $stat & 127;
        if ($ec || $signal) {
            die "$comp failed - wrong exit status $ec" . ($signal ? " (signal $signal)\n" : "\n");
        }
    }
}

sub _get_task_devlist {
    my ($task) = @_;

    my $devlist = '';
    foreach my $di (@{ $task->{disks} }) {
        if ($di->{type} eq 'block' || $di->{type} eq 'file') {
            $devlist .= ',' if $devlist;
            $devlist .= $di->{qmdevice};
        } else {
            die "implement me (type '$di->{type}')";
        }
    }
    return $devlist;
}

# qemu-server 9: the checks, their log lines and the commands are Agent.pm's
my $qga_fs_freeze_agent = sub {
    my ($self, $task, $vmid) = @_;
    return
        if $task->{mode} eq 'stop'
        || !$self->{vm_was_running}
        || $self->{vm_was_paused};

    my $agent_str = $self->{vmlist}->{$vmid}->{agent};

    my $logfunc = sub {
        my ($msg, $level) = @_; # Agent.pm passes the message first
        $level //= 'info';
        $self->log($level, $msg);
    };
    if (!PVE::QemuServer::Agent::guest_fs_freeze_applicable($agent_str, $vmid, $logfunc)) {
        return;
    }

    $self->loginfo("issuing guest-agent 'fs-freeze' command");
    eval { PVE::QemuServer::Agent::guest_fs_freeze($vmid); };
    $self->logerr($@) if $@;

    return 1; # even on error, ensure we always thaw again
};

sub qga_fs_freeze {
    my ($self, $task, $vmid) = @_;

    return $qga_fs_freeze_agent->($self, $task, $vmid) if $qemu_server_9;

    return
        if !$self->{vmlist}->{$vmid}->{agent}
        || $task->{mode} eq 'stop'
        || !$self->{vm_was_running}
        || $self->{vm_was_paused};

    if (!qga_check_running($vmid, 1)) {
        $self->loginfo("skipping guest-agent 'fs-freeze', agent configured but not running?");
        return;
    }

    my $freeze = PVE::QemuServer::get_qga_key($self->{vmlist}->{$vmid}, 'freeze-fs-on-backup') // 1;
    if (!$freeze) {
        $self->loginfo("skipping guest-agent 'fs-freeze', disabled in VM options");
        return;
    }

    $self->loginfo("issuing guest-agent 'fs-freeze' command");
    eval { mon_cmd($vmid, "guest-fsfreeze-freeze") };
    $self->logerr($@) if $@;

    return 1; # even on mon command error, ensure we always thaw again
}

# only call if fs_freeze return 1
sub qga_fs_thaw {
    my ($self, $vmid) = @_;

    $self->loginfo("issuing guest-agent 'fs-thaw' command");
    if ($qemu_server_9) {
        eval { PVE::QemuServer::Agent::guest_fs_thaw($vmid); };
        $self->logerr($@) if $@;
        return;
    }
    eval { mon_cmd($vmid, "guest-fsfreeze-thaw") };
    $self->logerr($@) if $@;
}

# qemu-server 9: block info keyed by drive id; the TPM backup node has no
# front-end device, so its size comes from query-named-block-nodes
my $block_node_size_blockdev = sub {
    my ($vmid, $block_info, $drive_key) = @_;

    if ($drive_key eq 'tpmstate0') {
        for my $info (mon_cmd($vmid, 'query-named-block-nodes')->@*) {
            next if $info->{'node-name'} ne 'drive-tpmstate0-backup';
            return $info->{image}->{'virtual-size'};
        }
        return undef;
    }
    return eval { $block_info->{$drive_key}->{inserted}->{image}->{'virtual-size'}; };
};

# The size for fleecing images needs to be exactly the same size as QEMU sees. E.g. EFI disk can be
# attached with a smaller size then the underyling image on the storage.
sub query_block_node_sizes {
    my ($self, $vmid, $disks) = @_;

    my $block_info;
    if ($qemu_server_9) {
        $block_info = PVE::QemuServer::Blockdev::get_block_info($vmid);
    } else {
        $block_info = mon_cmd($vmid, "query-block");
        $block_info = { map { $_->{device} => $_ } $block_info->@* };
    }

    for my $diskinfo ($disks->@*) {
        my $drive_key = $diskinfo->{virtdev};
        my $block_node_size;
        if ($qemu_server_9) {
            $block_node_size = $block_node_size_blockdev->($vmid, $block_info, $drive_key);
        } else {
            $drive_key .= "-backup" if $drive_key eq 'tpmstate0';
            $block_node_size =
                eval { $block_info->{"drive-$drive_key"}->{inserted}->{image}->{'virtual-size'}; };
        }
        if (!$block_node_size) {
            $self->loginfo(
                "could not determine block node size of drive '$drive_key' - using fallback");
            $block_node_size = $diskinfo->{size}
                or die "could not determine size of drive '$drive_key'\n";
        }
        $diskinfo->{'block-node-size'} = $block_node_size;
    }

    return;
}

# we need a running QEMU/KVM process for backup, starts a paused (prelaunch)
# one if VM isn't already running
sub enforce_vm_running_for_backup {
    my ($self, $vmid) = @_;

    if (PVE::QemuServer::check_running($vmid)) {
        $self->{vm_was_running} = 1;
        return;
    }

    eval {
        $self->loginfo("starting kvm to execute backup task");
        # start with skiplock
        my $params = {
            skiplock => 1,
            skiptemplate => 1,
            paused => 1,
        };
        PVE::QemuServer::vm_start($self->{storecfg}, $vmid, $params);
    };
    die $@ if $@;
}

# resume VM again once in a clear state (stop mode backup of running VM)
sub resume_vm_after_job_start {
    my ($self, $task, $vmid) = @_;

    return if !$self->{vm_was_running} || $self->{vm_was_paused};

    if (my $stoptime = $task->{vmstoptime}) {
        my $delay = time() - $task->{vmstoptime};
        $task->{vmstoptime} = undef; # avoid printing 'online after ..' twice
        $self->loginfo("resuming VM again after $delay seconds");
    } else {
        $self->loginfo("resuming VM again");
    }
    mon_cmd($vmid, 'cont', timeout => 45);
}

# stop again if VM was not running before
sub restore_vm_power_state {
    my ($self, $vmid) = @_;

    # we always let VMs keep running
    return if $self->{vm_was_running};

    eval {
        my $resp = mon_cmd($vmid, 'query-status');
        my $status = $resp && $resp->{status} ? $resp->{status} : 'unknown';
        if ($status eq 'prelaunch') {
            $self->loginfo("stopping kvm after backup task");
            PVE::QemuServer::vm_stop($self->{storecfg}, $vmid, 1);
        } else {
            $self->loginfo("kvm status changed after backup ('$status') - keep VM running");
        }
    };
    warn $@ if $@;
}

sub mon_backup_cancel {
    my ($self, $vmid) = @_;

    $self->loginfo("aborting backup job");
    eval { mon_cmd($vmid, 'backup-cancel') };
    $self->logerr($@) if $@;
}

sub snapshot {
    my ($self, $task, $vmid) = @_;

    # nothing to do
}

my sub cleanup_file_handles {
    my ($self, $file_handles) = @_;

    for my $file_handle ($file_handles->@*) {
        close($file_handle) or $self->log('warn', "unable to close file handle - $!");
    }
}

my sub cleanup_nbd_mounts {
    my ($self, $info) = @_;

    for my $mount_point (keys $info->%*) {
        my $pid_file = delete($info->{$mount_point}->{'pid-file'});
        unlink($pid_file) or $self->log('warn', "unable to unlink '$pid_file' - $!");
        # Do a lazy unmount, because the target might still be busy even if the file handle was
        # already closed.
        eval { run_command(['fusermount', '-z', '-u', $mount_point]); };
        if (my $err = $@) {
            delete $info->{$mount_point};
            $self->log('warn', "unable to unmount NBD backup source '$mount_point' - $err");
        }
    }

    # Wait for the unmount before cleaning up child PIDs to avoid 'nbdfuse' processes being
    # interrupted by the signals issued there.
    my $waited;
    my $wait_limit = 50; # 5 seconds
    for ($waited = 0; $waited < $wait_limit && scalar(keys $info->%*); $waited++) {
        for my $mount_point (keys $info->%*) {
            delete($info->{$mount_point}) if !-e $info->{$mount_point}->{'virtual-file'};
            eval { remove_tree($mount_point); };
        }
        usleep(100_000);
    }
    # just informational, remaining child processes will be killed afterwards
    $self->loginfo("unable to gracefully cleanup NBD fuse mounts") if scalar(keys $info->%*) != 0;
}

my sub cleanup_child_processes {
    my ($self, $cpids) = @_;

    my $waited;
    my $wait_limit = 5;
    for ($waited = 0; $waited < $wait_limit && scalar(keys $cpids->%*); $waited++) {
        for my $cpid (keys $cpids->%*) {
            delete($cpids->{$cpid}) if waitpid($cpid, POSIX::WNOHANG) > 0;
        }
        if ($waited == 0) {
            kill 15, $_ for keys $cpids->%*;
        }
        sleep 1;
    }
    if ($waited == $wait_limit && scalar(keys $cpids->%*)) {
        kill 9, $_ for keys $cpids->%*;
        sleep 1;
        for my $cpid (keys $cpids->%*) {
            delete($cpids->{$cpid}) if waitpid($cpid, POSIX::WNOHANG) > 0;
        }
        $self->log('warn', "unable to collect child process '$_'") for keys $cpids->%*;
    }
}

sub cleanup {
    my ($self, $task, $vmid) = @_;

    # If VM was started only for backup, it is already stopped now.
    if (PVE::QemuServer::Helpers::vm_running_locally($vmid)) {
        if ($task->{cleanup}->{'nbd-stop'}) {
            eval { nbd_stop($vmid); };
            $self->logerr($@) if $@;
        }

        if (my $info = $task->{cleanup}->{'backup-access-teardown'}) {
            my $params = {
                'target-id' => $info->{'target-id'},
                timeout => 60,
                success => $info->{success} ? JSON::true : JSON::false,
            };

            $self->loginfo("tearing down backup-access");
            eval { mon_cmd($vmid, "backup-access-teardown", $params->%*) };
            $self->logerr($@) if $@;
        }

        $detach_tpmstate_drive->($task, $vmid);
    }

    if ($task->{'use-fleecing'}) {
        eval {
            detach_fleecing_images($task->{disks}, $vmid);
            PVE::QemuConfig::cleanup_fleecing_images(
                $vmid,
                $self->{storecfg},
                sub { $self->log($_[0], $_[1]); },
            );
        };
        $self->log('warn', "attempt to clean up fleecing images failed - $@") if $@;
    }

    if ($self->{qmeventd_fh}) {
        close($self->{qmeventd_fh});
    }

    cleanup_file_handles($self, $task->{cleanup}->{'file-handles'})
        if $task->{cleanup}->{'file-handles'};

    cleanup_nbd_mounts($self, $task->{cleanup}->{'nbd-mounts'})
        if $task->{cleanup}->{'nbd-mounts'};

    cleanup_child_processes($self, $task->{cleanup}->{'child-pids'})
        if $task->{cleanup}->{'child-pids'};

    if (my $dir = $task->{'backup-access-root-dir'}) {
        eval { remove_tree($dir) };
        $self->log('warn', "unable to cleanup directory $dir - $@") if $@;
    }
}
my sub virtual_file_backup_prepare {
    my ($self, $vmid, $task, $device_name, $size, $nbd_path, $bitmap_name) = @_;

    my $cleanup = $task->{cleanup};

    my $nbd_uri = "nbd+unix:///${device_name}?socket=${nbd_path}";

    my $error_fh;
    my $next_dirty_region;

    # If there is no dirty bitmap, it can be treated as if there's a full dirty one. The output of
    # nbdinfo is a list of tuples with offset, length, type, description. The first bit of 'type' is
    # set when the bitmap is dirty, see QEMU's docs/interop/nbd.txt
    my $dirty_bitmap = [];
    if ($bitmap_name) {
        my $input = IO::File->new();
        my $info = IO::File->new();
        $error_fh = IO::File->new();
        my $nbdinfo_cmd = ["nbdinfo", $nbd_uri, "--map=qemu:dirty-bitmap:${bitmap_name}"];
        my $cpid = open3($input, $info, $error_fh, $nbdinfo_cmd->@*)
            or die "failed to spawn nbdinfo child - $!\n";
        $cleanup->{'child-pids'}->{$cpid} = 1;

        $next_dirty_region = sub {
            my ($offset, $length, $type);
            do {
                my $line = <$info>;
                return if !$line;
                die "unexpected output from nbdinfo - $line\n"
                    if $line !~ m/^\s*(\d+)\s*(\d+)\s*(\d+)/; # also untaints
                ($offset, $length, $type) = ($1, $2, $3);
            } while (($type & 0x1) == 0); # not dirty
            return ($offset, $length);
        };
    } else {
        my $done = 0;
        $next_dirty_region = sub {
            return if $done;
            $done = 1;
            return (0, $size);
        };
    }

    my $mount_point =
        $task->{'backup-access-root-dir'} . "/${vmid}-nbd.backup-access.${device_name}.$$";
    make_path($mount_point) or die "unable to create directory $mount_point\n";
    $cleanup->{'nbd-mounts'}->{$mount_point} = {};

    # Note that nbdfuse requires "$dir/$file". A single name would be treated as a dir and the file
    # would be named "$dir/nbd" then
    my $virtual_file = "${mount_point}/${device_name}";
    $cleanup->{'nbd-mounts'}->{$mount_point}->{'virtual-file'} = $virtual_file;

    my $pid_file = "${mount_point}.pid";
    PVE::Tools::file_set_contents($pid_file, '', 0600);
    $cleanup->{'nbd-mounts'}->{$mount_point}->{'pid-file'} = $pid_file;

    my $cpid = fork() // die "fork failed: $!\n";
    if (!$cpid) {
        # By default, access will be restricted to the current user, because the allow_other fuse
        # mount option is not used.
        eval {
            run_command(
                ["nbdfuse", '--pidfile', $pid_file, $virtual_file, $nbd_uri],
                logfunc => sub { $self->loginfo("nbdfuse '$virtual_file': $_[0]") },
            );
        };
        if (my $err = $@) {
            eval { $self->loginfo($err); };
            POSIX::_exit(1);
        }
        POSIX::_exit(0);
    }
    $cleanup->{'child-pids'}->{$cpid} = 1;

    my ($virtual_file_ready, $waited) = (0, 0);
    while (!$virtual_file_ready && $waited < 30) { # 3 seconds
        my $pid = PVE::Tools::file_read_firstline($pid_file);
        if ($pid) {
            $virtual_file_ready = 1;
        } else {
            usleep(100_000);
            $waited++;
        }
    }
    die "timeout setting up virtual file '$virtual_file'" if !$virtual_file_ready;

    $self->loginfo("provided NBD export as a virtual file '$virtual_file'");

    # NOTE O_DIRECT, because each block should be read exactly once and also because fuse will try
    # to read ahead otherwise, which would produce warning messages if the next block is not
    # mapped/allocated for the NBD export in case of incremental backup. Open as writable to support
    # discard.
    my $fh = IO::File->new($virtual_file, O_RDWR | O_DIRECT)
        or die "unable to open backup source '$virtual_file' - $!\n";
    push $cleanup->{'file-handles'}->@*, $fh;

    return ($fh, $next_dirty_region);
}

my sub backup_access_to_volume_info {
    my ($self, $vmid, $task, $backup_access_info, $mechanism, $nbd_path) = @_;

    my $bitmap_action_to_status = {
        'not-used' => 'none',
        'not-used-removed' => 'none',
        'new' => 'new',
        'used' => 'reuse',
        'invalid' => 'new',
        'missing-recreated' => 'new',
    };

    my $volumes = {};

    for my $info ($backup_access_info->@*) {
        my $bitmap_status = 'none';
        my $bitmap_name;
        if (my $bitmap_action = $info->{'bitmap-action'}) {
            $bitmap_status = $bitmap_action_to_status->{$bitmap_action}
                or die "got unexpected bitmap action '$bitmap_action'\n";

            $bitmap_name = $info->{'bitmap-name'} or die "bitmap-name is not present\n";
        }

        my ($device, $size) = $info->@{qw(device size)};

        $volumes->{$device}->{'bitmap-mode'} = $bitmap_status;
        $volumes->{$device}->{size} = $size;

        if ($mechanism eq 'file-handle') {
            my ($fh, $next_dirty_region) = virtual_file_backup_prepare(
                $self, $vmid, $task, $device, $size, $nbd_path, $bitmap_name,
            );
            $volumes->{$device}->{'file-handle'} = $fh;
            $volumes->{$device}->{'next-dirty-region'} = $next_dirty_region;
        } elsif ($mechanism eq 'nbd') {
            $volumes->{$device}->{'nbd-path'} = $nbd_path;
            $volumes->{$device}->{'bitmap-name'} = $bitmap_name;
        } else {
            die "internal error - "
                . ($qemu_server_9 ? "unknown" : "unkown")
                . " mechanism '$mechanism'";
        }
    }

    return $volumes;
}

sub archive_external {
    my ($self, $task, $vmid) = @_;

    $task->{'backup-access-root-dir'} = "$backup_access_run_dir/${vmid}.backup-access.$$/";
    make_path($task->{'backup-access-root-dir'})
        or die "unable to create directory $task->{'backup-access-root-dir'}\n";
    chmod(0700, $task->{'backup-access-root-dir'})
        or die "unable to chmod directory $task->{'backup-access-root-dir'}\n";

    my $guest_config = PVE::Tools::file_get_contents("$task->{tmpdir}/qemu-server.conf");
    my $firewall_file = "$task->{tmpdir}/qemu-server.fw";

    my $opts = $self->{vzdump}->{opts};

    my $backup_provider = $self->{vzdump}->{'backup-provider'};

    $self->loginfo("starting external backup via " . $backup_provider->provider_name());

    my $starttime = time();

    $self->enforce_vm_running_for_backup($vmid);
    $self->{qmeventd_fh} = PVE::QemuServer::register_qmeventd_handle($vmid);

    eval {
        $SIG{INT} = $SIG{TERM} = $SIG{QUIT} = $SIG{HUP} = $SIG{PIPE} = sub {
            die "interrupted by signal\n";
        };

        my $qemu_support = mon_cmd($vmid, "query-proxmox-support");

        if (!$qemu_support->{'backup-access-api'}) {
            die "backups access API required for external provider backup is not supported by"
                . " the running QEMU version. Please make sure you've installed the latest "
                . " version and the VM has been restarted.\n";
        }

        $attach_tpmstate_drive->($self, $task, $vmid);

        my $is_template = PVE::QemuConfig->is_template($self->{vmlist}->{$vmid});

        my $fleecing = check_and_prepare_fleecing(
            $self, $vmid, $opts->{fleecing}, $task->{disks}, $is_template, $qemu_support, 1,
        );
        die "cannot setup backup access without fleecing\n" if !$fleecing;

        $task->{'use-fleecing'} = 1;

        my $target_id = "snapshot-access:$opts->{storage}";

        my $mechanism = $backup_provider->backup_get_mechanism($vmid, 'qemu');
        die "mechanism '$mechanism' requested by backup provider is not supported for VMs\n"
            if $mechanism ne 'file-handle' && $mechanism ne 'nbd';

        $self->loginfo("using backup mechanism '$mechanism'");

        if ($mechanism eq 'file-handle') {
            # For mechanism 'file-handle', the nbdfuse binary is required. Also, the bitmap needs
            # to be passed to the provider. The bitmap cannot be dumped via QMP and doing it via
            # qemu-img is experimental, so use nbdinfo. Both are in libnbd-bin.
            die "need 'nbdfuse' binary from package libnbd-bin\n" if !-e $nbdfuse_binary;
        }

        my $devices = {};
        for my $di ($task->{disks}->@*) {
            my $device_name = $di->{qmdevice};
            die "implement me (type '$di->{type}')"
                if $di->{type} ne 'block' && $di->{type} ne 'file';
            $devices->{$device_name}->{size} = $di->{'block-node-size'};
        }

        my $incremental_info = $backup_provider->backup_vm_query_incremental($vmid, $devices);

        my $qmp_devices = [];
        for my $device (sort keys $devices->%*) {
            my $qmp_device = { device => $device };
            if (defined(my $mode = $incremental_info->{$device})) {
                if ($mode eq 'new' || $mode eq 'use' || $mode eq 'none') {
                    $qmp_device->{'bitmap-mode'} = $mode;
                } else {
                    die "invalid incremental mode '$mode' returned by backup provider plugin\n";
                }
            }
            push($qmp_devices->@*, $qmp_device);
        }

        my $params = {
            'target-id' => $target_id,
            devices => $qmp_devices,
            timeout => 60,
        };

        my $fs_frozen = $self->qga_fs_freeze($task, $vmid);

        $self->loginfo("setting up snapshot-access for backup");

        $task->{cleanup}->{'backup-access-teardown'} =
            { 'target-id' => $target_id, success => 0 };

        my $backup_access_info = eval { mon_cmd($vmid, "backup-access-setup", $params->%*) };
        my $qmperr = $@;

        if ($fs_frozen) {
            $self->qga_fs_thaw($vmid);
        }

        die $qmperr if $qmperr;

        $self->resume_vm_after_job_start($task, $vmid);

        my $bitmap_info = mon_cmd($vmid, 'query-pbs-bitmap-info');
        for my $info (sort { $a->{drive} cmp $b->{drive} } $bitmap_info->@*) {
            my $text = $bitmap_action_to_human->($self, $info);
            my $drive = $info->{drive};
            $drive =~ s/^drive-//; # for consistency
            $self->loginfo("$drive: dirty-bitmap status: $text");
        }

        $self->loginfo("starting NBD server");

        my $nbd_path = "$task->{'backup-access-root-dir'}/${vmid}-nbd.backup-access";
        mon_cmd(
            $vmid,
            "nbd-server-start",
            addr => { type => 'unix', data => { path => $nbd_path } },
        );
        $task->{cleanup}->{'nbd-stop'} = 1;

        for my $info ($backup_access_info->@*) {
            $self->loginfo("adding NBD export for $info->{device}");

            my $export_params = {
                id => $info->{device},
                'node-name' => $info->{'node-name'},
                writable => JSON::true, # for discard
                type => "nbd",
                name => $info->{device}, # NBD export name
            };

            if ($info->{'bitmap-name'}) {
                $export_params->{bitmaps} = [{
                    node => $info->{'bitmap-node-name'},
                    name => $info->{'bitmap-name'},
                }];
            }

            mon_cmd($vmid, "block-export-add", $export_params->%*);
        }

        my $volumes = backup_access_to_volume_info(
            $self, $vmid, $task, $backup_access_info, $mechanism, $nbd_path,
        );

        my $param = {};
        $param->{'bandwidth-limit'} = $opts->{bwlimit} * 1024 if $opts->{bwlimit};
        $param->{'firewall-config'} = PVE::Tools::file_get_contents($firewall_file)
            if -e $firewall_file;

        $backup_provider->backup_vm($vmid, $guest_config, $volumes, $param);
    };
    my $err = $@;

    if ($err) {
        $self->logerr($err);
        $self->resume_vm_after_job_start($task, $vmid);
    } else {
        $task->{cleanup}->{'backup-access-teardown'}->{success} = 1;
    }
    $self->restore_vm_power_state($vmid);

    die $err if $err;
}

1;
