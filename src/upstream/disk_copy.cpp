#include "upstream/disk_copy.h"

#include "util/error.h"

namespace engine::upstream {

DiskCopy::DiskCopy(vma::Writer &writer, int output_fd, std::vector<DiskSource> sources,
                   std::uint64_t bytes_per_second)
    : writer_(writer), write_behind_(output_fd), sources_(std::move(sources)), limit_(bytes_per_second),
      limited_(bytes_per_second > 0)
{
    for (const DiskSource &source : sources_)
        if (vma::clusters_for(writer_.device_size(source.device)) !=
            (source.connection->size() + vma::kClusterSize - 1) / vma::kClusterSize)
            throw Error("export '" + source.connection->export_name() + "' has " +
                        std::to_string(source.connection->size()) + " bytes, the archive expects " +
                        std::to_string(writer_.device_size(source.device)));
}

DiskCopy::~DiskCopy() = default;

std::uint64_t DiskCopy::bytes_read() const
{
    return bytes_read_done_ + (stream_ ? stream_->bytes_read() : 0);
}

bool DiskCopy::run_until(RateLimit::Clock::time_point deadline, const std::function<bool()> &interrupted)
{
    while (current_ < sources_.size()) {
        if (RateLimit::Clock::now() >= deadline || (interrupted && interrupted()))
            return false;
        if (!limit_.wait(deadline, interrupted))
            return false;
        DiskSource &source = sources_[current_];
        if (!stream_) {
            nbd::ClusterStreamOptions options{.cluster_size = vma::kClusterSize};
            // under a limit, read ahead little so the rate holds from the start
            if (limited_) {
                options.batch_clusters = 16;
                options.window = 1;
            }
            stream_ = std::make_unique<nbd::ClusterStream>(*source.connection, options);
        }
        std::uint64_t before = stream_->bytes_read();
        std::optional<nbd::ClusterStream::Batch> batch = stream_->next();
        if (!batch) {
            bytes_read_done_ += stream_->bytes_read();
            stream_.reset();
            current_++;
            continue;
        }
        limit_.account(stream_->bytes_read() - before);
        for (std::size_t i = 0; i < batch->count; i++)
            writer_.write_cluster(source.device, static_cast<std::uint32_t>(batch->first + i),
                                  batch->zero[i] ? nullptr : batch->data + i * vma::kClusterSize);
        write_behind_.advance();
    }
    return true;
}

} // namespace engine::upstream
