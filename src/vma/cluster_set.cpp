#include "vma/cluster_set.h"

#include <bit>

namespace engine::vma {

ClusterSet::ClusterSet(std::uint64_t count)
    : count_(count), chunks_((count + kChunkClusters - 1) / kChunkClusters)
{
}

bool ClusterSet::insert(std::uint64_t cluster)
{
    auto &chunk = chunks_[cluster >> kChunkBits];
    if (!chunk)
        chunk = std::make_unique<std::uint64_t[]>(kChunkWords); // zeroed
    std::uint64_t index = cluster & (kChunkClusters - 1);
    std::uint64_t &word = chunk[index / 64];
    std::uint64_t bit = std::uint64_t(1) << (index % 64);
    if (word & bit)
        return false;
    word |= bit;
    return true;
}

std::optional<std::uint64_t> ClusterSet::first_missing() const
{
    for (std::uint64_t c = 0; c < chunks_.size(); c++) {
        std::uint64_t base = c << kChunkBits;
        if (!chunks_[c])
            return base;
        for (std::uint64_t w = 0; w < kChunkWords; w++) {
            std::uint64_t first = base + w * 64;
            if (first >= count_)
                return std::nullopt;
            std::uint64_t word = chunks_[c][w];
            if (word == ~std::uint64_t(0))
                continue;
            std::uint64_t missing = first + std::countr_one(word);
            if (missing < count_)
                return missing;
            return std::nullopt;
        }
    }
    return std::nullopt;
}

} // namespace engine::vma
