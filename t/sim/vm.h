// The simulated VM's QMP-visible state: run status, drives (block backends)
// and the fds the monitor holds by name. Touched only by the main thread.
#pragma once

#include "options.h"
#include "util/fd.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace pve_sim {

// A block node; with an id or a qdev it is also a BlockBackend that
// query-block lists. The nodes of a -drive or drive_add carry a BlockBackend
// name; with -blockdev (qemu-server 9) a VM disk is a throttle node named
// drive-<key> attached to its device, over a format node over a file node.
struct Drive {
    std::string id;         // BlockBackend name, e.g. drive-scsi0; empty for a plain node
    std::string qdev;       // the device using it (scsi0), empty for HMP-added drives
    std::string node_name;  // "#blockNNN", or the name blockdev-add gave
    std::string driver;     // throttle, raw, qcow2 or file
    std::string file_child; // node name of its 'file' child, empty for a file node
    bool monitor_owned = false; // a blockdev-add root, which blockdev-del may remove
    std::string path;
    std::string format; // raw or qcow2: how the backup reads path
    uint64_t size = 0;  // virtual size
    bool read_only = false;
};

struct Vm {
    std::string status; // prelaunch, running, paused
    std::vector<Drive> drives;
    std::map<std::string, engine::Fd> named_fds; // getfd
    int next_node = 101;

    const Drive *find_drive(const std::string &id) const;
    const Drive *find_node(const std::string &node_name) const;
    // pve-qemu 10's device lookup for backups: a BlockBackend by name, else
    // a node by name, and below a throttle node its file child.
    const Drive *find_device(const std::string &name) const;
    // Opens the image to learn its virtual size; throws QmpError
    // "Could not open '<path>': <strerror>".
    Drive make_drive(const std::string &id, const std::string &path, const std::string &format, bool read_only);
};

} // namespace pve_sim
