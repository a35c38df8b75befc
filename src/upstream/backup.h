// A VMA backup of a VM on stock QEMU (no Proxmox patches): the engine takes
// a point-in-time snapshot of the disks (snapshot.h), reads it over NBD and
// writes the archive itself, reporting progress with the status loop's lines
// exactly as a Proxmox QEMU backup job would.
//
// Order of events, as the original plugin orders its backup command:
//   prepare the snapshot nodes; hooks.freeze(); switch all disks at one
//   instant; hooks.thaw() (if frozen, also when the switch failed); export
//   over NBD; hooks.started(<archive uuid>); copy with progress lines; the
//   summary lines; restore the block graph.
//
// Contract: blocks until the archive is complete (the output fd is not
// closed) or fails; every QEMU-side object and temp file is gone when it
// returns or throws (a failed restore on the success path throws). Throws
// engine::Error / engine::qmp::Error with a user-facing text, the hooks'
// own errors unchanged, or backup::Interrupted when interrupted() turned
// true (the copy stops within a fraction of a second).
#pragma once

#include "backup/status_loop.h"
#include "qmp/monitor.h"
#include "upstream/snapshot.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace engine::upstream {

struct BackupOptions {
    qmp::Peer peer;
    // the disks in archive order; their drive ids become the VMA device names
    std::vector<DiskRequest> disks;
    // temp fleecing images and the NBD socket (vzdump's task tmpdir)
    std::string work_dir;
    // files stored as VMA config blobs under their basenames
    std::vector<std::string> config_files;
    int output_fd = -1;
    // data bytes read per second, 0 for no limit (vzdump's bwlimit * 1024)
    std::uint64_t bytes_per_second = 0;
};

struct BackupHooks {
    std::function<void(const std::string &)> log;
    // returns whether the guest's file systems were frozen
    std::function<bool()> freeze;
    std::function<void()> thaw;
    // the snapshot is taken and exported; the copy begins (the plugin logs
    // "started backup task" and resumes a VM it started paused)
    std::function<void(const std::string &uuid)> started;
    std::function<bool()> interrupted;
};

struct BackupResult {
    std::uint64_t total = 0;       // bytes of all disks
    std::uint64_t zero_bytes = 0;  // of those, zero (stored without data)
    std::uint64_t bytes_read = 0;  // read over NBD (zero runs are not read)
};

BackupResult run_backup(const BackupOptions &options, const BackupHooks &hooks);

} // namespace engine::upstream
