// The simulator's command line (documented in main.cpp and README.md).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace pve_sim {

struct DriveSpec {
    std::string id;   // e.g. drive-scsi0
    std::string path; // image file, read as raw (qcow2: size only)
    std::string format;
};

enum class FaultKind { hang, drop, die, fail, without };

// A fault applies to every call of `command`, or only to its `occurrence`-th
// call (counting from 1) when occurrence > 0.
struct Fault {
    FaultKind kind;
    std::string command;
    int occurrence = 0;
    std::string desc; // for fail
};

struct Options {
    std::string qmp_socket;
    std::string qga_socket;
    std::string log_path;
    std::string pid_file;
    std::string status = "running";
    std::vector<DriveSpec> drives;
    std::map<std::string, std::string> support; // query-proxmox-support overrides
    std::vector<Fault> faults;
    std::vector<Fault> hmp_errors;   // HMP commands (by name) printing an error text
    std::string end_status;          // what query-backup reports for a completed job, if not "done"
    int64_t backup_delay_ms = 0;     // pause after every 4 MiB copied
    int64_t backup_error_at = -1;    // fail the job once this many bytes are copied
    int64_t pbs_dirty = -1;          // dirty bytes of an incremental PBS backup
    int fs_count = 1;                // what guest-fsfreeze-freeze/thaw return
    bool interleave = false;         // write devices interleaved, clusters out of order
    bool blockdev = false;           // the drives are -blockdev graphs (qemu-server 9)
};

// Throws std::runtime_error with a usage message on bad input.
Options parse_options(int argc, char **argv);

} // namespace pve_sim
