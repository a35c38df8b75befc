#include "backup/status_loop.h"

#include "catch2_compat.h"

#include <csignal>
#include <sys/time.h>
#include <deque>
#include <stdexcept>

using namespace engine::backup;

namespace {

constexpr int64_t MiB = 1024 * 1024;
constexpr int64_t GiB = 1024 * MiB;

// A scripted QEMU and a fake clock: every sleep advances the clock by one
// second, so the loop's lines follow from the replies alone.
struct Script {
    std::deque<BackupStatus> replies;
    std::vector<BitmapInfo> bitmaps;
    std::vector<std::string> lines;
    int64_t clock = 1000;
    int queries = 0;

    StatusLoopEnv env()
    {
        StatusLoopEnv env;
        env.query_backup = [this] {
            if (replies.empty())
                throw std::logic_error("query-backup asked more often than scripted");
            ++queries;
            BackupStatus reply = replies.front();
            replies.pop_front();
            return reply;
        };
        env.query_bitmap_info = [this] { return bitmaps; };
        env.log = [this](const std::string &line) { lines.push_back(line); };
        env.now = [this] { return clock; };
        env.sleep_second = [this] { ++clock; };
        return env;
    }
};

BackupStatus vma_status(const char *state, int64_t transferred, int64_t zero, int64_t total = GiB)
{
    BackupStatus status;
    status.status = state;
    status.uuid = "6e1a2f0c-3f6b-4ad5-9c1e-0b8d1f7a1c11";
    status.total = total;
    status.has_dirty = true;
    status.dirty = total;
    status.transferred = transferred;
    status.zero_bytes = zero;
    return status;
}

StatusLoopOptions job()
{
    StatusLoopOptions options;
    options.job_uuid = "6e1a2f0c-3f6b-4ad5-9c1e-0b8d1f7a1c11";
    return options;
}

} // namespace

TEST_CASE("a VMA backup logs progress after more than 2 seconds and the sparse summary", "[status]")
{
    Script script;
    script.replies = {
        vma_status("active", 0, 0),
        vma_status("active", 100 * MiB, 0),
        vma_status("active", 200 * MiB, 50 * MiB),
        vma_status("active", 300 * MiB, 100 * MiB),
        vma_status("done", GiB, 400 * MiB),
    };
    StatusLoopResult result = run_status_loop(job(), script.env());

    CHECK(script.lines == std::vector<std::string>{
                              " 29% (300.0 MiB of 1.0 GiB) in 3s, read: 100.0 MiB/s, write: 66.7 MiB/s",
                              "100% (1.0 GiB of 1.0 GiB) in 4s, read: 724.0 MiB/s, write: 424.0 MiB/s",
                              "backup is sparse: 400.00 MiB (39%) total zero data",
                              "transferred 1.00 GiB in 4 seconds (256.0 MiB/s)",
                          });
    CHECK(result.total == GiB);
    CHECK(result.reused == 0);
    CHECK(script.replies.empty());
}

TEST_CASE("an unchanged percentage is not logged again", "[status]")
{
    Script script;
    script.replies = {
        vma_status("active", 0, 0), vma_status("active", 0, 0), vma_status("active", 0, 0), vma_status("active", 0, 0),
        vma_status("active", 0, 0), vma_status("active", 0, 0), vma_status("done", GiB, 0),
    };
    run_status_loop(job(), script.env());

    CHECK(script.lines == std::vector<std::string>{
                              "  0% (0.0 B of 1.0 GiB) in 3s, read: 0 B/s, write: 0 B/s",
                              "100% (1.0 GiB of 1.0 GiB) in 6s, read: 341.3 MiB/s, write: 341.3 MiB/s",
                              "transferred 1.00 GiB in 6 seconds (170.7 MiB/s)",
                          });
}

