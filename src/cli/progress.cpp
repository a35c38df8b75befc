#include "cli/progress.h"

#include "backup/render.h"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <sys/ioctl.h>
#include <unistd.h>

namespace vma_cli {

namespace {

// "\r" back to the line start, "\033[K" erases to its end (a shorter line
// leaves nothing of a longer one behind).
constexpr char kClearLine[] = "\r\033[K";

// Whether a line is on the screen, for the signal handler.
volatile sig_atomic_t line_shown = 0;
bool instance_active = false;
struct sigaction previous_int, previous_term;

void write_stderr(const char *data, std::size_t len)
{
    while (len > 0) {
        ssize_t n = write(STDERR_FILENO, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; // a progress line is not worth failing the command for
        data += n;
        len -= static_cast<std::size_t>(n);
    }
}

// Clears the line, then lets the signal do what it did before (by default
// end the process), so the exit status stays that of the signal.
void clear_and_reraise(int sig)
{
    if (line_shown)
        write_stderr(kClearLine, sizeof kClearLine - 1);
    sigaction(sig, sig == SIGINT ? &previous_int : &previous_term, nullptr);
    raise(sig); // blocked until this handler returns
}

// Catches sig unless it is ignored (e.g. vma started in the background by
// a non-interactive shell): an ignored signal must stay without effect.
void catch_signal(int sig, struct sigaction &previous)
{
    if (sigaction(sig, nullptr, &previous) < 0 || previous.sa_handler == SIG_IGN)
        return;
    struct sigaction sa {};
    sa.sa_handler = clear_and_reraise;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, nullptr);
}

std::string render(const std::string &label, std::uint64_t done, std::uint64_t total, double elapsed,
                   bool final)
{
    std::uint64_t percent = std::min<std::uint64_t>(100, done * 100 / total);
    std::string line = label + ": " + std::to_string(percent) + "% (" +
                       engine::render_bytes(double(done)) + " of " +
                       engine::render_bytes(double(total)) + "), ";
    double rate = elapsed > 0 ? double(done) / elapsed : 0;
    line += rate > 0 ? engine::render_bytes(rate) + "/s" : std::string("-- B/s");
    if (final)
        line += ", took " + engine::render_duration(elapsed);
    else if (rate > 0)
        line += ", ETA " + engine::render_duration(double(total - std::min(done, total)) / rate);
    else
        line += ", ETA --";
    return line;
}

std::size_t terminal_columns()
{
    struct winsize ws {};
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1)
        return ws.ws_col;
    return 80;
}

} // namespace

TerminalProgress::TerminalProgress(std::string label, bool verbose) : label_(std::move(label))
{
    if (verbose || instance_active || !isatty(STDERR_FILENO))
        return;
    active_ = instance_active = true;
    start_ = std::chrono::steady_clock::now();
    catch_signal(SIGINT, previous_int);
    catch_signal(SIGTERM, previous_term);
}

TerminalProgress::~TerminalProgress()
{
    if (!active_)
        return;
    if (line_shown)
        write_stderr(kClearLine, sizeof kClearLine - 1);
    line_shown = 0;
    sigaction(SIGINT, &previous_int, nullptr);
    sigaction(SIGTERM, &previous_term, nullptr);
    instance_active = false;
}

void TerminalProgress::update(std::uint64_t done, std::uint64_t total)
{
    if (!active_ || !total)
        return;
    done_ = done;
    total_ = total;
    auto now = std::chrono::steady_clock::now();
    if (drawn_ && now - last_draw_ < kRedrawInterval)
        return;
    last_draw_ = now;
    draw(false);
}

void TerminalProgress::finish()
{
    if (!active_ || !drawn_)
        return;
    draw(true);
}

void TerminalProgress::draw(bool final)
{
    double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    std::string text = render(label_, done_, total_, elapsed, final);
    // a line wider than the terminal would wrap, and "\r" would then
    // return only to the start of its last row
    text.resize(std::min(text.size(), terminal_columns() - 1));
    std::string out = "\r" + text + "\033[K";
    if (final)
        out += '\n';
    write_stderr(out.data(), out.size());
    drawn_ = true;
    line_shown = final ? 0 : 1;
}

} // namespace vma_cli
