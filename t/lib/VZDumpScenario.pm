package VZDumpScenario;

# A scratch Proxmox node for the plugin's scenario tests and the demo: a
# storage, a VM with disks holding data and zero regions, and a run of the
# vzdump sequence on it with the pve-qemu simulator as the VM's QEMU. Each
# run returns the task log (as vzdump prints it), the VM's log file lines,
# the simulator's command log and the archive; verify_archive() reads the
# archive back with build/vma and compares it with the disks.

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Path qw(make_path remove_tree);
use File::Temp qw(tempdir);
use IO::File;
use JSON;
use POSIX ();

use PVE::QemuConfig;
use PVE::TestNode;
use PVE::Tools;

sub checkout { return PVE::TestNode::checkout_dir() }

# Whether this run is on PVE 9 (qemu-server 9, pve-qemu 10), see VZDumpReleases.
sub pve9 { return PVE::TestNode::release() >= 9 }

sub vma_binary { return checkout() . "/build/vma" }

# Creates the node directory (under $param{dir}, or a fresh temporary one)
# with a 'local' directory storage (at $param{storage_dir}, default inside
# the node) and the dump directory ($param{dump_dir}), and points the
# doubles at it.
sub new {
    my ($class, %param) = @_;

    my $root = $param{dir} // tempdir("vzdump-node-XXXXXX", TMPDIR => 1, CLEANUP => !$ENV{KEEP_NODE});
    $root = abs_path($root);
    $ENV{VZDUMP_TEST_NODE_DIR} = $root;
    $ENV{PATH} = checkout() . "/t/bin:$ENV{PATH}" if $ENV{PATH} !~ m|/t/bin|;

    my $self = bless {
        root => $root,
        storage => $param{storage_dir} // "$root/storage/local",
        dumpdir => $param{dump_dir} // "$root/dump",
    }, $class;
    make_path(
        "$root/etc/pve/nodes/" . PVE::TestNode::nodename() . "/qemu-server",
        "$root/etc/pve/firewall", "$root/etc/pve/priv/storage", "$root/run/qemu-server",
        "$self->{storage}/images", $self->{dumpdir},
    );
    write_file("$root/etc/pve/storage.cfg", <<"CFG");
dir: local
	path $self->{storage}
	content images,backup
CFG
    require PVE::VZDump::QemuServer;
    no warnings 'once';
    $PVE::VZDump::QemuServer::firewall_config_dir = "$root/etc/pve/firewall";
    $PVE::VZDump::QemuServer::vma_binary = vma_binary();
    $PVE::VZDump::QemuServer::backup_access_run_dir = "$root/run/qemu-server";
    return $self;
}

sub root { return $_[0]->{root} }

# A test that dies midway must not leave simulated QEMUs running: stop every
# VM of the node that still runs (before File::Temp removes the directory).
END {
    if (my $root = $ENV{VZDUMP_TEST_NODE_DIR}) {
        require PVE::QemuServer::Helpers;
        for my $pidfile (glob("$root/run/qemu-server/*.pid")) {
            my ($vmid) = $pidfile =~ m|/(\d+)\.pid$| or next;
            my $pid = PVE::QemuServer::Helpers::vm_running_locally($vmid) or next;
            kill('TERM', $pid);
        }
    }
}

sub write_file {
    my ($path, $content) = @_;

    my $fh = IO::File->new($path, 'w') or die "unable to write '$path' - $!\n";
    print $fh $content;
    close($fh) or die "unable to close '$path' - $!\n";
}

# A disk image of $size bytes: 4 KiB blocks with data where the layout says
# so, zero elsewhere. $layout: list of [offset, length] data regions.
sub write_disk_image {
    my ($path, $size, $layout, $seed) = @_;

    my $fh = IO::File->new($path, 'w') or die "unable to create '$path' - $!\n";
    truncate($fh, $size) or die "truncate '$path' - $!\n";
    for my $region (@$layout) {
        my ($offset, $length) = @$region;
        sysseek($fh, $offset, 0);
        my $data = '';
        for (my $pos = 0; $pos < $length; $pos += 32) {
            $data .= pack('a16 Q> Q>', "seed $seed", $offset + $pos, $pos ^ 0x5a5a5a5a);
        }
        syswrite($fh, substr($data, 0, $length)) == $length or die "write '$path' - $!\n";
    }
    close($fh);
}

