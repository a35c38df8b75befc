// The device map `vma extract -r MAP` reads (qmrestore writes it to a FIFO):
// one line per device, then "done" (or an empty line, or end of file):
//
//   [format=F:][throttling.bps=N:][throttling.group=G:][cache=C:]{0|1}:DEVNAME=PATH
//
// "1:" asks for zero blocks to be written (a target with old data), "0:"
// lets them be skipped (a target known to read as zeros).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace engine::vma {

struct MapEntry {
    std::string devname;
    std::string path;
    std::optional<std::string> format;
    std::uint64_t throttling_bps = 0;
    std::optional<std::string> throttling_group;
    std::optional<std::string> cache;
    bool write_zero = false;
};

// Parses one line (without its newline). Throws Error with Proxmox's
// "read map failed - ..." messages.
MapEntry parse_map_line(const std::string &line);

// Reads lines from the file at path until "done", an empty line or EOF.
// Throws Error("unable to open fifo X - ...") or a parse error.
std::map<std::string, MapEntry> read_restore_map(const std::string &path);

} // namespace engine::vma
