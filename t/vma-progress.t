#!/usr/bin/perl
# The progress line of vma create, extract and verify: on a terminal (a real
# pty from IO::Pty as standard error) one line redrawn in place with the
# percent, bytes done of the total, rate and ETA, ended by a newline on
# success, cleared before the error message on failure and cleared when ^C
# (SIGINT through the terminal) ends the command; with -v, or when standard
# error is not a terminal, the output of old and nothing of the line.
#
# The archives travel through pipes fed or drained slowly, so every command
# runs long enough for several redraws.

use strict;
use warnings;

use File::Temp qw(tempdir);
use POSIX qw(mkfifo _exit ECHO TCSANOW);
use Test::More;

use lib 't/lib';
use CapturedRun qw(run_captured);

my $vma = $ENV{VMA} // 'build/vma';
plan skip_all => "$vma not built" if !-x $vma;
plan skip_all => 'IO::Pty (libio-pty-perl) is not installed' if !eval { require IO::Pty; 1 };

my $dir = tempdir(CLEANUP => 1);
my $size = 24 * 1024 * 1024;
my $chunk = 1024 * 1024;
my $pause = 0.05;

system("head -c $size /dev/urandom > '$dir/disk.img'") == 0 or die "head failed\n";
my ($status, undef, $err) = run_captured($vma, 'create', "$dir/a.vma", "drive-scsi0=$dir/disk.img");
is($status, 0, 'create the archive') or diag($err);
my $archive_size = -s "$dir/a.vma";

# A child copying $from to $to in chunks with a pause between them; returns
# its pid. Forked before a pty exists, so it holds no end of one.
my sub slow_copy {
    my ($from, $to) = @_;
    my $pid = fork() // die "fork: $!\n";
    return $pid if $pid;
    open(my $in, '<', $from) or _exit(1);
    open(my $out, '>', $to) or _exit(1);
    binmode($_) for $in, $out;
    $out->autoflush(1);
    while (read($in, my $buf, $chunk)) {
	print $out $buf or last;
	select(undef, undef, undef, $pause);
    }
    _exit(0);
}

