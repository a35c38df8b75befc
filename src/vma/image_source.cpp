#include "vma/image_source.h"

#include "util/error.h"
#include "vma/image_read_ahead.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace engine::vma {

ImageSource::ImageSource(const std::string &path) : name_(path), hole_detection_(true)
{
    fd_ = Fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd_)
        throw_errno("can't open image '" + path + "'");
    init();
}

ImageSource::ImageSource(Fd fd, std::string name, bool hole_detection)
    : fd_(std::move(fd)), name_(std::move(name)), hole_detection_(hole_detection)
{
    init();
}

void ImageSource::init()
{
    struct stat st;
    if (fstat(fd_.get(), &st) < 0)
        throw_errno("can't stat image '" + name_ + "'");
    if (S_ISREG(st.st_mode)) {
        size_ = static_cast<std::uint64_t>(st.st_size);
    } else if (S_ISBLK(st.st_mode)) {
        off_t end = lseek(fd_.get(), 0, SEEK_END);
        if (end < 0)
            throw_errno("can't get size of image '" + name_ + "'");
        size_ = static_cast<std::uint64_t>(end);
        // a block device reports itself as all data; skip the syscalls
        hole_detection_ = false;
    } else {
        throw Error("image '" + name_ + "' is neither a regular file nor a block device");
    }
    posix_fadvise(fd_.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
}

std::pair<std::uint64_t, std::uint64_t> ImageSource::data_range_after(std::uint64_t offset)
{
    if (!hole_detection_)
        return {0, size_};
    // the cached range answers every offset from its query up to its end
    if (range_valid_ && offset >= range_query_ && offset < data_end_)
        return {data_start_, data_end_};
    if (offset >= size_)
        return {size_, size_};
    off_t start = lseek(fd_.get(), static_cast<off_t>(offset), SEEK_DATA);
    if (start < 0) {
        if (errno == ENXIO) { // only a hole from offset to the end
            data_start_ = data_end_ = size_;
            range_query_ = offset;
            range_valid_ = true;
            return {size_, size_};
        }
        // the file system cannot tell: read everything
        hole_detection_ = false;
        return {0, size_};
    }
    off_t end = lseek(fd_.get(), start, SEEK_HOLE);
    if (end < 0) {
        hole_detection_ = false;
        return {0, size_};
    }
    data_start_ = std::min<std::uint64_t>(static_cast<std::uint64_t>(start), size_);
    data_end_ = std::min<std::uint64_t>(static_cast<std::uint64_t>(end), size_);
    range_query_ = offset;
    range_valid_ = true;
    return {data_start_, data_end_};
}

void ImageSource::read_range(std::uint64_t from, std::uint64_t to, std::uint8_t *out)
{
    std::size_t want = static_cast<std::size_t>(to - from);
    std::size_t got = pread_full(fd_.get(), out, want, from, ("read error on '" + name_ + "'").c_str());
    // the image shrank under us: the missing part reads as zeros
    if (got < want)
        std::memset(out + got, 0, want - got);
}

void mark_read(std::uint64_t batch_start, std::uint64_t seg_start, std::uint64_t seg_end, std::uint8_t *buf,
               bool *hole)
{
    for (std::uint64_t c = (seg_start - batch_start) / kClusterSize; c <= (seg_end - 1 - batch_start) / kClusterSize;
         c++) {
        if (!hole[c])
            continue;
        hole[c] = false;
        std::uint64_t cluster_start = batch_start + c * kClusterSize;
        std::uint64_t cluster_end = cluster_start + kClusterSize;
        if (seg_start > cluster_start)
            std::memset(buf + c * kClusterSize, 0, static_cast<std::size_t>(seg_start - cluster_start));
        if (seg_end < cluster_end)
            std::memset(buf + (seg_end - batch_start), 0, static_cast<std::size_t>(cluster_end - seg_end));
    }
}

void ImageSource::read_clusters(std::uint64_t first, std::size_t count, std::uint8_t *buf, bool *hole)
{
    const std::uint64_t begin = first * kClusterSize;
    const std::uint64_t end = begin + count * kClusterSize;
    std::fill(hole, hole + count, true);
    std::uint64_t pos = begin;
    while (pos < end) {
        auto [data_start, data_end] = data_range_after(pos);
        std::uint64_t seg_start = std::max(pos, data_start);
        std::uint64_t seg_end = std::min(end, data_end);
        if (seg_start >= end || seg_start >= seg_end)
            break; // the rest of the batch is a hole or past the image end
        read_range(seg_start, seg_end, buf + (seg_start - begin));
        mark_read(begin, seg_start, seg_end, buf, hole);
        pos = seg_end;
    }
}

void write_image(Writer &writer, DeviceId dev, ClusterReader &source,
                 const std::function<void()> &progress)
{
    // The writer points into the clusters of its pending extent, at most the
    // last kWriterSlotsPerExtent written. After a whole batch they all lie
    // in it, and the read-ahead keeps it while the next batch is written.
    static_assert(ImageReadAhead::kBatchClusters >= kWriterSlotsPerExtent);
    ImageReadAhead ahead(source, clusters_for(writer.device_size(dev)));
    while (auto batch = ahead.next()) {
        for (std::size_t i = 0; i < batch->count; i++)
            writer.write_cluster_in_place(dev, static_cast<std::uint32_t>(batch->first + i),
                                          batch->hole[i] ? nullptr : batch->data + i * kClusterSize);
        // a short batch (the last) may leave the extent pointing into the
        // one before it too
        if (batch->count < kWriterSlotsPerExtent)
            writer.settle();
        if (progress)
            progress();
    }
    // the buffers go with the read-ahead
    writer.settle();
}

} // namespace engine::vma
