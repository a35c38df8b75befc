package PVE::QemuServer::Agent;

# qemu-server 9's guest-agent helpers that vzdump's plugin calls: whether to
# freeze (guest_fs_freeze_applicable, with its log texts), freeze (a 10 minute
# guest-fsfreeze-freeze, then guest-fsfreeze-status while that is lost) and
# thaw, on the Monitor double.

use strict;
use warnings;

use PVE::QemuServer::Monitor;

use base 'Exporter';
our @EXPORT_OK = qw(check_agent_error get_qga_key parse_guest_agent qga_check_running);

# qemu-server's $agent_fmt: key (or alias) -> [property, type]
my $agent_properties = {
    enabled => 'boolean',
    fstrim_cloned_disks => 'boolean',
    'freeze-fs' => 'boolean',
    type => 'string',
};
my $agent_aliases = { 'freeze-fs-on-backup' => 'freeze-fs', 'guest-fsfreeze' => 'freeze-fs' };

my sub parse_boolean {
    my ($value) = @_;
    return 1 if $value =~ m/^(?:1|on|yes|true)$/i;
    return 0 if $value =~ m/^(?:0|off|no|false)$/i;
    return undef;
}

# PVE::JSONSchema::parse_property_string for the agent format ('enabled' is
# the default key); dies on what the schema refuses.
my sub parse_agent_string {
    my ($value) = @_;

    my $res = {};
    for my $part (split(/,/, $value)) {
        my ($key, $text) = $part =~ m/^([^=]+)=(.*)$/ ? ($1, $2) : ('enabled', $part);
        $key = $agent_aliases->{$key} // $key;
        my $type = $agent_properties->{$key} or die "invalid format - unknown property '$key'\n";
        die "invalid format - duplicate key '$key'\n" if exists($res->{$key});
        if ($type eq 'boolean') {
            $res->{$key} = parse_boolean($text) // die "invalid format - $key: type check "
                . "('boolean') failed - got '$text'\n";
        } else {
            die "invalid format - type: value '$text' does not have a value in the enumeration"
                . " 'virtio, isa'\n"
                if $text ne 'virtio' && $text ne 'isa';
            $res->{$key} = $text;
        }
    }
    return $res;
}

sub parse_guest_agent {
    my ($value) = @_;

    return {} if !defined($value);
    my $res = eval { parse_agent_string($value) };
    warn $@ if $@;

    # if the agent is disabled ignore the other potentially set properties
    return {} if !$res->{enabled};
    return $res;
}

sub get_qga_key {
    my ($conf, $key) = @_;

    return undef if !defined($conf->{agent});
    return parse_guest_agent($conf->{agent})->{$key};
}

sub qga_check_running {
    my ($vmid, $nowarn) = @_;

    eval { PVE::QemuServer::Monitor::mon_cmd($vmid, "guest-ping", timeout => 3); };
    if ($@) {
        warn "QEMU Guest Agent is not running - $@" if !$nowarn;
        return 0;
    }
    return 1;
}

sub check_agent_error {
    my ($result, $errmsg, $noerr) = @_;

    my $error = '';
    if (ref($result) eq 'HASH' && $result->{error} && $result->{error}->{desc}) {
        $error = "Agent error: $result->{error}->{desc}\n";
    } elsif (!defined($result)) {
        $error = "Agent error: $errmsg\n";
    }
    if ($error) {
        die $error if !$noerr;
        warn $error;
        return;
    }
    return 1;
}

sub should_fs_freeze {
    my ($agent_str) = @_;

    my $agent = parse_guest_agent($agent_str);
    return 0 if !$agent->{enabled};
    return $agent->{'freeze-fs'} // 1;
}

sub guest_fs_freeze {
    my ($vmid) = @_;

    my $timeout = 10 * 60;
    my $result = eval {
        PVE::QemuServer::Monitor::mon_cmd($vmid, 'guest-fsfreeze-freeze', timeout => $timeout);
    };
    if ($result && ref($result) eq 'HASH' && $result->{error}) {
        my $error = $result->{error}->{desc} // 'unknown';
        die "unable to freeze guest fs - $error\n";
    } elsif (defined($result)) {
        return; # command successful
    }

    # the freeze command may be lost (agent restarted): its status tells
    my $status;
    eval {
        my ($i, $last_iteration) = (0, 5);
        while ($i < $last_iteration && !defined($status)) {
            print "still waiting on guest fs freeze - timeout in "
                . ($timeout * ($last_iteration - $i) / 60)
                . " minutes\n";
            $i++;

            $status = PVE::QemuServer::Monitor::mon_cmd(
                $vmid, 'guest-fsfreeze-status',
                timeout => $timeout,
                noerr => 1,
            );
            if ($status && ref($status) eq 'HASH' && $status->{'error-is-timeout'}) {
                $status = undef;
            } else {
                check_agent_error($status, 'unknown error');
            }
        }
        die "timeout after " . ($timeout * ($last_iteration + 1) / 60) . " minutes\n"
            if !defined($status);
    };
    die "querying status after freezing guest fs failed - $@" if $@;

    die "unable to freeze guest fs - unexpected status '$status'\n" if $status ne 'frozen';
}

sub guest_fs_thaw {
    my ($vmid) = @_;

    my $res = PVE::QemuServer::Monitor::mon_cmd($vmid, "guest-fsfreeze-thaw");
    check_agent_error($res, "unable to thaw guest filesystem");
    return;
}

sub guest_fs_is_frozen {
    my ($vmid) = @_;

    my $status = PVE::QemuServer::Monitor::mon_cmd($vmid, "guest-fsfreeze-status");
    check_agent_error($status, "unable to check guest filesystem freeze status");
    return $status eq 'frozen';
}

sub guest_fs_freeze_applicable {
    my ($agent_str, $vmid, $logfunc) = @_;

    $logfunc //= sub {
        my ($msg, $level) = @_;
        $level //= 'info';
        $level eq 'info' ? print("$msg\n") : warn("$msg\n");
    };

    if (!should_fs_freeze($agent_str)) {
        $logfunc->("skipping guest filesystem freeze - disabled in VM options");
        return;
    }
    if (!qga_check_running($vmid, 1)) {
        $logfunc->("skipping guest filesystem freeze - agent configured but not running?");
        return;
    }

    my $frozen = eval { guest_fs_is_frozen($vmid) };
    $logfunc->("unable to check guest fs freeze status - $@", 'warn') if $@;
    if ($frozen) {
        $logfunc->("skipping guest filesystem freeze - already frozen");
        return;
    }
    return 1;
}

1;
