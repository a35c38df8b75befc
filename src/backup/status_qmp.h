// The status loop wired to a VM's QEMU: query-backup and
// query-pbs-bitmap-info over QMP (one connection per poll, none held across
// the sleep), and a sleep that gives way to signals.
#pragma once

#include "backup/status_loop.h"
#include "qmp/monitor.h"
#include "util/json.h"

#include <functional>
#include <string>
#include <vector>

namespace engine::backup {

// A query-backup reply as the loop reads it (absent members are 0 / empty).
BackupStatus parse_backup_status(const Json &reply);

// A query-pbs-bitmap-info reply.
std::vector<BitmapInfo> parse_bitmap_info(const Json &reply);

struct QmpStatusLoopHooks {
    // runs before every QMP command; throws to refuse it (PVE's
    // "VM <vmid> not running" check)
    std::function<void()> before_command;
    std::function<void(const std::string &)> log;
    // true once a signal is pending: the loop then throws Interrupted
    std::function<bool()> interrupted;
};

// run_status_loop() against `peer` with the real clock. QMP failures throw
// engine::qmp::CommandFailed ("VM <vmid> qmp command 'query-backup' failed -
// ..."), with PVE's default timeouts.
StatusLoopResult run_status_loop_over_qmp(const qmp::Peer &peer, const StatusLoopOptions &options,
                                          const QmpStatusLoopHooks &hooks);

} // namespace engine::backup
