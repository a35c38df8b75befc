// Copies disks exported over NBD into a VMA archive, one disk after the
// other, cluster by cluster: clusters the export reports as zeros are
// recorded as zero without being read, the rest is read with requests in
// flight and handed to the writer, whose output file's page cache is kept
// small (write_behind.h). Work is done in slices so the caller can poll
// progress (the writer's counters) and signals between them.
#pragma once

#include "nbd/cluster_stream.h"
#include "nbd/connection.h"
#include "upstream/rate_limit.h"
#include "upstream/write_behind.h"
#include "vma/writer.h"

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

namespace engine::upstream {

struct DiskSource {
    vma::DeviceId device;
    // an open connection to the disk's export; its size must match the
    // device's size in the writer
    std::unique_ptr<nbd::Connection> connection;
};

class DiskCopy {
public:
    // The writer and the connections must outlive the copy; output_fd is the
    // writer's fd. bytes_per_second (0: unlimited) limits the data read.
    DiskCopy(vma::Writer &writer, int output_fd, std::vector<DiskSource> sources, std::uint64_t bytes_per_second);
    ~DiskCopy();

    // Copies until `deadline`, the end (then returns true; the writer is not
    // finished here), or interrupted() turning true. Throws the errors of
    // the reads (engine::Error "NBD read on export ...") and of the writer.
    bool run_until(RateLimit::Clock::time_point deadline, const std::function<bool()> &interrupted);

    // Bytes read from the exports so far.
    std::uint64_t bytes_read() const;

private:
    vma::Writer &writer_;
    WriteBehind write_behind_;
    std::vector<DiskSource> sources_;
    std::size_t current_ = 0;
    std::unique_ptr<nbd::ClusterStream> stream_;
    std::uint64_t bytes_read_done_ = 0; // by finished disks
    RateLimit limit_;
    bool limited_;
};

} // namespace engine::upstream
