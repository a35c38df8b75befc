// The progress line `vma create`, `extract` and `verify` show a person at a
// terminal: one line on standard error, redrawn in place with the percent,
// bytes done of the total, the rate and the ETA.
//
// It is shown only when standard error is a terminal and -v is not given, so
// a pipe or log (qmrestore, vzdump, tests) sees exactly the output of old,
// and -v keeps its progress lines. The line never outlives the command: it
// is ended with a newline by finish(), cleared when the object goes away
// without finish() (a failure, before the error message), and cleared by
// SIGINT or SIGTERM before the signal takes its default course.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace vma_cli {

class TerminalProgress {
public:
    // label names the operation ("extract"); shown only if stderr is a
    // terminal and !verbose. At most one line is active at a time.
    TerminalProgress(std::string label, bool verbose);
    ~TerminalProgress();
    TerminalProgress(const TerminalProgress &) = delete;
    TerminalProgress &operator=(const TerminalProgress &) = delete;

    // Sets the figures; redraws at most every kRedrawInterval, and always
    // when done first reaches total. Does nothing when inactive or total is 0.
    void update(std::uint64_t done, std::uint64_t total);

    // Draws the final figures (with the elapsed time instead of the ETA) and
    // ends the line. Nothing is printed if nothing was ever drawn.
    void finish();

    static constexpr std::chrono::milliseconds kRedrawInterval{200};

private:
    void draw(bool final);

    std::string label_;
    bool active_ = false;
    bool drawn_ = false;
    std::uint64_t done_ = 0, total_ = 0;
    std::chrono::steady_clock::time_point start_, last_draw_;
};

} // namespace vma_cli
