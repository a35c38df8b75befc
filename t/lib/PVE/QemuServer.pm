package PVE::QemuServer;

# VM lifecycle on the test node: vm_start runs the pve-qemu simulator as the
# VM's QEMU (daemonized like QEMU, with -pidfile, QMP and guest-agent sockets
# in the node's run directory); vm_stop quits it.

use strict;
use warnings;

use File::Path ();
use IO::Socket;
use JSON;
use POSIX ();
use Text::ParseWords ();
use Time::HiRes qw(usleep);

use PVE::QemuConfig;
use PVE::QemuServer::Drive;
use PVE::QemuServer::Helpers;
use PVE::QemuServer::Monitor qw(mon_cmd);
use PVE::Storage;
use PVE::TestNode;

sub vzlist {
    my $dir = PVE::TestNode::etc_pve() . "/nodes/" . PVE::TestNode::nodename() . "/qemu-server";
    my $vzlist = {};
    opendir(my $dh, $dir) or return $vzlist;
    for my $entry (readdir($dh)) {
        next if $entry !~ m/^(\d+)\.conf$/;
        my $vmid = $1;
        $vzlist->{$vmid}->{pid} = PVE::QemuServer::Helpers::vm_running_locally($vmid) // 0;
    }
    closedir($dh);
    return $vzlist;
}

sub check_running {
    my ($vmid, $nocheck, $node) = @_;

    if (!$nocheck) {
        my $file = PVE::QemuConfig->config_file($vmid, $node);
        die "unable to find configuration file for VM $vmid on node '"
            . PVE::TestNode::nodename() . "'\n"
            if !-f $file;
    }
    return PVE::QemuServer::Helpers::vm_running_locally($vmid);
}

sub vm_is_paused {
    my ($vmid, $include_suspended) = @_;

    my $qmpstatus = eval { mon_cmd($vmid, "query-status") };
    warn "$@\n" if $@;
    return $qmpstatus
        && ($qmpstatus->{status} eq "paused"
            || $qmpstatus->{status} eq "prelaunch"
            || ($include_suspended && $qmpstatus->{status} eq "suspended"));
}

# "1,freeze-fs-on-backup=0" -> { enabled => 1, 'freeze-fs-on-backup' => 0 }
my sub agent_options {
    my ($conf) = @_;

    return {} if !defined($conf->{agent});
    my $res = {};
    for my $part (split(/,/, $conf->{agent})) {
        if ($part =~ m/^([a-z\-]+)=(.*)$/) {
            $res->{$1} = $2;
        } else {
            $res->{enabled} = $part;
        }
    }
    # if the agent is disabled ignore the other potentially set properties
    return {} if !$res->{enabled};
    return $res;
}

# qemu-server 8's agent helpers; qemu-server 9 moved them to
# PVE::QemuServer::Agent (t/lib/pve9)
if (PVE::TestNode::release() < 9) {
    *parse_guest_agent = \&agent_options;
    *get_qga_key = sub {
        my ($conf, $key) = @_;
        return agent_options($conf)->{$key};
    };
}

sub qemu_drivedel {
    my ($vmid, $deviceid) = @_;

    my $ret = PVE::QemuServer::Monitor::hmp_cmd($vmid, "drive_del drive-$deviceid", 10 * 60);
    $ret =~ s/^\s+//;
    return 1 if $ret eq "";
    return 1 if $ret =~ m/Device \'.*?\' not found/s;
    die "deleting drive $deviceid failed : $ret\n";
}

