// Reads a ClusterReader (a disk image) on a thread of its own, a few batches
// ahead of the thread that packs and writes the archive, so that reading the
// image overlaps checking it for zeros and writing the archive instead of
// alternating with them. Memory stays bounded: kDepth batches of kBatchClusters
// clusters (20 MiB), whatever the image size.
//
//     ImageReadAhead ahead(source, clusters);
//     while (auto batch = ahead.next())
//         ... batch->data, batch->hole, clusters batch->first ...
//
// Only the read-ahead thread touches the source between construction and
// destruction.
#pragma once

#include "vma/image_source.h"

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

namespace engine::vma {

class ImageReadAhead {
public:
    static constexpr std::size_t kBatchClusters = 64; // 4 MiB per read
    // the consumer holds two (see next()), the thread reads into the rest
    static constexpr std::size_t kDepth = 5;

    // What ClusterReader::read_clusters delivered for clusters [first, first +
    // count).
    struct Batch {
        std::uint64_t first;
        std::size_t count;
        const std::uint8_t *data;
        const bool *hole;
    };

    // Starts reading clusters [0, clusters) of source. Throws Error if the
    // buffers cannot be allocated or the thread cannot start.
    ImageReadAhead(ClusterReader &source, std::uint64_t clusters);
    // Stops the thread (after the read it may be in) and joins it.
    ~ImageReadAhead();
    ImageReadAhead(const ImageReadAhead &) = delete;
    ImageReadAhead &operator=(const ImageReadAhead &) = delete;

    // The next batch in cluster order (waiting for it), or nullopt after the
    // last one. A batch stays valid until the second call after the one that
    // returned it, so the consumer may still refer to the previous batch
    // (the Writer's pending extent does); the one before goes back to the
    // thread. Rethrows the read error that stopped the thread once the
    // batches read before it have been consumed.
    std::optional<Batch> next();

private:
    struct Slot {
        std::unique_ptr<std::uint8_t, void (*)(void *)> data{nullptr, nullptr};
        bool hole[kBatchClusters];
        std::uint64_t first = 0;
        std::size_t count = 0;
    };

    void run() noexcept;

    ClusterReader &source_;
    const std::uint64_t clusters_;
    Slot slots_[kDepth];

    std::mutex mutex_;
    std::condition_variable filled_, freed_;
    // batches read, batches handed to the consumer, batches given back
    std::uint64_t produced_ = 0, consumed_ = 0, released_ = 0;
    bool stop_ = false, done_ = false;
    std::exception_ptr error_;
    std::thread thread_; // last: starts after everything it uses exists
};

} // namespace engine::vma
