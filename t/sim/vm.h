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

struct Drive {
    std::string id;        // BlockBackend name, e.g. drive-scsi0
    std::string qdev;      // device id (scsi0), empty for HMP-added drives
    std::string node_name; // "#blockNNN"
    std::string path;
    std::string format;    // raw or qcow2
    uint64_t size = 0;     // virtual size
    bool read_only = false;
};

struct Vm {
    std::string status; // prelaunch, running, paused
    std::vector<Drive> drives;
    std::map<std::string, engine::Fd> named_fds; // getfd
    int next_node = 101;

    const Drive *find_drive(const std::string &id) const;
    const Drive *find_node(const std::string &node_name) const;
    // Opens the image to learn its virtual size; throws QmpError
    // "Could not open '<path>': <strerror>".
    Drive make_drive(const std::string &id, const std::string &path, const std::string &format, bool read_only);
};

} // namespace pve_sim
