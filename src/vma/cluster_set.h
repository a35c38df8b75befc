// Which clusters of one device have been seen: finds duplicates and gaps.
// Memory grows with the clusters actually seen (64 KiB of bits per 32 GiB
// region touched), not with the size a header claims.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

namespace engine::vma {

class ClusterSet {
public:
    // Tracks cluster numbers 0 .. count-1; count is at most 2^32.
    explicit ClusterSet(std::uint64_t count);

    // Marks the cluster as seen; false when it was seen before.
    // Precondition: cluster < count.
    bool insert(std::uint64_t cluster);

    // The lowest cluster not seen, if any.
    std::optional<std::uint64_t> first_missing() const;

    std::uint64_t count() const { return count_; }

private:
    static constexpr unsigned kChunkBits = 19;
    static constexpr std::uint64_t kChunkClusters = std::uint64_t(1) << kChunkBits;
    static constexpr std::uint64_t kChunkWords = kChunkClusters / 64;

    std::uint64_t count_;
    std::vector<std::unique_ptr<std::uint64_t[]>> chunks_;
};

} // namespace engine::vma
