// Reads a whole NBD export in order, in fixed-size clusters, for a consumer
// that stores clusters (the VMA writer): clusters the server's allocation map
// reports as reading zeros are flagged and never read, the rest is read ahead
// by a thread of the stream's own, with several requests in flight, so the
// server and the reads keep going while the consumer writes.
//
// Memory is bounded by window * batch_clusters * cluster_size bytes, whatever
// the export's size.
//
// Contract: the Connection must outlive the stream and is driven only by the
// stream's reader thread while the stream exists. Errors of the connection
// are thrown by next() (see connection.h); a stream is unusable after a
// throw. next() and the destructor are called from one consumer thread; the
// destructor stops the reader and waits for reads in flight.
#pragma once

#include "nbd/connection.h"

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace engine::nbd {

struct ClusterStreamOptions {
    std::size_t cluster_size = 64 * 1024;
    // clusters per batch (one batch is what next() returns)
    std::size_t batch_clusters = 64;
    // batches being read ahead while the consumer handles one
    unsigned window = 4;
};

class ClusterStream {
public:
    struct Batch {
        std::uint64_t first;       // index of the first cluster
        std::size_t count;         // clusters in this batch
        const std::uint8_t *data;  // count * cluster_size bytes; bytes past the export end are zero
        const bool *zero;          // zero[i]: cluster first+i reads as zeros (its data is not filled)
    };

    explicit ClusterStream(Connection &connection, ClusterStreamOptions options = {});
    ~ClusterStream();
    ClusterStream(const ClusterStream &) = delete;
    ClusterStream &operator=(const ClusterStream &) = delete;

    // The next batch in order, or nullopt after the last. The batch's memory
    // stays valid until the following call.
    std::optional<Batch> next();

    std::uint64_t cluster_count() const { return clusters_; }
    // Bytes requested from the server so far (zero clusters cost nothing).
    std::uint64_t bytes_read() const { return bytes_read_.load(); }

private:
    struct Slot;

    void read_ahead();
    void start_batch(Slot &slot, std::uint64_t first);
    void finish_batch(Slot &slot);
    // Whether cluster lies wholly in runs the server reports as zero.
    bool cluster_is_zero(std::uint64_t cluster);

    Connection &connection_;
    ClusterStreamOptions options_;
    std::uint64_t clusters_;
    std::vector<std::unique_ptr<Slot>> slots_;
    std::atomic<std::uint64_t> bytes_read_{0};
    // the allocation map ahead of the reader, as the server described it
    // (reader thread only)
    std::vector<Extent> extents_;
    std::size_t extent_index_ = 0;

    std::mutex mutex_;
    std::condition_variable changed_;
    std::deque<Slot *> free_;   // slots the reader may fill
    std::deque<Slot *> filled_; // read batches, in order
    Slot *handed_out_ = nullptr;
    bool stopping_ = false;
    bool finished_ = false;
    std::exception_ptr error_;
    std::thread reader_;
};

} // namespace engine::nbd
