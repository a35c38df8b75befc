// What a backup killed without a chance to restore (SIGKILL, a crash) left
// in QEMU: its NBD exports and server, devices still on their
// copy-before-write filters, the snapshot-access, filter and fleecing nodes
// (names: node_names.h) and its temp fleecing images. The next backup would
// fail on them ("Duplicate nodes with node-name='fleece-scsi0'"), so it
// removes them first.
//
// Contract: looks at every drive of the VM, not only the ones backed up now.
// Logs one line naming what it removes, nothing when there is nothing. The
// NBD server is stopped only when an export or snapshot-access node of ours
// shows that it was ours. A temp fleecing image (<dir>/fleece-<id>.raw) is
// deleted once QEMU let go of it; images on a fleecing storage are the
// plugin's. Throws qmp::CommandFailed when QEMU refuses a step.
#pragma once

#include "qmp/monitor.h"

#include <functional>
#include <string>

namespace engine::upstream {

void remove_leftovers(const qmp::Peer &peer, const std::function<void(const std::string &)> &log);

} // namespace engine::upstream
