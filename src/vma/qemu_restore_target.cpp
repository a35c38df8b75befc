#include "vma/qemu_restore_target.h"

#include "nbd/qemu_nbd_export.h"
#include "nbd/write_queue.h"
#include "util/error.h"

#include <algorithm>

namespace engine::vma {

namespace {

const char *qemu_cache_name(CacheMode cache)
{
    switch (cache) {
    case CacheMode::Writeback:
        return "writeback";
    case CacheMode::Unsafe:
        return "unsafe";
    case CacheMode::Writethrough:
        return "writethrough";
    case CacheMode::None:
        return "none";
    case CacheMode::DirectSync:
        return "directsync";
    }
    return "writeback";
}

// For a server without write-zeroes: zeros are sent as data from here.
constexpr std::size_t kZeroChunk = 1 << 20;
const std::uint8_t zero_chunk[kZeroChunk] = {};

// a whole queued write (nbd::WriteQueue's slot) fits into the socket
constexpr int kSocketBuffer = 4 << 20;

class QemuTarget final : public RestoreTarget {
public:
    QemuTarget(std::unique_ptr<nbd::QemuNbdExport> server, std::unique_ptr<nbd::Connection> connection,
               const std::string &filename, bool flush, bool write_zeroes)
        : RestoreTarget(filename, connection->size(), write_zeroes), server_(std::move(server)),
          connection_(std::move(connection)), queue_(std::make_unique<nbd::WriteQueue>(*connection_)),
          flush_(flush)
    {
    }

protected:
    void store_data(const std::uint8_t *data, std::size_t len, std::uint64_t offset) override
    {
        checked("write to " + path() + " failed", [&] { queue_->write(data, len, offset); });
    }

    void store_zeros(std::uint64_t offset, std::size_t len) override
    {
        checked("write to " + path() + " failed", [&] {
            if (connection_->can_zero()) {
                queue_->write_zeroes(offset, len);
                return;
            }
            for (std::size_t done = 0; done < len;) {
                std::size_t n = std::min(kZeroChunk, len - done);
                queue_->write(zero_chunk, n, offset + done);
                done += n;
            }
        });
    }

    void close_durable() override
    {
        checked("write to " + path() + " failed", [&] { queue_->drain(); });
        queue_.reset();
        if (flush_)
            checked("vma flush of " + path() + " failed", [&] { connection_->flush(); });
        connection_.reset(); // the disconnect lets qemu-nbd close the image and exit
        server_->finish();
    }

private:
    // Runs an NBD request; when it fails because qemu-nbd is gone, says so
    // instead of libnbd's "connection reset".
    template <typename Request> void checked(const std::string &what, Request request)
    {
        try {
            request();
        } catch (const Error &e) {
            std::string reason = server_->failure_after_error();
            throw Error(what + " - " + (reason.empty() ? e.what() : reason));
        }
    }

    std::unique_ptr<nbd::QemuNbdExport> server_;
    std::unique_ptr<nbd::Connection> connection_;
    // writes overlap with the restore's reading; destroyed before the connection
    std::unique_ptr<nbd::WriteQueue> queue_;
    bool flush_;
};

} // namespace

std::unique_ptr<RestoreTarget> open_qemu_target(const std::string &filename,
                                                const std::optional<std::string> &format,
                                                std::optional<CacheMode> cache, bool write_zeroes)
{
    nbd::QemuNbdOptions options;
    options.filename = filename;
    options.format = format;
    if (cache) {
        options.cache = qemu_cache_name(*cache);
        options.native_aio = *cache == CacheMode::None || *cache == CacheMode::DirectSync;
    }
    try {
        auto server = std::make_unique<nbd::QemuNbdExport>(options);
        auto connection = server->connect();
        if (connection->read_only())
            throw Error("read-only image");
        connection->set_socket_buffers(kSocketBuffer);
        bool flush = !cache || *cache != CacheMode::Unsafe;
        return std::make_unique<QemuTarget>(std::move(server), std::move(connection), filename, flush,
                                            write_zeroes);
    } catch (const Error &e) {
        throw Error("can't open file " + filename + " - " + e.what());
    }
}

} // namespace engine::vma