TEST_CASE("a job done at the first poll reports less than a second", "[status]")
{
    Script script;
    script.replies = {vma_status("done", 64 * 1024, 0, 64 * 1024)};
    run_status_loop(job(), script.env());

    CHECK(script.lines == std::vector<std::string>{
                              "100% (64.0 KiB of 64.0 KiB) in 0s, read: 64.0 KiB/s, write: 64.0 KiB/s",
                              "transferred 64.00 KiB in <1 seconds",
                          });
}

TEST_CASE("a failed job logs its last line and throws QEMU's message", "[status]")
{
    Script script;
    BackupStatus failed = vma_status("error", 512 * MiB, 0);
    failed.errmsg = "job failed with err -5 - Input/output error";
    script.replies = {vma_status("active", 0, 0), failed};

    CHECK_THROWS_WITH(run_status_loop(job(), script.env()), "job failed with err -5 - Input/output error\n");
    CHECK(script.lines ==
          std::vector<std::string>{" 50% (512.0 MiB of 1.0 GiB) in 1s, read: 512.0 MiB/s, write: 512.0 MiB/s"});
}

TEST_CASE("an error without message and an unknown status have their own texts", "[status]")
{
    Script script;
    script.replies = {vma_status("error", 0, 0)};
    CHECK_THROWS_WITH(run_status_loop(job(), script.env()), "unknown error\n");

    script.replies = {vma_status("", 0, 0)};
    CHECK_THROWS_WITH(run_status_loop(job(), script.env()), "got unexpected status 'unknown'\n");

    script.replies = {vma_status("paused", 0, 0)};
    CHECK_THROWS_WITH(run_status_loop(job(), script.env()), "got unexpected status 'paused'\n");
}

TEST_CASE("a reply for another job ends the loop before any line", "[status]")
{
    Script script;
    BackupStatus other = vma_status("active", 0, 0);
    other.uuid = "00000000-0000-0000-0000-000000000001";
    script.replies = {vma_status("active", 0, 0), other};
    CHECK_THROWS_WITH(run_status_loop(job(), script.env()), "got unexpected uuid\n");
    CHECK(script.lines.empty());

    BackupStatus missing = vma_status("done", GiB, 0);
    missing.uuid.clear();
    script.replies = {missing};
    CHECK_THROWS_WITH(run_status_loop(job(), script.env()), "got unexpected uuid\n");
}

TEST_CASE("a PBS backup reports dirty bitmaps, incremental mode and reused data", "[status]")
{
    Script script;
    script.bitmaps = {
        {"drive-tpmstate0-backup", "missing-recreated", 4 * MiB, 4 * MiB},
        {"drive-scsi0", "used", 32 * GiB, GiB},
    };
    BackupStatus start;
    start.status = "active";
    start.uuid = job().job_uuid;
    start.total = 32 * GiB + 4 * MiB;
    start.has_dirty = true;
    start.dirty = GiB + 4 * MiB;
    start.reused = 31 * GiB;
    BackupStatus done = start;
    done.status = "done";
    done.transferred = GiB + 4 * MiB;
    done.reused = 31 * GiB + 512 * MiB;
    script.replies = {start, done};

    StatusLoopOptions options = job();
    options.has_query_bitmap = true;
    StatusLoopResult result = run_status_loop(options, script.env());

    CHECK(script.lines == std::vector<std::string>{
                              "scsi0: dirty-bitmap status: OK (1.0 GiB of 32.0 GiB dirty)",
                              "tpmstate0-backup: dirty-bitmap status: created new",
                              "using fast incremental mode (dirty-bitmap), 1.0 GiB dirty of 32.0 GiB total",
                              "100% (1.0 GiB of 1.0 GiB) in 1s, read: 1.0 GiB/s, write: 516.0 MiB/s",
                              "backup was done incrementally, reused 31.50 GiB (98%)",
                              "transferred 1.00 GiB in 1 seconds (1.0 GiB/s)",
                          });
    CHECK(result.total == 32 * GiB + 4 * MiB);
    CHECK(result.reused == 31 * GiB + 512 * MiB);
}

