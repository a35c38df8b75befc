// Reads a disk image (regular file or block device) for the Writer: large
// sequential reads, and no reads at all of holes when the file system
// reports them through lseek(SEEK_DATA/SEEK_HOLE), so a thin image costs
// about what its data costs. The archive is the same either way: a hole
// reads as zeros, and a cluster wholly inside a hole is handed to the
// writer as a known-zero cluster.
#pragma once

#include "util/fd.h"
#include "vma/writer.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace engine::vma {

// What write_image reads a disk from: clusters in order, holes marked.
class ClusterReader {
public:
    virtual ~ClusterReader() = default;
    // The disk's name in messages.
    virtual const std::string &name() const = 0;
    // Reads count clusters starting at cluster first into buf (count *
    // kClusterSize bytes); bytes past the end of the disk read as zeros.
    // Sets hole[i] for every cluster that reads as zeros without being read
    // (its bytes in buf are then unspecified and must not be used). Throws
    // Error on a read error.
    virtual void read_clusters(std::uint64_t first, std::size_t count, std::uint8_t *buf, bool *hole) = 0;
};

// For read_clusters implementations: the bytes [seg_start, seg_end) of the
// batch starting at byte batch_start have been read into buf. Clears hole[]
// for the clusters they touch, filling zeros around them in a cluster
// touched for the first time (hole[] starts all true; later reads into the
// same cluster overwrite those zeros).
void mark_read(std::uint64_t batch_start, std::uint64_t seg_start, std::uint64_t seg_end, std::uint8_t *buf,
               bool *hole);

class ImageSource final : public ClusterReader {
public:
    // Opens path read-only. Throws Error("can't open image '...' - ...").
    explicit ImageSource(const std::string &path);
    // Takes an open fd (e.g. a drive image the simulator opened); name is
    // used in messages. hole_detection false forces plain reads.
    ImageSource(Fd fd, std::string name, bool hole_detection = true);

    // Image size in bytes (st_size, or the block device's size).
    std::uint64_t size() const { return size_; }
    const std::string &name() const override { return name_; }

    // A cluster wholly in a file system hole is a hole.
    void read_clusters(std::uint64_t first, std::size_t count, std::uint8_t *buf, bool *hole) override;

private:
    void init();
    // The first data range [start, end) ending after offset, or start ==
    // end == size_ when only holes remain. Cached across calls.
    std::pair<std::uint64_t, std::uint64_t> data_range_after(std::uint64_t offset);
    void read_range(std::uint64_t from, std::uint64_t to, std::uint8_t *out);

    Fd fd_;
    std::string name_;
    std::uint64_t size_ = 0;
    bool hole_detection_;
    // the data range found for the query offset range_query_
    std::uint64_t range_query_ = 0, data_start_ = 0, data_end_ = 0;
    bool range_valid_ = false;
};

// Streams a whole disk into the writer as device dev, cluster by cluster in
// order, with bounded memory: a reader thread (ImageReadAhead, 20 MiB of
// buffers) reads ahead while the calling thread drives the writer, which
// writes the data from those buffers without copying it
// (write_cluster_in_place). progress, if set, is called on the calling
// thread after every batch of clusters.
void write_image(Writer &writer, DeviceId dev, ClusterReader &source,
                 const std::function<void()> &progress = {});

} // namespace engine::vma
