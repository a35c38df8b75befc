// The devices `vma extract -d DRIVE-LIST` restores: a comma-separated list of
// archive device names (the option may be repeated; the lists add up).
// Without -d every device is restored.
#pragma once

#include "vma/reader.h"

#include <set>
#include <string>

namespace vma_cli {

class DriveList {
public:
    // Adds the names of one -d argument; throws engine::Error on an empty
    // name ("a,,b", a trailing comma).
    void add(const std::string &comma_list);

    // Throws engine::Error naming the first listed device the archive does
    // not hold (Proxmox's vma silently restores nothing then).
    void check_known(const engine::vma::Reader &reader) const;

    // True when no -d was given or dev is listed.
    bool selects(const engine::vma::DeviceInfo &dev) const;

private:
    bool given_ = false;
    std::set<std::string> names_;
};

} // namespace vma_cli