# The simulator's command line for the VM's disks: every drive but CD-ROMs
# and the TPM state,
# named as QEMU names them (drive-<key>).
my sub simulator_command {
    my ($storecfg, $vmid, $conf, $paused) = @_;

    my $run_dir = PVE::TestNode::run_dir();
    my $cmd = [
        PVE::TestNode::simulator(),
        '--pidfile', PVE::TestNode::vm_pidfile($vmid),
        '--qmp', PVE::TestNode::vm_socket($vmid, 'qmp'),
        '--log', "$run_dir/$vmid.qmp-log",
    ];
    push @$cmd, '--qga', PVE::TestNode::vm_socket($vmid, 'qga')
        if agent_options($conf)->{enabled};
    push @$cmd, '--status', 'prelaunch' if $paused;
    # qemu-server 9 attaches the disks with -blockdev (pve-qemu 10's node graph)
    push @$cmd, '--blockdev' if PVE::TestNode::release() >= 9;

    PVE::QemuConfig->foreach_volume(
        $conf,
        sub {
            my ($key, $drive) = @_;
            return if PVE::QemuServer::Drive::drive_is_cdrom($drive);
            return if $key eq 'tpmstate0'; # swtpm's state, not a QEMU drive
            my ($storeid) = PVE::Storage::parse_volume_id($drive->{file}, 1);
            my $path = $storeid ? PVE::Storage::path($storecfg, $drive->{file}) : $drive->{file};
            my $format = $path =~ m/\.qcow2$/ ? 'qcow2' : 'raw';
            push @$cmd, '--drive', "drive-$key=$path,format=$format";
        },
    );
    # extra simulator options of a test (faults, support flags), shell-quoted
    push @$cmd, Text::ParseWords::shellwords($ENV{VZDUMP_TEST_SIM_ARGS}) if $ENV{VZDUMP_TEST_SIM_ARGS};
    return $cmd;
}

sub vm_start {
    my ($storecfg, $vmid, $params) = @_;

    my $conf = PVE::QemuConfig->load_config($vmid);
    die "VM is locked ($conf->{lock})\n" if $conf->{lock} && !$params->{skiplock};
    die "you can't start a vm if it's a template\n"
        if PVE::QemuConfig->is_template($conf) && !$params->{skiptemplate};
    die "VM $vmid already running\n" if check_running($vmid);

    my $run_dir = PVE::TestNode::run_dir();
    -d $run_dir or File::Path::make_path($run_dir);
    my $cmd = simulator_command($storecfg, $vmid, $conf, $params->{paused});
    unlink PVE::TestNode::vm_socket($vmid, 'qmp'), PVE::TestNode::vm_socket($vmid, 'qga');

    # daemonize as QEMU does: the VM is nobody's child
    my $pid = fork() // die "fork failed - $!\n";
    if (!$pid) {
        POSIX::setsid();
        my $grandchild = fork();
        POSIX::_exit(0) if !defined($grandchild) || $grandchild;
        open(STDIN, '<', '/dev/null');
        open(STDOUT, '>>', "$run_dir/$vmid.sim-output");
        open(STDERR, '>&', \*STDOUT);
        exec({ $cmd->[0] } @$cmd) or POSIX::_exit(1);
    }
    waitpid($pid, 0);

    for (my $waited = 0; $waited < 100; $waited++) {
        return if check_running($vmid) && -S PVE::TestNode::vm_socket($vmid, 'qmp');
        usleep(50_000);
    }
    die "start failed: QEMU exited or did not open its QMP socket\n";
}

sub vm_stop {
    my ($storecfg, $vmid, $skiplock, $nocheck, $timeout, $shutdown, $force, $keepActive) = @_;

    my $pid = check_running($vmid, $nocheck) or return;
    eval { mon_cmd($vmid, $shutdown ? "system_powerdown" : "quit") };
    $timeout //= 5;
    for (my $waited = 0; $waited < $timeout * 10; $waited++) {
        return if !PVE::QemuServer::Helpers::vm_running_locally($vmid);
        usleep(100_000);
    }
    kill 'KILL', $pid;
    usleep(100_000) while PVE::QemuServer::Helpers::vm_running_locally($vmid);
}

# qmeventd is not part of the test node: the handle is one end of a socket
# pair that received the same handshake.
sub register_qmeventd_handle {
    my ($vmid) = @_;

    my ($fh, $peer) = IO::Socket->socketpair(AF_UNIX, SOCK_STREAM, PF_UNSPEC)
        or die "unable to connect to qmeventd socket (vmid: $vmid) - $!\n";
    print $fh to_json({ vzdump => { vmid => "$vmid" } });
    close($peer);
    return $fh;
}

1;