# The demo VM: two disks with data and zero regions (one not a multiple of
# the 64 KiB cluster), a firewall file and PVE config lines that the backup
# must filter (unused disk, snapshot, pending section).
sub create_sample_vm {
    my ($self, $vmid, %param) = @_;

    my $mib = 1024 * 1024;
    my $disks = $param{disks} // [
        {
            key => 'scsi0',
            size => 8 * $mib,
            layout => [[0, $mib], [5 * $mib, $mib], [7 * $mib + 4096, 4096]],
        },
        {
            key => 'virtio1',
            size => 3 * $mib + 12 * 1024,
            layout => [[64 * 1024, 192 * 1024], [3 * $mib, 12 * 1024]],
        },
    ];

    my $image_dir = "$self->{storage}/images/$vmid";
    make_path($image_dir);
    my $config = '';
    $config .= "#$param{description}\n" if $param{description};
    $config .= "agent: $param{agent}\n" if defined($param{agent});
    $config .= "bios: $param{bios}\n" if $param{bios};
    $config .= "boot: order=scsi0\ncores: 2\nmemory: 2048\n";
    $config .= "name: " . ($param{name} // "demo-vm-$vmid") . "\n";
    $config .= "net0: virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1\n";
    my $n = 0;
    for my $disk (@$disks) {
        my $name = "vm-$vmid-disk-$n.raw";
        my $path = "$image_dir/$name";
        write_disk_image($path, $disk->{size}, $disk->{layout} // [], "$vmid/$disk->{key}");
        $disk->{path} = $path;
        $disk->{volid} = "local:$vmid/$name";
        my $options = $disk->{options} // '';
        $config .= "$disk->{key}: $disk->{volid}$options,size=" . size_text($disk->{size}) . "\n";
        $n++;
    }
    $config .= "ide2: none,media=cdrom\n";
    $config .= "template: 1\n" if $param{template};
    $config .= "unused0: local:$vmid/vm-$vmid-disk-9.raw\n" if !$param{plain};
    $config .= $param{extra_config} // '';
    $config .= "\n[PENDING]\nmemory: 4096\n\n[before-upgrade]\ncores: 1\nmemory: 2048\n"
        . "snaptime: 1700000000\n"
        if !$param{plain};

    write_file(PVE::QemuConfig->config_file($vmid), $config);
    write_file("$self->{root}/etc/pve/firewall/$vmid.fw", $param{firewall} // <<'FW')
[OPTIONS]
enable: 1

[RULES]
IN ACCEPT -p tcp -dport 22 -log nolog
FW
        if !$param{no_firewall};

    $self->{vms}->{$vmid} = { disks => $disks };
    return $self->{vms}->{$vmid};
}

sub size_text {
    my ($size) = @_;
    return $size % (1024 * 1024) ? int($size / 1024) . "K" : ($size / (1024 * 1024)) . "M";
}

sub start_vm {
    my ($self, $vmid, %param) = @_;

    require PVE::QemuServer;
    require PVE::Storage;
    PVE::QemuServer::vm_start(PVE::Storage::config(), $vmid, { skiplock => 1, %param });
}

sub stop_vm {
    my ($self, $vmid) = @_;

    require PVE::QemuServer;
    require PVE::Storage;
    PVE::QemuServer::vm_stop(PVE::Storage::config(), $vmid, 1);
}

sub open_fds {
    opendir(my $dh, "/proc/$$/fd") or die "unable to list fds - $!\n";
    my @fds = sort { $a <=> $b } grep { m/^\d+$/ } readdir($dh);
    closedir($dh);
    my $dirfd = undef;
    return { map { $_ => (readlink("/proc/$$/fd/$_") // '') } @fds };
}

sub child_pids {
    my @children;
    opendir(my $dh, "/proc") or return ();
    for my $pid (grep { m/^\d+$/ } readdir($dh)) {
        my $stat = IO::File->new("/proc/$pid/stat") or next;
        my $line = <$stat> // next;
        push @children, $pid if $line =~ m/^\d+ \(.*\) \S (\d+) / && $1 == $$;
    }
    closedir($dh);
    return @children;
}

# Runs exec_backup_task for $vmid. %opts go to PVE::VZDump->new (compress,
# stdout, bwlimit, fleecing, ...); mode defaults to snapshot.
sub run_backup {
    my ($self, $vmid, %param) = @_;

    require PVE::VZDump;
    my $mode = delete $param{mode} // 'snapshot';
    my $before = delete $param{before_archive};
    my $opts = { dumpdir => $self->{dumpdir}, storage => 'local', %param };

    my $qmp_log = PVE::TestNode::run_dir() . "/$vmid.qmp-log";
    my $qmp_log_offset = -s $qmp_log // 0;

    my $task_log = "$self->{root}/task-$vmid.log";
    open(my $saved_stderr, '>&', \*STDERR) or die "dup STDERR - $!\n";
    open(STDERR, '>', $task_log) or die "redirect STDERR - $!\n";
    STDERR->autoflush(1);

    my $task = eval {
        my $vzdump = PVE::VZDump->new(undef, $opts, undef);
        my $plugin = $vzdump->{plugins}->[0];
        $before->($plugin) if $before;
        $vzdump->exec_backup_task(
            { vmid => $vmid, mode => $mode, plugin => $plugin, state => 'todo' });
    };
    my $err = $@;
    open(STDERR, '>&', $saved_stderr) or die "restore STDERR - $!\n";
    die $err if $err;

    my $result = { task => $task };
    $result->{task_log} = [split(/\n/, PVE::Tools::file_get_contents($task_log))];
    $result->{archive} = $task->{target};
    if ($task->{logfile} && -f $task->{logfile}) {
        $result->{logfile} = [
            map { s/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d //r }
                split(/\n/, PVE::Tools::file_get_contents($task->{logfile}))
        ];
    }
    $result->{qmp} = read_qmp_log($qmp_log, $qmp_log_offset);
    return $result;
}

# A snapshot-mode zstd backup of a fresh sample VM $vmid whose simulator runs
# with $sim_args (faults). %opts: vm (create_sample_vm parameters), stopped
# (do not start the VM), before (code run once the VM is up); the rest goes
# to run_backup. The result also holds the log's messages, the simulator's
# command names and the fds open before the run (for check_no_leaks).
sub run_with_sim_args {
    my ($self, $vmid, $sim_args, %opts) = @_;
    local $ENV{VZDUMP_TEST_SIM_ARGS} = $sim_args;
    my $vm_param = delete $opts{vm} // {};
    my $stopped = delete $opts{stopped};
    my $before = delete $opts{before};
    $self->create_sample_vm($vmid, %$vm_param);
    $self->start_vm($vmid) if !$stopped;
    $before->() if $before;
    my $fds = open_fds();
    my $run = $self->run_backup($vmid, mode => 'snapshot', compress => 'zstd', %opts);
    $run->{messages} = messages($run->{task_log});
    $run->{commands} = commands($run);
    $run->{fds} = $fds;
    return $run;
}

# The simulator's command log from $offset on: one JSON object per line,
# with the line itself as 'raw' (to check JSON types).
sub read_qmp_log {
    my ($path, $offset) = @_;

    my $fh = IO::File->new($path, 'r') or return [];
    seek($fh, $offset, 0);
    my @entries = map { { decode_json($_)->%*, raw => $_ } } grep { length } map { chomp; $_ } <$fh>;
    close($fh);
    return \@entries;
}

# The QMP commands QEMU received, in order, without the qmp_capabilities
# that opens every connection.
sub commands {
    my ($run) = @_;
    return [grep { $_ ne 'qmp_capabilities' } map { $_->{execute} // $_->{command} } $run->{qmp}->@*];
}

# The command lines of the HMP commands QEMU received, in order.
sub hmp_commands {
    my ($run) = @_;
    return [
        map { $_->{arguments}->{'command-line'} }
        grep { ($_->{execute} // $_->{command} // '') eq 'human-monitor-command' } $run->{qmp}->@*
    ];
}

# The arguments of the first received command named $execute (in list
# context also its raw log line).
sub arguments_of {
    my ($run, $execute) = @_;
    for my $entry ($run->{qmp}->@*) {
        next if ($entry->{execute} // $entry->{command} // '') ne $execute;
        return wantarray ? ($entry->{arguments} // {}, $entry->{raw}) : $entry->{arguments} // {};
    }
    return;
}

# What a running VM's QEMU holds after a backup, to find left-overs: the
# block backends (by name, or device for -blockdev disks) and the names of
# all block nodes that are not generated ('#block...').
sub block_state {
    my ($vmid) = @_;

    require PVE::QemuServer::Monitor;
    my $blocks = PVE::QemuServer::Monitor::mon_cmd($vmid, 'query-block');
    my $nodes = PVE::QemuServer::Monitor::mon_cmd($vmid, 'query-named-block-nodes');
    return {
        backends => [sort map { $_->{device} || $_->{qdev} } $blocks->@*],
        nodes => [sort grep { !m/^#/ } map { $_->{'node-name'} } $nodes->@*],
    };
}

# Fails the test unless the backup left no child process and no new fd.
sub check_no_leaks {
    my ($before_fds, $what) = @_;

    my $after = open_fds();
    my @new = grep { !exists($before_fds->{$_}) } sort keys %$after;
    Test::More::is_deeply([map { "$_ -> $after->{$_}" } @new], [], "$what: no fd left open");
    Test::More::is_deeply([child_pids()], [], "$what: no child process left");
}

# Only the INFO/WARN/ERROR lines of a task log, without the timestamps of
# "Backup started at"-style lines that differ per run.
sub messages {
    my ($lines) = @_;
    return [grep { m/^(?:INFO|WARN|ERROR):/ } @$lines];
}

sub decompressed_archive {
    my ($self, $archive) = @_;

    return $archive if $archive =~ m/\.vma$/;
    my $plain = "$self->{root}/check.vma";
    my $tool = $archive =~ m/\.zst$/ ? 'zstd' : $archive =~ m/\.gz$/ ? 'gzip' : 'lzop';
    system("$tool -dc '$archive' > '$plain'") == 0 or die "$tool -d '$archive' failed\n";
    return $plain;
}

# Verifies the archive with `vma verify`, extracts it with `vma extract` and
# compares each disk and the config with the VM's. Returns a list of
# problems (empty when all matches).
sub verify_archive {
    my ($self, $archive, $vmid, %param) = @_;

    my @problems;
    my $vma = $self->decompressed_archive($archive);
    my $verify = `'${\ vma_binary()}' verify '$vma' -v 2>&1`;
    push @problems, "vma verify failed: $verify" if $?;

    my $target = "$self->{root}/extract-$vmid";
    remove_tree($target);
    my $extract = `'${\ vma_binary()}' extract '$vma' '$target' 2>&1`;
    push @problems, "vma extract failed: $extract" if $?;

    my $disks = $param{disks} // $self->{vms}->{$vmid}->{disks};
    for my $disk (@$disks) {
        my $device = $disk->{key} eq 'tpmstate0' ? 'tpmstate0-backup' : $disk->{key};
        my $extracted = "$target/disk-drive-$device.raw";
        if (!-f $extracted) {
            push @problems, "no extracted image for $disk->{key}";
            next;
        }
        push @problems, "disk $disk->{key} differs from its source"
            if system('cmp', '-s', $extracted, $disk->{path}) != 0;
    }
    if (!-f "$target/qemu-server.conf") {
        push @problems, "no qemu-server.conf in the archive";
    }
    $self->{last_extract} = $target;
    remove_tree($target) if !@problems && !$param{keep};
    unlink "$self->{root}/check.vma";
    return @problems;
}

1;
