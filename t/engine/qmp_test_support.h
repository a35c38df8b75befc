// Test helpers for the QMP client: a private temporary directory, the text
// of a failure, a fake peer that serves one unix-socket connection with a scripted exchange,
// a child process that is killed and reaped on every exit path, and how a real QEMU starts here.
#pragma once

#include "temp_dir.h"
#include "util/fd.h"

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace qmp_test {

using engine_test::TempDir;

// What `call` threw (its what()), or "(no exception)".
std::string failure_text(const std::function<void()> &call);

// The peer's end of one accepted connection, with a 10 s safety bound on
// every wait so a broken test fails instead of hanging.
class Connection {
  public:
    explicit Connection(int fd) : fd_(fd) {}
    // Reads until `marker` has arrived; returns everything read so far
    // (including earlier unconsumed bytes) and consumes it.
    std::string read_until(const std::string &marker);
    // Reads one QMP command (PVE sends no newline: a balanced JSON object).
    std::string read_command();
    // As read_command, also receiving an fd passed with SCM_RIGHTS.
    std::string read_command_with_fd(engine::Fd &passed);
    // Returns false when the client has closed the connection.
    bool write(const std::string &bytes);
    // Waits until the client closes its end.
    void wait_closed();
    int fd() const { return fd_.get(); }

  private:
    bool fill(engine::Fd *passed = nullptr);
    engine::Fd fd_;
    std::string pending_;
};

// Listens on `path` and runs `script` on each accepted connection, one after
// another, `connections` times, in a thread joined by the destructor.
// Exceptions in the script are recorded and reported by failure().
class FakePeer {
  public:
    using Script = std::function<void(Connection &)>;
    FakePeer(const std::string &path, Script script, int connections = 1);
    ~FakePeer();
    // Waits for the script to finish; returns the text of an exception it
    // threw, or "".
    std::string finish();

  private:
    engine::Fd listener_;
    std::thread thread_;
    std::string failure_;
    bool joined_ = false;
};

// A child process started with execvp; SIGKILLed and reaped if still
// running when destroyed.
class Child {
  public:
    explicit Child(const std::vector<std::string> &argv);
    ~Child();
    Child(const Child &) = delete;
    Child &operator=(const Child &) = delete;
    pid_t pid() const { return pid_; }
    // Waits up to `limit` for the child to exit; returns its wait status,
    // or -1 if it is still running.
    int wait_exit(std::chrono::milliseconds limit);

  private:
    pid_t pid_ = -1;
};

// Polls until a unix socket bound to `path` (as the server spelled it)
// listens, or `limit` passes.
bool wait_for_socket(const std::string &path, std::chrono::milliseconds limit);

// How qemu-system-x86_64 starts on this host, as scripts/qemu-probe (or the
// script QEMU_PROBE names) decides; probed once per process, its report
// (which way, and the ways that failed) printed to stderr.
struct QemuAccel {
    enum class State { runs, not_installed, fails } state;
    std::vector<std::string> options; // e.g. -accel kvm -cpu host
    std::string report;               // the probe's own words, QEMU's errors included
};
const QemuAccel &qemu_accel();

} // namespace qmp_test

// For a Catch2 test case that needs a real QEMU: returns from it, skipped
// with the reason, when qemu-system-x86_64 is not installed; fails it with
// QEMU's own error when QEMU is installed but starts with no accelerator.
#define REQUIRE_REAL_QEMU()                                                                                            \
    do {                                                                                                               \
        const qmp_test::QemuAccel &probe_ = qmp_test::qemu_accel();                                                   \
        if (probe_.state == qmp_test::QemuAccel::State::not_installed) {                                               \
            WARN("SKIPPED: " << probe_.report);                                                                        \
            return;                                                                                                    \
        }                                                                                                              \
        INFO(probe_.report);                                                                                           \
        REQUIRE(probe_.state == qmp_test::QemuAccel::State::runs);                                                     \
    } while (0)

namespace qmp_test {

} // namespace qmp_test
