package PVE::VZDump::QemuServer::Engine;

use strict;
use warnings;

use JSON::PP (); # the booleans of QMP results
use XSLoader;

our $VERSION = '0.1.0';

XSLoader::load('PVE::VZDump::QemuServer::Engine', $VERSION);

1;

__END__

=head1 NAME

PVE::VZDump::QemuServer::Engine - the C++ engine behind PVE::VZDump::QemuServer

=head1 SYNOPSIS

    use PVE::VZDump::QemuServer::Engine;

    my $text = PVE::VZDump::QemuServer::Engine::render_bytes(1536, 1);   # "1.5 KiB"
    my $took = PVE::VZDump::QemuServer::Engine::render_duration(3605);  # "1h 5s"

=head1 DESCRIPTION

The plugin keeps Proxmox policy in Perl; the mechanism lives in a C++ engine
reached through this module. Every function dies with the text the original
Perl code would have died with, so a die seen by vzdump reads as before.

=head1 FUNCTIONS

=head2 version()

The engine's version, the same string as C<$VERSION>.

=head2 render_bytes($value, $precision)

Renders a byte count exactly as C<PVE::Format::render_bytes> does: the largest
unit among B, KiB, MiB, GiB, TiB and PiB whose integer exponent fits, printed
with C printf rounding and C<$precision> decimals (2 when it is 0 or undef).
C<$precision> may also be given as a hash C<< { precision => $n } >>. Values of
1024^6 and more get an empty unit, as in the original. Dies on a negative
precision.

=head2 render_duration($seconds, $auto_limit)

Renders a duration exactly as C<PVE::Format::render_duration> does: rounded
half away from zero, then weeks, days, hours, minutes and seconds without the
zero components (C<"1d 1h 1m 1s">). 0 or undef is C<"0s">, a negative duration
the empty string. With C<$auto_limit> true, minutes are dropped once there are
weeks and seconds once there are days.

=head2 backup_status_loop($qmp_socket, $vmid, $job_uuid, $has_query_bitmap, $is_template, $before_command, $log)

