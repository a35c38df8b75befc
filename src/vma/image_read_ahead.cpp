#include "vma/image_read_ahead.h"

#include "util/error.h"

#include <algorithm>
#include <cstdlib>
#include <system_error>

namespace engine::vma {

namespace {

// page-aligned, so the kernel copies into whole pages
constexpr std::size_t kBufferAlignment = 4096;

} // namespace

ImageReadAhead::ImageReadAhead(ClusterReader &source, std::uint64_t clusters)
    : source_(source), clusters_(clusters)
{
    for (Slot &slot : slots_) {
        slot.data = {static_cast<std::uint8_t *>(
                         std::aligned_alloc(kBufferAlignment, kBatchClusters * kClusterSize)),
                     std::free};
        if (!slot.data)
            throw Error("out of memory for the image read buffers of '" + source.name() + "'");
    }
    try {
        thread_ = std::thread(&ImageReadAhead::run, this);
    } catch (const std::system_error &e) {
        throw Error("can't start the reader thread for '" + source.name() + "' - " + e.what());
    }
}

ImageReadAhead::~ImageReadAhead()
{
    {
        std::lock_guard lock(mutex_);
        stop_ = true;
    }
    freed_.notify_one();
    thread_.join();
}

void ImageReadAhead::run() noexcept
{
    try {
        for (std::uint64_t first = 0, n = 0; first < clusters_; first += kBatchClusters, n++) {
            {
                std::unique_lock lock(mutex_);
                freed_.wait(lock, [&] { return stop_ || produced_ - released_ < kDepth; });
                if (stop_)
                    return;
            }
            // the slot is ours until produced_ passes it: no lock while reading
            Slot &slot = slots_[n % kDepth];
            slot.first = first;
            slot.count = static_cast<std::size_t>(std::min<std::uint64_t>(kBatchClusters, clusters_ - first));
            source_.read_clusters(first, slot.count, slot.data.get(), slot.hole);
            {
                std::lock_guard lock(mutex_);
                produced_++;
            }
            filled_.notify_one();
        }
    } catch (...) {
        std::lock_guard lock(mutex_);
        error_ = std::current_exception();
    }
    {
        std::lock_guard lock(mutex_);
        done_ = true;
    }
    filled_.notify_one();
}

std::optional<ImageReadAhead::Batch> ImageReadAhead::next()
{
    std::unique_lock lock(mutex_);
    if (released_ + 1 < consumed_) {
        released_ = consumed_ - 1;
        freed_.notify_one();
    }
    filled_.wait(lock, [&] { return consumed_ < produced_ || done_; });
    if (consumed_ == produced_) {
        if (error_)
            std::rethrow_exception(error_);
        return std::nullopt;
    }
    const Slot &slot = slots_[consumed_++ % kDepth];
    return Batch{slot.first, slot.count, slot.data.get(), slot.hole};
}

} // namespace engine::vma
