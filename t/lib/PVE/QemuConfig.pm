package PVE::QemuConfig;

# VM configs in PVE's format ("key: value" lines, then [snapshot],
# [PENDING] and [special:<name>] sections) under
# <node dir>/etc/pve/nodes/<node>/qemu-server/<vmid>.conf. Changes edit the
# file in place, keeping the order of the lines a test wrote.

use strict;
use warnings;

use PVE::QemuServer::Drive;
use PVE::QemuServer::Helpers;
use PVE::QemuServer::Monitor qw(mon_cmd);
use PVE::Storage;
use PVE::TestNode;
use PVE::Tools;

sub guest_type { return "VM" }

sub config_file {
    my ($class, $vmid, $node) = @_;

    $node //= PVE::TestNode::nodename();
    return PVE::TestNode::etc_pve() . "/nodes/$node/qemu-server/$vmid.conf";
}

sub parse_config_text {
    my ($text) = @_;

    my $conf = { snapshots => {}, pending => {}, special => {} };
    my $section = $conf;
    my $descr = '';
    for my $line (split(/\n/, $text)) {
        next if $line =~ m/^\s*$/;
        if ($line =~ m/^\[PENDING\]\s*$/i) {
            $section = $conf->{pending};
        } elsif ($line =~ m/^\[special:(\S+)\]\s*$/) {
            $section = $conf->{special}->{$1} = {};
        } elsif ($line =~ m/^\[([a-z][a-z0-9_\-]+)\]\s*$/i) {
            $section = $conf->{snapshots}->{$1} = {};
        } elsif ($line =~ m/^#(.*)$/) {
            $descr .= "$1\n" if $section == $conf;
        } elsif ($line =~ m/^([a-z][a-z_\-]*\d*):\s*(.*\S)\s*$/) {
            $section->{$1} = $2;
        } else {
            die "vm config - unable to parse line '$line'\n";
        }
    }
    $conf->{description} = $descr if length($descr);
    return $conf;
}

sub load_config {
    my ($class, $vmid, $node) = @_;

    my $file = $class->config_file($vmid, $node);
    die "Configuration file '$file' does not exist\n" if !-f $file;
    return parse_config_text(PVE::Tools::file_get_contents($file));
}

sub is_template {
    my ($class, $conf) = @_;

    return 1 if defined($conf->{template}) && $conf->{template} == 1;
    return undef;
}