The original plugin's status loop: C<query-backup> on C<$qmp_socket> once a
second (a new connection per poll, none held during the sleep), until the job
with C<$job_uuid> is no longer active. Each progress line and the summary
(C<backup is sparse: ...>, C<backup was done incrementally, ...>,
C<transferred ... in ... seconds (...)>) go to C<< $log->($line) >> as they
happen, byte for byte as the original logs them. With C<$has_query_bitmap>
(PBS), the dirty-bitmap lines come first (not for a template, C<$is_template>).
C<< $before_command->() >> runs before every QMP command and may die to refuse
it (the plugin's C<VM <vmid> not running> check).

Returns C<< { total => $last_total, reused => $reused } >>. Dies with
C<< "<errmsg>\n" >> when the job failed, C<got unexpected uuid>,
C<got unexpected status '<s>'>, or the QMP error text
(C<VM <vmid> qmp command 'query-backup' failed - ...>). A signal arriving
while it waits (the plugin's INT/TERM/QUIT/HUP/PIPE handlers) ends the wait
within 100 ms: the Perl handler runs and its die (C<interrupted by signal>)
leaves the call.

=head2 start_compressor($command, $output_fd)

Starts the compressor as the original's C<$fork_compressor_pipe> does: stdin
a new pipe, stdout C<$output_fd>, the command run like Perl's C<exec> of one
string. No other descriptor reaches the child; both pipe ends are
close-on-exec in the caller. Returns C<($pid, $pipe_write_fd)>: the caller
passes the write end to QEMU, closes it with C<POSIX::close> and reaps the
pid. Dies C<unable to fork worker - <error>>.

=head2 bitmap_status_text(\%info)

The C<dirty-bitmap status> text of one C<query-pbs-bitmap-info> entry
(C<drive>, C<action>, C<size>, C<dirty>), e.g. C<created new> or
C<OK (1.0 GiB of 32.0 GiB dirty)>.


=head2 QMP and guest agent

These talk to a VM's QEMU as C<PVE::QMPClient> and
C<PVE::QemuServer::Monitor> do. The caller gives the socket paths (Proxmox
uses F</var/run/qemu-server/E<lt>vmidE<gt>.qmp> and F<.qga>); C<$vmid> only
names the VM in error texts. Every call opens its own connection and closes
it before returning: QEMU serves one monitor client at a time, so nothing is
held between calls.

I<Arguments> are encoded as C<to_json> (JSON::XS) encodes them, which matters
because QMP is strictly typed: a scalar last used as a string is sent as a
string, a number as a number (write C<int($x)> for integer parameters, as the
plugin does); C<JSON::true>/C<JSON::false> (any C<JSON::PP::Boolean>) or
C<\1>/C<\0> are booleans; C<undef> is C<null>. Keys other than the
command's own reach QEMU (strip C<timeout> yourself, as C<Monitor::qmp_cmd>
does).

I<Results> are decoded as C<from_json> of the socket's bytes gives them:
hashes, arrays, numbers, strings as raw bytes (no UTF-8 flag), C<null> as
undef, and booleans as C<JSON::PP::Boolean> objects (C<$JSON::PP::true> /
C<$JSON::PP::false>, true or false in boolean context, 1 or 0 as numbers).

I<Timeouts> are seconds (fractions allowed). An undef or 0 C<$timeout> takes
C<PVE::QMPClient::cmd>'s default for the command: 3600 for C<query-migrate>
and C<guest-fsfreeze-freeze>; 60 for names starting C<eject> or C<change>;
180 for C<guest-fsfreeze-thaw>; 600 for C<backup-cancel>, C<query-backup>,
C<query-block-jobs>, C<block-job-cancel>, C<block-job-complete>,
C<drive-mirror>, C<guest-fstrim>, C<guest-shutdown>, C<query-savevm>,
C<savevm-start>, C<savevm-end> and the internal-snapshot commands; 5 for
everything else. As in PVE the timeout is armed once per connection and
covers the capabilities negotiation and every command on it; connecting is
retried every 100 ms on EINTR/EAGAIN for the timeout, but at least 1 s.

I<Errors> die with PVE's texts, each ending in a newline:

    VM 100 qmp command 'cont' failed - <QEMU's error desc>
    VM 100 qmp command 'query-status' failed - got timeout
    VM 100 qmp command 'query-status' failed - client closed connection
    VM 100 qmp command 'query-status' failed - unable to connect to VM 100 qmp socket - No such file or directory
    VM 100 qmp command 'query-status' failed - unable to connect to VM 100 qmp socket - timeout after 11 retries
    VM 100 qmp command 'x' failed - received response without command id
    VM 100 qmp command 'x' failed - got wrong command id '<got>' (expected <pid>:<n>)

Two texts cannot match PVE byte for byte, because Perl adds its own file and
line to them: a reply that is not JSON gives
C<malformed JSON string - E<lt>json-c's reasonE<gt> (before "E<lt>start of
lineE<gt>")>, and a failing fd transfer gives C<sendfd failed - E<lt>errorE<gt>>.
A reply line over 64 MiB fails with C<QMP reply exceeds 67108864 bytes>.

=head3 qmp_cmd($socket, $vmid, $execute, \%arguments, $timeout)

One QMP command, as C<PVE::QMPClient::cmd>: connect, C<qmp_capabilities>,
the command (id C<E<lt>pidE<gt>:E<lt>nE<gt>>), close. Returns the reply's
C<return> value (a hash, an array, a scalar or undef). C<\%arguments> may be
undef. Events that arrive before the reply are skipped. Dies with the texts
above.

=head3 hmp_cmd($socket, $vmid, $command_line, $timeout)

C<human-monitor-command> with C<command-line>, as
C<PVE::QemuServer::Monitor::hmp_cmd>; returns the output text. HMP reports
its errors as output (C<drive_add> prints C<"OK\r\n"> on success, C<"Duplicate
ID '...' for drive\r\n"> on failure; C<drive_del> prints nothing on success
and C<"Device '...' not found\r\n"> when the drive is gone): check it as the
original does. Dies as C<qmp_cmd> for C<human-monitor-command>.

=head3 qmp_batch($socket, $vmid, \@commands, $fd, $timeout)

C<PVE::QMPClient>'s C<queue_cmd> for each C<[$execute, \%arguments,
$callback]> of C<@commands> (the callback is optional), then
C<queue_execute($timeout)>: one connection, the commands in order, each sent
after the previous reply. A callback runs as soon as its command's reply
arrives, before anything else is sent, as
C<< $callback->($vmid, $return, $queue) >>; commands of the same form it
pushes onto C<@$queue> are queued after those already queued, as a QMPClient
callback's C<queue_cmd> does (the original's C<getfd> callback builds and
queues C<backup> this way). C<getfd> and C<add-fd> entries carry C<$fd> (a
descriptor number or a Perl file handle; it stays open here) with
C<SCM_RIGHTS>, so a C<getfd> and the C<backup> that names
C</dev/fdname/...> share one monitor session, as QEMU requires. An undef or
0 C<$timeout> is 3 s, queue_execute's default. Returns an array ref of the
C<return> values in the order sent. Dies with the bare queue error of the
first failure, as C<queue_execute> dies (e.g. C<"No file descriptor supplied
via SCM_RIGHTS\n">, C<"got timeout\n">), or with a callback's die; later
commands are not sent. A connect failure is also warned before the die, as
C<queue_execute> does.

=head3 qga_cmd($agent_socket, $vmid, $execute, \%arguments, $timeout)

A guest-agent command, as C<PVE::QMPClient::cmd> for a C<guest-*> command:
sends C<guest-sync-delimited> with id C<E<lt>pidE<gt>0E<lt>nE<gt>> and the
command, skips replies to stale sync ids, returns the reply's C<return>. An
error answered by the agent does not die: it is returned as
C<< { error => { class => ..., desc => ... } } >>, as in PVE. When the agent
closes the connection after acknowledging the sync (C<guest-shutdown>,
C<guest-suspend-*>), returns undef. Dies like C<qmp_cmd>, PVE's texts saying
C<qmp command> and C<qga socket>:
C<VM 100 qmp command 'guest-ping' failed - unable to connect to VM 100 qga
socket - No such file or directory>.

=head2 Backup on stock QEMU

=head3 upstream_backup(\%args, \%hooks)

A VMA backup of a VM whose QEMU has no Proxmox patches (no C<backup>
command). The engine first removes what a killed earlier backup left in QEMU
(its exports and NBD server, filters, nodes and temp images; one log line
names them), then reads C<query-block>, adds per drive a fleecing node
(C<fleece-E<lt>idE<gt>>: C<fleecing_path>/C<fleecing_format> when given, else a
sparse raw temp image in C<work_dir>) and a C<copy-before-write> filter
(C<cbw-E<lt>idE<gt>>, C<on-cbw-error=break-snapshot>: a full fleecing image
breaks the backup, never the guest's writes); calls C<< $hooks->{freeze}->() >>;
switches every guest device onto its filter in one monitor session (C<stop>,
C<qom-set>, C<cont> when the VM ran: one instant for all disks); calls
C<< $hooks->{thaw}->() >> if freeze returned true (also when the switch
failed); adds C<snapshot-access> nodes, starts QEMU's NBD server on
C<work_dir/nbd.sock> and exports each drive read-only under its drive name (a
drive without guest device, such as PVE's TPM backup drive, is exported as is);
calls C<< $hooks->{started}->($uuid) >>; then reads the exports with libnbd
(zero runs reported by block status are not read) and writes the VMA (configs
from C<config_files> under their basenames, devices named by drive id) to
C<output_fd> (when it is a regular file, written pages are flushed and dropped
from the page cache some 32 MiB behind), at most C<bytes_per_second> data
bytes per second (0: no limit),
logging progress and summary lines through C<< $hooks->{log}->($line) >> byte
for byte as the original's status loop. Finally it stops the NBD server,
removes the nodes, puts each device back on its original node and removes the
temp images; this teardown runs on every path, and its own failures are logged
(on success the first one dies).

C<%args>: C<qmp_socket>, C<vmid>, C<work_dir>, C<output_fd>,
C<bytes_per_second>, C<disks> (array of C<< { device => 'drive-scsi0',
fleecing_path => ..., fleecing_format => ... } >>), C<config_files> (paths).
C<%hooks>: C<log>, C<freeze>, C<thaw>, C<started> (code refs, all required).
Returns C<< { total, zero_bytes, bytes_read } >>. Dies with the cause
(C<VM 100 qmp command 'blockdev-add' failed - ...>, C<NBD read on export
'drive-scsi0' failed - ...>, the writer's I/O error, a hook's die); a pending
signal is dispatched to its Perl handler first (the plugin's dies C<interrupted
by signal>). The output fd is never closed here.

=cut