# Runs @cmd with standard error on a new pty that is its controlling
# terminal, standard output to a file, standard input from $stdin.
# $on_output->($pty_text, $master, $pid) is called as output arrives. Returns the
# wait status, the stdout text and the pty text (the tty's "\r\n" for "\n"
# turned back into "\n").
my sub run_on_pty {
    my (%opt) = @_;
    my $pty = IO::Pty->new();
    # no echo of the ^C sent: the terminal's "^C" could land after vma's
    # clearing, depending on scheduling
    my $termios = POSIX::Termios->new();
    $termios->getattr(fileno($pty->slave)) or die "tcgetattr: $!\n";
    $termios->setlflag($termios->getlflag() & ~ECHO);
    $termios->setattr(fileno($pty->slave), TCSANOW) or die "tcsetattr: $!\n";
    if ($opt{columns}) {
	ioctl($pty->slave, IO::Tty::Constant::TIOCSWINSZ(), pack('S4', 24, $opt{columns}, 0, 0))
	    or die "TIOCSWINSZ: $!\n";
    }
    my $stdout = "$dir/pty-stdout";
    my $pid = fork() // die "fork: $!\n";
    if (!$pid) {
	# ^C must end vma even where the test runs with SIGINT ignored (in
	# the background of a shell)
	$SIG{INT} = $SIG{TERM} = 'DEFAULT';
	$pty->make_slave_controlling_terminal();
	my $slave = $pty->slave;
	close($pty);
	open(STDIN, '<', $opt{stdin} // '/dev/null') or _exit(126);
	open(STDOUT, '>', $stdout) or _exit(126);
	open(STDERR, '>&', $slave) or _exit(126);
	close($slave);
	exec(@{ $opt{cmd} }) or _exit(127);
    }
    $pty->close_slave();
    my $text = '';
    local $SIG{ALRM} = sub { kill('KILL', $pid); die "timeout running @{ $opt{cmd} }\n" };
    alarm(120);
    for (;;) {
	my $n = sysread($pty, my $buf, 65536);
	last if !$n; # EIO: the last holder of the slave side is gone
	$text .= $buf;
	$opt{on_output}->($text, $pty, $pid) if $opt{on_output};
    }
    waitpid($pid, 0);
    my $status = $?;
    alarm(0);
    $text =~ s/\r\n/\n/g;
    open(my $fh, '<', $stdout) or die "open $stdout: $!\n";
    local $/;
    return ($status, scalar(<$fh>) // '', $text);
}

# The redraws in pty text: [label, percent, done, total, rate, tail].
my sub draws {
    my ($text) = @_;
    my @draws;
    while ($text =~ /\r(\w+): (\d+)% \((.+?) of (.+?)\), (\S+ \S+\/s|-- B\/s), (ETA \S+|took \S+)\e\[K/g) {
	push @draws, [$1, $2, $3, $4, $5, $6];
    }
    return @draws;
}

# Checks a successful run's line: shown, updated in place, ended cleanly.
my sub check_line {
    my ($text, $label, $what) = @_;
    my @draws = draws($text);
    ok(@draws >= 3, "$what: the line is drawn several times") or diag(explain($text));
    is(scalar(grep { $_->[0] ne $label } @draws), 0, "$what: every draw is labelled $label");
    my @percent = map { $_->[1] } @draws;
    ok(!grep({ $percent[$_] < $percent[$_ - 1] } 1 .. $#percent), "$what: the percent never goes back");
    ok((grep { $_ > 0 && $_ < 100 } @percent), "$what: percents between 0 and 100 are shown");
    is(scalar(grep { $_->[3] ne '24.00 MiB' } @draws), 0, "$what: the total is the device size");
    ok((grep { $_->[5] =~ /^ETA \d/ } @draws), "$what: an ETA is shown");
    ok((grep { $_->[4] =~ /^[\d.]+ \S?i?B\/s$/ } @draws), "$what: a rate is shown");
    like($text, qr/\r$label: 100% \(24\.00 MiB of 24\.00 MiB\), [\d.]+ \S+\/s, took \d+s\e\[K\n\z/,
	"$what: the last draw is 100% with the time taken, ended by a newline");
    is(($text =~ tr/\n//), 1, "$what: it is one line, redrawn in place");
    unlike($text, qr/progress/, "$what: no -v progress lines");
}

# verify on a terminal, its archive from a slow pipe
mkfifo("$dir/in.fifo", 0600) or die "mkfifo: $!\n";
my $feeder = slow_copy("$dir/a.vma", "$dir/in.fifo");
my ($s, $out, $tty) = run_on_pty(cmd => [$vma, 'verify', '-'], stdin => "$dir/in.fifo");
waitpid($feeder, 0);
is($s, 0, 'verify on a terminal succeeds');
is($out, '', 'verify prints nothing on stdout');
check_line($tty, 'verify', 'verify');

# extract on a terminal: stdout as without the line
$feeder = slow_copy("$dir/a.vma", "$dir/in.fifo");
($s, $out, $tty) = run_on_pty(cmd => [$vma, 'extract', '-', "$dir/x1"], stdin => "$dir/in.fifo");
waitpid($feeder, 0);
is($s, 0, 'extract on a terminal succeeds');
check_line($tty, 'extract', 'extract');
my ($plain_status, $plain_out, $plain_err) = run_captured($vma, 'extract', "$dir/a.vma", "$dir/x2");
is($plain_status, 0, 'extract with standard error not a terminal');
is($plain_err, '', 'prints nothing on standard error');
(my $expected_out = $plain_out) =~ s/x2/x1/;
is($out, $expected_out, 'and the same on stdout as on a terminal');
($status) = run_captured('cmp', "$dir/x1/disk-drive-scsi0.raw", "$dir/disk.img");
is($status, 0, 'the disk extracted on a terminal is intact');

# create on a terminal, its archive drained slowly from a FIFO
mkfifo("$dir/out.fifo", 0600) or die "mkfifo: $!\n";
my $drain = slow_copy("$dir/out.fifo", "$dir/b.vma");
($s, $out, $tty) = run_on_pty(cmd => [$vma, 'create', "$dir/out.fifo", "drive-scsi0=$dir/disk.img"]);
waitpid($drain, 0);
is($s, 0, 'create on a terminal succeeds');
check_line($tty, 'create', 'create');
($status, undef, $err) = run_captured($vma, 'verify', "$dir/b.vma");
is($status, 0, 'the archive created on a terminal verifies') or diag($err);
($status, $out, $err) = run_captured($vma, 'create', "$dir/c.vma", "drive-scsi0=$dir/disk.img");
is($err, '', 'create with standard error not a terminal prints nothing on it');

# a narrow terminal: the line is cut to fit, so "\r" still returns to its start
$feeder = slow_copy("$dir/a.vma", "$dir/in.fifo");
($s, $out, $tty) = run_on_pty(cmd => [$vma, 'verify', '-'], stdin => "$dir/in.fifo", columns => 30);
waitpid($feeder, 0);
is($s, 0, 'verify on a narrow terminal succeeds');
my @lines = $tty =~ /\r([^\r\e]*)\e\[K/g;
ok(@lines >= 2, 'the line is drawn');
is(scalar(grep { length($_) > 29 } @lines), 0, 'never wider than the terminal');

# -v: the progress lines of old, nothing of the line
$drain = slow_copy("$dir/out.fifo", "$dir/d.vma");
($s, $out, $tty) = run_on_pty(cmd => [$vma, 'create', '-v', "$dir/out.fifo", "drive-scsi0=$dir/disk.img"]);
waitpid($drain, 0);
is($s, 0, 'create -v on a terminal');
like($tty, qr/^progress 100% (\d+)\/\1 \d+$/m, 'prints its progress lines');
unlike($tty, qr/[\r\e]/, 'and no line redrawn in place');
$feeder = slow_copy("$dir/a.vma", "$dir/in.fifo");
($s, $out, $tty) = run_on_pty(cmd => [$vma, 'verify', '-v', '-'], stdin => "$dir/in.fifo");
waitpid($feeder, 0);
is($s, 0, 'verify -v on a terminal');
like($out, qr/^progress 100% \(read \d+ bytes, duration \d+ sec\)$/m, 'prints its progress lines');
is($tty, '', 'and nothing on the terminal');

# failure: the line is cleared, then the error message
my $whole = do { local $/; open(my $fh, '<', "$dir/a.vma") or die; binmode($fh); <$fh> };
open(my $fh, '>', "$dir/cut.vma") or die;
binmode($fh);
print $fh substr($whole, 0, int($archive_size * 0.7));
close($fh) or die;
$feeder = slow_copy("$dir/cut.vma", "$dir/in.fifo");
($s, $out, $tty) = run_on_pty(cmd => [$vma, 'verify', '-'], stdin => "$dir/in.fifo");
waitpid($feeder, 0);
is($s, 1 << 8, 'verify of a truncated archive fails on a terminal');
ok(scalar(draws($tty)) >= 2, 'after showing the line');
like($tty, qr/\e\[K\r\e\[Kvma: verify failed - [^\r\e]+\n\z/, 'the line is cleared before the message')
    or diag(explain($tty));
($status, undef, $err) = run_captured($vma, 'verify', "$dir/cut.vma");
like($tty, qr/\Q$err\E\z/, 'which reads as without a terminal');

# ^C on the terminal: SIGINT ends vma, the line is cleared first
$feeder = slow_copy("$dir/a.vma", "$dir/in.fifo");
my $interrupted;
($s, $out, $tty) = run_on_pty(cmd => [$vma, 'extract', '-', "$dir/x3"], stdin => "$dir/in.fifo",
    on_output => sub {
	my ($text, $master) = @_;
	if (!$interrupted && scalar(draws($text)) >= 2) {
	    syswrite($master, "\x03");
	    $interrupted = 1;
	}
    });
kill('TERM', $feeder);
waitpid($feeder, 0);
ok($interrupted, 'the line was shown before ^C');
is($s & 127, 2, 'extract ends by SIGINT');
like($tty, qr/\r\e\[K\z/, 'with the line cleared') or diag(explain($tty));
unlike($tty, qr/\n/, 'and no line ended');

# SIGTERM likewise
$feeder = slow_copy("$dir/a.vma", "$dir/in.fifo");
my $terminated;
($s, $out, $tty) = run_on_pty(cmd => [$vma, 'verify', '-'], stdin => "$dir/in.fifo",
    on_output => sub {
	my ($text, $master, $pid) = @_;
	if (!$terminated && scalar(draws($text)) >= 2) {
	    kill('TERM', $pid);
	    $terminated = 1;
	}
    });
kill('TERM', $feeder);
waitpid($feeder, 0);
is($s & 127, 15, 'verify ends by SIGTERM');
like($tty, qr/\r\e\[K\z/, 'with the line cleared') or diag(explain($tty));

done_testing();