TEST_CASE("a template gets no per-drive bitmap lines", "[status]")
{
    Script script;
    script.bitmaps = {{"drive-scsi0", "new", GiB, GiB}};
    script.replies = {vma_status("done", GiB, 0)};
    StatusLoopOptions options = job();
    options.has_query_bitmap = true;
    options.is_template = true;
    run_status_loop(options, script.env());

    CHECK(script.lines == std::vector<std::string>{
                              "100% (1.0 GiB of 1.0 GiB) in 0s, read: 1.0 GiB/s, write: 1.0 GiB/s",
                              "transferred 1.00 GiB in <1 seconds",
                          });
}

TEST_CASE("the PBS finishing phase is announced once", "[status]")
{
    Script script;
    BackupStatus finishing = vma_status("active", GiB, 0);
    finishing.finishing = true;
    script.replies = {vma_status("active", 0, 0), vma_status("active", 0, 0), vma_status("active", 0, 0),
                      finishing, finishing, finishing, finishing, vma_status("done", GiB, 0)};
    run_status_loop(job(), script.env());

    CHECK(script.lines == std::vector<std::string>{
                              "100% (1.0 GiB of 1.0 GiB) in 3s, read: 341.3 MiB/s, write: 341.3 MiB/s",
                              "Waiting for server to finish backup validation...",
                              "transferred 1.00 GiB in 7 seconds (146.3 MiB/s)",
                          });
}

TEST_CASE("bitmap status texts follow the action", "[status]")
{
    CHECK(bitmap_status_text({"drive-scsi0", "not-used", 0, 0}) == "disabled (no support)");
    CHECK(bitmap_status_text({"drive-scsi0", "not-used-removed", 0, 0}) == "disabled (old bitmap cleared)");
    CHECK(bitmap_status_text({"drive-scsi0", "used", GiB, 0}) == "OK (drive clean)");
    CHECK(bitmap_status_text({"drive-scsi0", "invalid", GiB, GiB}) ==
          "existing bitmap was invalid and has been cleared");
    CHECK(bitmap_status_text({"drive-scsi0", "missing-recreated", GiB, GiB}) ==
          "expected bitmap was missing and has been recreated");
    CHECK(bitmap_status_text({"drive-scsi0", "whatever", GiB, GiB}) == "unknown");
}

TEST_CASE("errors of the environment propagate unchanged", "[status]")
{
    Script script;
    StatusLoopEnv env = script.env();
    env.query_backup = []() -> BackupStatus {
        throw std::runtime_error("VM 100 qmp command 'query-backup' failed - client closed connection\n");
    };
    CHECK_THROWS_WITH(run_status_loop(job(), env),
                      "VM 100 qmp command 'query-backup' failed - client closed connection\n");

    env = script.env();
    script.replies = {vma_status("active", 0, 0)};
    env.sleep_second = [] { throw Interrupted(); };
    CHECK_THROWS_AS(run_status_loop(job(), env), Interrupted);
}

namespace {
volatile std::sig_atomic_t signal_seen = 0;
void note_signal(int) { signal_seen = 1; }
} // namespace

TEST_CASE("the sleep returns after its time or throws once a signal is pending", "[status]")
{
    int asked = 0;
    sleep_unless_interrupted(0.05, [&] { return ++asked < 0; });
    CHECK(asked >= 1);

    // a timer signal arrives while the loop naps; its handler only notes it
    struct sigaction action = {}, previous = {};
    action.sa_handler = note_signal;
    sigaction(SIGALRM, &action, &previous);
    signal_seen = 0;
    struct itimerval timer = {};
    timer.it_value.tv_usec = 150000;
    setitimer(ITIMER_REAL, &timer, nullptr);
    CHECK_THROWS_AS(sleep_unless_interrupted(60, [&] { return signal_seen != 0; }), Interrupted);
    sigaction(SIGALRM, &previous, nullptr);
    CHECK(signal_seen == 1);
}
