#include "backup/status_loop.h"

#include "backup/render.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>

namespace engine::backup {

namespace {

// Perl's int($a / $b) for integers: an exact quotient stays an integer,
// anything else goes through doubles, and int() truncates toward zero.
int64_t perl_int_div(int64_t numerator, int64_t denominator)
{
    if (numerator % denominator == 0)
        return numerator / denominator;
    return static_cast<int64_t>(static_cast<double>(numerator) / static_cast<double>(denominator));
}

// Perl's int($value * 100 / $base), which leaves integers for doubles only
// when the product would overflow.
int64_t perl_percent(int64_t value, int64_t base)
{
    __int128 product = static_cast<__int128>(value) * 100;
    if (product > INT64_MAX || product < INT64_MIN)
        return static_cast<int64_t>(static_cast<double>(value) * 100.0 / static_cast<double>(base));
    return perl_int_div(static_cast<int64_t>(product), base);
}

std::string rate(int64_t bytes, int64_t seconds)
{
    if (bytes <= 0)
        return "0 B/s";
    return render_bytes(static_cast<double>(perl_int_div(bytes, seconds)), 1) + "/s";
}

std::string format(const char *pattern, auto... args)
{
    int length = std::snprintf(nullptr, 0, pattern, args...);
    std::string text(length, '\0');
    std::snprintf(text.data(), length + 1, pattern, args...);
    return text;
}

// Perl truth of a string: empty and "0" are false.
bool perl_true(const std::string &text)
{
    return !text.empty() && text != "0";
}

} // namespace

std::string bitmap_status_text(const BitmapInfo &info)
{
    const std::string &action = info.action;
    if (action == "not-used")
        return "disabled (no support)";
    if (action == "not-used-removed")
        return "disabled (old bitmap cleared)";
    if (action == "new")
        return "created new";
    if (action == "used") {
        if (info.dirty == 0)
            return "OK (drive clean)";
        return "OK (" + render_bytes(static_cast<double>(info.dirty), 1) + " of " +
               render_bytes(static_cast<double>(info.size), 1) + " dirty)";
    }
    if (action == "invalid")
        return "existing bitmap was invalid and has been cleared";
    if (action == "missing-recreated") {
        // the TPM drive is attached anew for every backup, so its bitmap is
        // always "missing"; the original reports it as new
        if (info.drive == "drive-tpmstate0-backup")
            return "created new";
        return "expected bitmap was missing and has been recreated";
    }
    return "unknown";
}

StatusLoopResult run_status_loop(const StatusLoopOptions &options, const StatusLoopEnv &env)
{
    const int64_t start_time = env.now();
    int64_t last_time = start_time;
    int64_t last_percent = -1, last_total = 0, last_target = 0, last_zero = 0;
    int64_t last_transferred = 0;
    int64_t transferred = 0, reused = 0;

    int64_t target = 0;
    int64_t last_reused = 0;
    if (options.has_query_bitmap) {
        std::vector<BitmapInfo> bitmaps = env.query_bitmap_info();
        std::stable_sort(bitmaps.begin(), bitmaps.end(),
                         [](const BitmapInfo &a, const BitmapInfo &b) { return a.drive < b.drive; });
        int64_t total = 0;
        for (const BitmapInfo &info : bitmaps) {
            if (!options.is_template) {
                std::string drive = info.drive;
                if (drive.starts_with("drive-"))
                    drive.erase(0, 6);
                env.log(drive + ": dirty-bitmap status: " + bitmap_status_text(info));
            }
            target += info.dirty;
            total += info.size;
            last_reused += info.size - info.dirty;
        }
        if (target < total)
            env.log("using fast incremental mode (dirty-bitmap), " + render_bytes(static_cast<double>(target), 1) +
                    " dirty of " + render_bytes(static_cast<double>(total), 1) + " total");
    }

    bool last_finishing = false;
    while (true) {
        const BackupStatus status = env.query_backup();

        const int64_t total = status.total;
        if (!options.has_query_bitmap)
            target = status.has_dirty && status.dirty < total ? status.dirty : total;
        transferred = status.transferred;
        reused = status.reused;
        const int64_t percent = target ? perl_percent(transferred, target) : 100;
        const int64_t zero = status.zero_bytes;

        if (!perl_true(status.uuid) || status.uuid != options.job_uuid)
            throw std::runtime_error("got unexpected uuid\n");

        const int64_t now = env.now();
        const int64_t duration = now - start_time;

        const int64_t read_bytes = transferred - last_transferred;
        // for PBS, reused includes the zero bytes
        const int64_t write_bytes = reused ? read_bytes - (reused - last_reused) : read_bytes - (zero - last_zero);

        const int64_t interval = (now - last_time) ? now - last_time : 1;
        const std::string line =
            format("%3lld%% (%s of %s) in %s, read: %s, write: %s", static_cast<long long>(percent),
                   render_bytes(static_cast<double>(transferred), 1).c_str(),
                   render_bytes(static_cast<double>(target), 1).c_str(),
                   render_duration(static_cast<double>(duration)).c_str(), rate(read_bytes, interval).c_str(),
                   rate(write_bytes, interval).c_str());

        // a reply without a figure keeps the last one seen
        const auto keep_nonzero_figures = [&] {
            if (target)
                last_target = target;
            if (total)
                last_total = total;
            if (zero)
                last_zero = zero;
        };

        const std::string result = perl_true(status.status) ? status.status : "unknown";
        if (result != "active") {
            if (last_percent < 100)
                env.log(line);
            if (result != "done") {
                if (result == "error")
                    throw std::runtime_error((perl_true(status.errmsg) ? status.errmsg : "unknown error") + "\n");
                throw std::runtime_error("got unexpected status '" + result + "'\n");
            }
            keep_nonzero_figures();
            break;
        }
        if (percent != last_percent && interval > 2) {
            env.log(line);
            last_percent = percent;
            keep_nonzero_figures();
            if (transferred)
                last_transferred = transferred;
            last_time = now;
            last_reused = reused;

            if (!last_finishing && status.finishing)
                env.log("Waiting for server to finish backup validation...");
            last_finishing = status.finishing;
        }
        env.sleep_second();
    }

    const int64_t duration = env.now() - start_time;

    if (last_zero) {
        const int64_t zero_percent = last_target ? perl_percent(last_zero, last_target) : 0;
        env.log("backup is sparse: " + render_bytes(static_cast<double>(last_zero)) + " (" +
                std::to_string(zero_percent) + "%) total zero data");
    }
    if (reused) {
        // last_total is never 0 here: QEMU only reuses data of a non-empty job
        const int64_t reused_percent = last_total ? perl_percent(reused, last_total) : 0;
        env.log("backup was done incrementally, reused " + render_bytes(static_cast<double>(reused)) + " (" +
                std::to_string(reused_percent) + "%)");
    }
    if (transferred) {
        const std::string transferred_text = render_bytes(static_cast<double>(transferred));
        if (duration)
            env.log("transferred " + transferred_text + " in " + std::to_string(duration) + " seconds (" +
                    rate(transferred, duration) + ")");
        else
            env.log("transferred " + transferred_text + " in <1 seconds");
    }

    return StatusLoopResult{last_total, reused};
}

void sleep_unless_interrupted(double seconds, const std::function<bool()> &interrupted)
{
    using clock = std::chrono::steady_clock;
    const auto deadline =
        clock::now() + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(seconds));
    const clock::duration slice = std::chrono::milliseconds(100);
    while (true) {
        if (interrupted())
            throw Interrupted();
        const auto remaining = deadline - clock::now();
        if (remaining <= clock::duration::zero())
            return;
        const auto nap = std::chrono::duration_cast<std::chrono::nanoseconds>(std::min(remaining, slice));
        struct timespec request = {static_cast<time_t>(nap.count() / 1000000000),
                                   static_cast<long>(nap.count() % 1000000000)};
        // EINTR just means a signal arrived: the next round asks interrupted()
        nanosleep(&request, nullptr);
    }
}

} // namespace engine::backup
