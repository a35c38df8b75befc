// Restores (or only verifies) an archive's devices: feeds the checked
// clusters from a Reader into RestoreTargets and keeps the statistics and
// progress that `vma extract -v` / `vma verify -v` print.
#pragma once

#include "vma/reader.h"
#include "vma/restore_target.h"

#include <array>
#include <cstdint>
#include <functional>
#include <memory>

namespace engine::vma {

struct RestoreStats {
    std::uint64_t clusters = 0;           // clusters read
    std::uint64_t bytes = 0;              // device bytes those clusters cover
    std::uint64_t zero_bytes = 0;         // of those, bytes not stored (zero)
    std::uint64_t partial_zero_bytes = 0; // zero bytes inside clusters with data
};

class Restorer : public ClusterSink {
public:
    // Tolerated excess of a target over the device size (storage types
    // round sizes), as Proxmox's vma allows.
    static constexpr std::uint64_t kMaxTargetExcess = 4 << 20;

    explicit Restorer(const Reader &reader);
    ~Restorer() override;

    // Sends a disk device's data to target. The target must be at least the
    // device size and at most kMaxTargetExcess larger; throws Error
    // ("vma_reader_register_bs for stream X failed - unexpected size ...").
    // For the vmstate device, target is grown to the clusters received.
    // Devices without a target are checked but not written (verify).
    void set_target(const DeviceInfo &dev, std::unique_ptr<RestoreTarget> target);

    // Called whenever the whole-number percentage of device bytes read
    // changes (0 < percent <= 100), with the bytes read so far.
    using Progress = std::function<void(unsigned percent, std::uint64_t bytes)>;
    void set_progress(Progress progress) { progress_ = std::move(progress); }

    // Called after every extent with the bytes read so far, for a display
    // that moves more often than the percentage (out of total_bytes()).
    using Tick = std::function<void(std::uint64_t bytes)>;
    void set_tick(Tick tick) { tick_ = std::move(tick); }
    // The sum of all device sizes.
    std::uint64_t total_bytes() const { return total_bytes_; }

    // Reads every extent through reader, writes the targets, checks that no
    // cluster is missing, then flushes and closes every target. Throws
    // FormatError or Error on the first failure.
    void run(Reader &reader);

    const RestoreStats &stats() const { return stats_; }

    void cluster(const DeviceInfo &dev, std::uint32_t cluster, std::uint16_t mask,
                 const std::uint8_t *blocks) override;
    void extent_done() override;
    bool wants_data() const override { return has_targets_; }

private:
    std::array<std::unique_ptr<RestoreTarget>, kDeviceSlots> targets_;
    bool has_targets_ = false;
    std::uint64_t total_bytes_ = 0;
    std::uint64_t vmstate_clusters_ = 0;
    unsigned last_percent_ = 0;
    Progress progress_;
    Tick tick_;
    RestoreStats stats_;
};

} // namespace engine::vma
