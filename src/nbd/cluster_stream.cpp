#include "nbd/cluster_stream.h"

#include "util/error.h"

#include <algorithm>
#include <cstring>

namespace engine::nbd {

namespace {

// how far ahead one block status request looks
constexpr std::uint64_t kStatusLookahead = 1ull << 30;
// nbdcopy's request size: more, smaller requests in flight keep the server's
// parallel reads busier (against qemu-nbd on O_DIRECT, 1 GiB took 0.7-0.8 s
// in 256 KiB requests and 1.0-1.1 s in 1 MiB ones; the same window)
constexpr std::size_t kRequestSize = 256u << 10;

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
    // one slot more than the window: the consumer holds one while the
    // reader keeps `window` batches in flight
    for (unsigned i = 0; i <= options_.window; i++) {
        auto slot = std::make_unique<Slot>();
        slot->data.reset(new std::uint8_t[options_.batch_clusters * options_.cluster_size]);
        slot->zero.reset(new bool[options_.batch_clusters]);
        free_.push_back(slot.get());
        slots_.push_back(std::move(slot));
    }
    reader_ = std::thread([this] { read_ahead(); });
}

ClusterStream::~ClusterStream()
{
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    changed_.notify_all();
    reader_.join();
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
    const std::size_t request = std::min(kRequestSize, connection_.max_request());
    slot.first = first;
    slot.count = static_cast<std::size_t>(std::min<std::uint64_t>(options_.batch_clusters, clusters_ - first));
    slot.cookies.clear();
    for (std::size_t i = 0; i < slot.count; i++)
        slot.zero[i] = cluster_is_zero(first + i);

    // requests over each run of data clusters
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
            std::size_t chunk = static_cast<std::size_t>(std::min<std::uint64_t>(to - pos, request));
            slot.cookies.push_back(connection_.start_read(out + (pos - from), chunk, pos));
            bytes_read_ += chunk;
            pos += chunk;
        }
        i = run_end;
    }
}

void ClusterStream::finish_batch(Slot &slot)
{
    // every read must have landed before the slot is reused or freed, also
    // after one of them failed (a dead connection retires the rest at once)
    std::exception_ptr failure;
    for (std::uint64_t cookie : slot.cookies) {
        try {
            connection_.finish_read(cookie);
        } catch (const Error &) {
            if (!failure)
                failure = std::current_exception();
        }
    }
    slot.cookies.clear();
    if (failure)
        std::rethrow_exception(failure);
}

void ClusterStream::read_ahead()
{
    std::deque<Slot *> in_flight;
    std::uint64_t next_first = 0;
    try {
        for (;;) {
            // take free slots: wait for one only when nothing is in flight
            for (;;) {
                Slot *slot = nullptr;
                {
                    std::unique_lock lock(mutex_);
                    if (in_flight.empty())
                        changed_.wait(lock, [&] { return stopping_ || !free_.empty(); });
                    if (stopping_)
                        throw Error("NBD cluster stream stopped");
                    if (next_first >= clusters_ || free_.empty())
                        break;
                    slot = free_.front();
                    free_.pop_front();
                }
                // in flight before its first read: a failure part way
                // through must still wait for the reads it started
                in_flight.push_back(slot);
                start_batch(*slot, next_first);
                next_first += slot->count;
            }
            if (in_flight.empty())
                break;
            Slot *done = in_flight.front();
            in_flight.pop_front();
            finish_batch(*done);
            {
                std::lock_guard lock(mutex_);
                filled_.push_back(done);
            }
            changed_.notify_all();
        }
        std::lock_guard lock(mutex_);
        finished_ = true;
    } catch (...) {
        // reads still in flight write into the slots: let them land first
        for (Slot *slot : in_flight) {
            try {
                finish_batch(*slot);
            } catch (const Error &) {
            }
        }
        std::lock_guard lock(mutex_);
        if (!stopping_)
            error_ = std::current_exception();
        finished_ = true;
    }
    changed_.notify_all();
}

std::optional<ClusterStream::Batch> ClusterStream::next()
{
    std::unique_lock lock(mutex_);
    if (handed_out_) {
        free_.push_back(handed_out_);
        handed_out_ = nullptr;
        changed_.notify_all();
    }
    changed_.wait(lock, [&] { return !filled_.empty() || finished_; });
    if (filled_.empty()) {
        if (error_)
            std::rethrow_exception(error_);
        return std::nullopt;
    }
    handed_out_ = filled_.front();
    filled_.pop_front();
    return Batch{handed_out_->first, handed_out_->count, handed_out_->data.get(), handed_out_->zero.get()};
}

} // namespace engine::nbd
