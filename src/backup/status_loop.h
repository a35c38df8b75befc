// The backup status loop of PVE::VZDump::QemuServer: polls query-backup once
// a second, logs progress lines and the final summary byte for byte as the
// original plugin does, and ends with the job (done) or with its error.
#pragma once

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace engine::backup {

// One query-backup reply. Absent numbers are 0 and absent strings empty,
// which is how the original Perl code treats them ("|| 0", "||"); only
// `dirty` needs to know whether it was present.
struct BackupStatus {
    std::string status;
    std::string errmsg;
    std::string uuid;
    int64_t total = 0;
    bool has_dirty = false;
    int64_t dirty = 0;
    int64_t transferred = 0;
    int64_t zero_bytes = 0;
    int64_t reused = 0;
    bool finishing = false;
};

// One query-pbs-bitmap-info entry.
struct BitmapInfo {
    std::string drive;
    std::string action;
    int64_t size = 0;
    int64_t dirty = 0;
};

// The "dirty-bitmap status" text for one bitmap entry ("created new",
// "OK (1.0 GiB of 32.0 GiB dirty)", ...), as the original's
// $bitmap_action_to_human.
std::string bitmap_status_text(const BitmapInfo &info);

// Thrown by StatusLoopEnv::sleep_second when a signal is pending; the caller
// lets the signal's own handler decide what happens next.
class Interrupted : public std::runtime_error {
  public:
    Interrupted() : std::runtime_error("interrupted by signal\n") {}
};

// Everything the loop needs from outside. Each member must be set.
struct StatusLoopEnv {
    // query-backup; throws with the QMP client's text on failure
    std::function<BackupStatus()> query_backup;
    // query-pbs-bitmap-info; only called when the QEMU supports it
    std::function<std::vector<BitmapInfo>()> query_bitmap_info;
    // receives each log line without prefix or newline, as loginfo() would
    std::function<void(const std::string &)> log;
    // wall clock in whole seconds (time())
    std::function<int64_t()> now;
    // waits one second; throws Interrupted when a signal arrives meanwhile
    std::function<void()> sleep_second;
};

struct StatusLoopOptions {
    std::string job_uuid;
    // QEMU reports 'query-bitmap-info' support (PBS backups)
    bool has_query_bitmap = false;
    // templates get no per-drive dirty-bitmap lines
    bool is_template = false;
};

struct StatusLoopResult {
    int64_t total = 0;  // the last non-zero total seen
    int64_t reused = 0; // the last reply's reused
};

// Runs until query-backup reports a status other than "active". Returns on
// "done"; throws std::runtime_error with "<errmsg>\n" on "error" (or
// "unknown error\n"), "got unexpected status '<s>'\n" otherwise, and
// "got unexpected uuid\n" when a reply names another job. Errors of the env
// callbacks (QMP failures, Interrupted) propagate unchanged.
StatusLoopResult run_status_loop(const StatusLoopOptions &options, const StatusLoopEnv &env);

// Sleeps `seconds`, waking every 100 ms to ask `interrupted`; throws
// Interrupted as soon as it returns true. A sleep cut short by a signal
// handler counts as a wake-up, not as an error.
void sleep_unless_interrupted(double seconds, const std::function<bool()> &interrupted);

} // namespace engine::backup
