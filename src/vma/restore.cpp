#include "vma/restore.h"

#include "util/error.h"

#include <algorithm>

namespace engine::vma {

Restorer::Restorer(const Reader &reader)
{
    for (const auto &dev : reader.devices())
        total_bytes_ += dev.size;
}

Restorer::~Restorer() = default;

void Restorer::set_target(const DeviceInfo &dev, std::unique_ptr<RestoreTarget> target)
{
    if (!dev.vmstate &&
        (target->size() < dev.size || target->size() - dev.size > kMaxTargetExcess))
        throw Error("vma_reader_register_bs for stream " + dev.name +
                    " failed - unexpected size " + std::to_string(target->size()) +
                    " != " + std::to_string(dev.size));
    targets_[dev.id] = std::move(target);
    has_targets_ = true;
}

void Restorer::cluster(const DeviceInfo &dev, std::uint32_t cluster, std::uint16_t mask,
                       const std::uint8_t *blocks)
{
    RestoreTarget *target = targets_[dev.id].get();
    const std::uint64_t start = std::uint64_t(cluster) * kClusterSize;
    // a vmstate cluster is whole; a disk's last cluster stops at its end
    const std::uint64_t limit = dev.vmstate ? start + kClusterSize : dev.size;
    std::uint64_t offset = start;
    for (unsigned j = 0; j < kBlocksPerCluster && offset < limit; j++, offset += kBlockSize) {
        std::size_t len = static_cast<std::size_t>(std::min<std::uint64_t>(kBlockSize, limit - offset));
        if (mask & (1u << j)) {
            if (target)
                target->write(offset, blocks, len);
            if (blocks)
                blocks += kBlockSize;
        } else {
            stats_.zero_bytes += len;
            if (mask)
                stats_.partial_zero_bytes += len;
            if (target)
                target->write_zero(offset, len);
        }
    }
    stats_.clusters++;
    stats_.bytes += std::min<std::uint64_t>(kClusterSize, limit - start);
    if (dev.vmstate)
        vmstate_clusters_ = std::uint64_t(cluster) + 1;

    if (progress_ && total_bytes_) {
        unsigned percent =
            static_cast<unsigned>(std::min<std::uint64_t>(100, stats_.bytes * 100 / total_bytes_));
        if (percent != last_percent_) {
            last_percent_ = percent;
            progress_(percent, stats_.bytes);
        }
    }
}

void Restorer::extent_done()
{
    for (auto &target : targets_)
        if (target)
            target->flush_pending();
    if (tick_)
        tick_(stats_.bytes);
}

void Restorer::run(Reader &reader)
{
    reader.read_extents(*this);
    for (const auto &dev : reader.devices()) {
        auto &target = targets_[dev.id];
        if (!target)
            continue;
        if (dev.vmstate)
            target->grow_to(vmstate_clusters_ * kClusterSize);
        target->finish();
    }
}

} // namespace engine::vma
