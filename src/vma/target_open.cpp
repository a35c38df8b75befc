#include "vma/target_open.h"

#include "vma/image_format_probe.h"
#include "vma/qemu_restore_target.h"

namespace engine::vma {

std::unique_ptr<RestoreTarget> open_map_target(const std::string &path,
                                               const std::optional<std::string> &format,
                                               std::optional<CacheMode> cache, bool write_zeroes)
{
    std::optional<std::string> driver = format;
    if (!driver && (path.ends_with(".raw") || path.starts_with("/dev/")))
        driver = "raw";
    if (has_protocol_prefix(path))
        return open_qemu_target(path, driver, cache, write_zeroes);
    if (!driver) {
        // probed as raw (or unreadable: the direct open says why): direct
        std::optional<std::string> probed = probe_image_format(path);
        if (probed && *probed != "raw")
            return open_qemu_target(path, std::nullopt, cache, write_zeroes);
    } else if (*driver != "raw") {
        return open_qemu_target(path, driver, cache, write_zeroes);
    }
    return RestoreTarget::open_existing(path, cache.value_or(CacheMode::Writeback), write_zeroes);
}

} // namespace engine::vma
