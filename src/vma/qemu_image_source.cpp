#include "vma/qemu_image_source.h"

#include "nbd/cluster_stream.h"
#include "util/error.h"

namespace engine::vma {

QemuImageSource::QemuImageSource(const std::string &filename, const std::optional<std::string> &format)
{
    nbd::QemuNbdOptions options;
    options.filename = filename;
    options.format = format;
    options.read_only = true;
    server_ = std::make_unique<nbd::QemuNbdExport>(options);
    connection_ = server_->connect();
}

QemuImageSource::~QemuImageSource() = default;

void QemuImageSource::write_to(Writer &writer, DeviceId dev, const std::function<void()> &progress)
{
    try {
        nbd::ClusterStream stream(*connection_, nbd::ClusterStreamOptions{.cluster_size = kClusterSize});
        while (auto batch = stream.next()) {
            for (std::size_t i = 0; i < batch->count; i++)
                writer.write_cluster(dev, static_cast<std::uint32_t>(batch->first + i),
                                     batch->zero[i] ? nullptr : batch->data + i * kClusterSize);
            if (progress)
                progress();
        }
        bytes_read_ += stream.bytes_read();
    } catch (const Error &e) {
        std::string reason = server_->failure_after_error();
        throw Error("read error on '" + server_->filename() + "' - " + (reason.empty() ? e.what() : reason));
    }
}

void QemuImageSource::finish()
{
    connection_.reset();
    server_->finish();
}

} // namespace engine::vma
