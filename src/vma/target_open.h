// Opens the target of one `vma extract -r` map line the way Proxmox's vma
// does, choosing the path: a raw file or block device is written directly
// (RestoreTarget::open_existing, with its cache modes and zeroing); any
// other format, and every protocol filename, goes through QEMU
// (open_qemu_target). Without format=, a path ending in ".raw" or under
// "/dev/" is raw, anything else is probed.
#pragma once

#include "vma/restore_target.h"

#include <memory>
#include <optional>
#include <string>

namespace engine::vma {

// cache nullopt is the default (writeback). Throws Error("can't open file
// PATH - ...").
std::unique_ptr<RestoreTarget> open_map_target(const std::string &path,
                                               const std::optional<std::string> &format,
                                               std::optional<CacheMode> cache, bool write_zeroes);

} // namespace engine::vma