# Replaces, adds (defined $value) or drops (undef) one key of the main section.
my sub update_main_key {
    my ($vmid, $key, $value) = @_;

    my $file = PVE::QemuConfig->config_file($vmid);
    my @lines = split(/\n/, PVE::Tools::file_get_contents($file));
    my $main_end = scalar(@lines);
    for my $i (0 .. $#lines) {
        if ($lines[$i] =~ m/^\[/) {
            $main_end = $i;
            last;
        }
    }
    my @main = grep { $_ !~ m/^\Q$key\E:/ } @lines[0 .. $main_end - 1];
    push @main, "$key: $value" if defined($value);
    PVE::Tools::file_set_contents($file, join("\n", @main, @lines[$main_end .. $#lines]) . "\n");
}

# Replaces, adds (hash) or drops (undef) the [special:<name>] section.
my sub update_special_section {
    my ($vmid, $name, $values) = @_;

    my $file = PVE::QemuConfig->config_file($vmid);
    my @kept;
    my $skipping = 0;
    for my $line (split(/\n/, PVE::Tools::file_get_contents($file))) {
        $skipping = ($line eq "[special:$name]") if $line =~ m/^\[/;
        push @kept, $line if !$skipping;
    }
    if ($values) {
        push @kept, '', "[special:$name]", map { "$_: $values->{$_}" } sort keys %$values;
    }
    PVE::Tools::file_set_contents($file, join("\n", @kept) . "\n");
}

sub set_lock {
    my ($class, $vmid, $lock) = @_;

    my $conf = $class->load_config($vmid);
    die $class->guest_type() . " is locked ($conf->{lock})\n" if $conf->{lock};
    update_main_key($vmid, 'lock', $lock);
    return $lock;
}

sub remove_lock {
    my ($class, $vmid, $lock) = @_;

    my $conf = $class->load_config($vmid);
    if (!$conf->{lock}) {
        my $lockstring = defined($lock) ? "'$lock' " : "any ";
        die "no lock found trying to remove $lockstring lock\n";
    } elsif (defined($lock) && $conf->{lock} ne $lock) {
        die "found lock '$conf->{lock}' trying to remove '$lock' lock\n";
    }
    update_main_key($vmid, 'lock', undef);
}

sub foreach_volume {
    my ($class, $conf, $func) = @_;

    for my $key (PVE::QemuServer::Drive::valid_drive_names()) {
        next if !defined($conf->{$key});
        my $drive = PVE::QemuServer::Drive::parse_drive($key, $conf->{$key}) // next;
        $func->($key, $drive);
    }
}

sub get_backup_volumes {
    my ($class, $conf) = @_;

    my $return_volumes = [];
    $class->foreach_volume(
        $conf,
        sub {
            my ($key, $drive) = @_;

            return if PVE::QemuServer::Drive::drive_is_cdrom($drive);

            my $included = $drive->{backup} // 1;
            my $reason = "backup=";
            $reason .= defined($drive->{backup}) ? 'no' : 'yes';

            if ($key =~ m/^efidisk/ && (!defined($conf->{bios}) || $conf->{bios} ne 'ovmf')) {
                $included = 0;
                $reason = "efidisk but no OMVF BIOS";
            }

            push @$return_volumes,
                {
                    key => $key,
                    included => $included,
                    reason => $reason,
                    volume_config => $drive,
                };
        },
    );
    return $return_volumes;
}

sub record_fleecing_images {
    my ($vmid, $volids) = @_;

    return if scalar($volids->@*) == 0;
    update_special_section($vmid, 'fleecing', { 'fleecing-images' => join(',', $volids->@*) });
}

# qemu-server 8: fleecing images are drives (BlockBackends) named
# drive-<key>-fleecing
my sub detach_fleecing_drives {
    my ($vmid, $log_func) = @_;

    my $block_info = mon_cmd($vmid, "query-block");
    for my $info ($block_info->@*) {
        my $device = $info->{device};
        next if $device !~ m/-fleecing$/;
        $log_func->('info', "detaching (old) fleecing image for '$device'");
        $device =~ s/^drive-//;
        eval { PVE::QemuServer::qemu_drivedel($vmid, $device) };
        $log_func->('warn', "error detaching (old) fleecing image '$device' - $@") if $@;
    }
}

sub cleanup_fleecing_images {
    my ($vmid, $storecfg, $log_func) = @_;

    $log_func //= sub { print STDERR "$_[0]: $_[1]\n" };

    if (PVE::QemuServer::Helpers::vm_running_locally($vmid)) {
        my $status = eval { mon_cmd($vmid, 'query-backup') };
        if ($status && $status->{status} && $status->{status} eq 'active') {
            $log_func->('warn', "left-over backup job still running inside QEMU - canceling now");
            mon_cmd($vmid, 'backup-cancel');
        }
        if (PVE::TestNode::release() >= 9) {
            # qemu-server 9: fleecing images are blockdev nodes
            require PVE::QemuServer::Blockdev;
            PVE::QemuServer::Blockdev::detach_fleecing_block_nodes($vmid, $log_func);
        } else {
            detach_fleecing_drives($vmid, $log_func);
        }
    }

    my $conf = PVE::QemuConfig->load_config($vmid);
    my $special = $conf->{special}->{fleecing} or return;
    my $failed = [];
    for my $volid (split(/,/, $special->{'fleecing-images'} // '')) {
        $log_func->('info', "removing (old) fleecing image '$volid'");
        eval { PVE::Storage::vdisk_free($storecfg, $volid) };
        if (my $err = $@) {
            $log_func->('warn', "error removing fleecing image '$volid' - $err");
            push $failed->@*, $volid;
        }
    }
    update_special_section($vmid, 'fleecing', undef);
    record_fleecing_images($vmid, $failed);
}

1;
