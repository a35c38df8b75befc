#include "nbd/cluster_stream.h"

#include "util/error.h"

#include <algorithm>
#include <cstring>

namespace engine::nbd {

namespace {

// how far ahead one block status request looks
constexpr std::uint64_t kStatusLookahead = 1ull << 30;

} // namespace

struct ClusterStream::Slot {
    std::uint64_t first = 0;
    std::size_t count = 0;
    std::unique_ptr<std::uint8_t[]> data;
    std::unique_ptr<bool[]> zero;
    std::vector<std::uint64_t> cookies;
};

ClusterStream::ClusterStream(Connection &connection, ClusterStreamOptions options)
    : connection_(connection), options_(options)
{
    if (options_.cluster_size == 0 || options_.batch_clusters == 0 || options_.window == 0)
        throw Error("NBD cluster stream: cluster size, batch and window must be positive");
    clusters_ = (connection_.size() + options_.cluster_size - 1) / options_.cluster_size;
    for (unsigned i = 0; i < options_.window; i++) {
        auto slot = std::make_unique<Slot>();
        slot->data.reset(new std::uint8_t[options_.batch_clusters * options_.cluster_size]);
        slot->zero.reset(new bool[options_.batch_clusters]);
        slots_.push_back(std::move(slot));
    }
}

// Reads still in flight write into the slots' buffers: wait for them before
// the buffers go (a failed read is of no interest any more).
ClusterStream::~ClusterStream()
{
    for (auto &slot : slots_)
        for (std::uint64_t cookie : slot->cookies) {
            try {
                connection_.finish_read(cookie);
            } catch (const Error &) {
            }
        }
}

bool ClusterStream::cluster_is_zero(std::uint64_t cluster)
{
    const std::uint64_t start = cluster * options_.cluster_size;
    const std::uint64_t end = std::min(start + options_.cluster_size, connection_.size());
    std::uint64_t pos = start;
    while (pos < end) {
        // drop extents wholly behind pos (reads only move forward)
        while (extent_index_ < extents_.size() &&
               extents_[extent_index_].offset + extents_[extent_index_].length <= pos)
            extent_index_++;
        if (extent_index_ == extents_.size()) {
            extents_ = connection_.block_status(pos, kStatusLookahead);
            extent_index_ = 0;
        }
        const Extent &extent = extents_[extent_index_];
        if (!extent.zero)
            return false;
        pos = extent.offset + extent.length;
    }
    return true;
}

void ClusterStream::start_batch(Slot &slot, std::uint64_t first)
{
    const std::size_t cs = options_.cluster_size;
    const std::uint64_t size = connection_.size();
    slot.first = first;
    slot.count = static_cast<std::size_t>(std::min<std::uint64_t>(options_.batch_clusters, clusters_ - first));
    slot.cookies.clear();
    for (std::size_t i = 0; i < slot.count; i++)
        slot.zero[i] = cluster_is_zero(first + i);

    // one request per run of data clusters, split at the server's maximum
    for (std::size_t i = 0; i < slot.count;) {
        if (slot.zero[i]) {
            i++;
            continue;
        }
        std::size_t run_end = i;
        while (run_end < slot.count && !slot.zero[run_end])
            run_end++;
        std::uint64_t from = (first + i) * cs;
        std::uint64_t to = std::min<std::uint64_t>((first + run_end) * cs, size);
        std::uint8_t *out = slot.data.get() + i * cs;
        // the tail of the export's last cluster is not the server's to fill
        if (to < (first + run_end) * cs)
            std::memset(out + (to - from), 0, static_cast<std::size_t>((first + run_end) * cs - to));
        for (std::uint64_t pos = from; pos < to;) {
            std::size_t chunk = static_cast<std::size_t>(std::min<std::uint64_t>(to - pos, connection_.max_request()));
            slot.cookies.push_back(connection_.start_read(out + (pos - from), chunk, pos));
            bytes_read_ += chunk;
            pos += chunk;
        }
        i = run_end;
    }
}

std::optional<ClusterStream::Batch> ClusterStream::next()
{
    // the slot handed out last time is free again: refill the window
    while (in_flight_ < slots_.size() && next_to_start_ < clusters_) {
        Slot &slot = *slots_[(oldest_ + in_flight_) % slots_.size()];
        start_batch(slot, next_to_start_);
        next_to_start_ += slot.count;
        in_flight_++;
    }
    if (in_flight_ == 0)
        return std::nullopt;

    Slot &slot = *slots_[oldest_];
    while (!slot.cookies.empty()) {
        connection_.finish_read(slot.cookies.front());
        slot.cookies.erase(slot.cookies.begin());
    }
    oldest_ = (oldest_ + 1) % slots_.size();
    in_flight_--;
    return Batch{slot.first, slot.count, slot.data.get(), slot.zero.get()};
}

} // namespace engine::nbd
