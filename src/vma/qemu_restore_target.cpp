#include "vma/qemu_restore_target.h"

#include "nbd/qemu_nbd_export.h"
#include "nbd/write_queue.h"
#include "util/error.h"
#include "util/fd.h"
#include "vma/early_writeback.h"
#include "vma/image_format_probe.h"
#include "vma/image_host_map.h"

#include <algorithm>
#include <fcntl.h>

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

// The image file qemu-nbd writes through the page cache, opened read-only
// for starting its writeback early; none for a protocol filename or a cache
// mode that bypasses or never flushes the page cache.
Fd page_cached_image(const nbd::QemuNbdOptions &options)
{
    if (has_protocol_prefix(options.filename) || (options.cache && *options.cache != "writeback"))
        return Fd();
    return Fd(open(options.filename.c_str(), O_RDONLY | O_CLOEXEC));
}

// qemu-nbd serving filename for writing, connected.
struct QemuWriter {
    std::unique_ptr<nbd::QemuNbdExport> server;
    std::unique_ptr<nbd::Connection> connection;
};

QemuWriter start_qemu_writer(const nbd::QemuNbdOptions &options)
{
    try {
        QemuWriter writer;
        writer.server = std::make_unique<nbd::QemuNbdExport>(options);
        writer.connection = writer.server->connect();
        if (writer.connection->read_only())
            throw Error("read-only image");
        writer.connection->set_socket_buffers(kSocketBuffer);
        return writer;
    } catch (const Error &e) {
        throw Error("can't open file " + options.filename + " - " + e.what());
    }
}

// The writes go to QEMU, except, given a host map, those to clusters allocated
// in the image file, which go straight into the file; qemu-nbd is then
// started only for the first write it has to take.
class QemuTarget final : public RestoreTarget {
public:
    QemuTarget(nbd::QemuNbdOptions options, QemuWriter qemu, std::uint64_t size, bool flush, bool write_zeroes)
        : RestoreTarget(options.filename, size, write_zeroes), options_(std::move(options)),
          image_(page_cached_image(options_)), writeback_(image_.get()), flush_(flush)
    {
        adopt(std::move(qemu));
    }
    QemuTarget(nbd::QemuNbdOptions options, ImageHostMap map, std::unique_ptr<RestoreTarget> file, bool flush,
               bool write_zeroes)
        : RestoreTarget(options.filename, map.virtual_size(), write_zeroes), options_(std::move(options)),
          map_(std::move(map)), file_(std::move(file)), image_(page_cached_image(options_)),
          writeback_(image_.get()), flush_(flush)
    {
    }

protected:
    void store_data(const std::uint8_t *data, std::size_t len, std::uint64_t offset) override
    {
        split(offset, len, [&](std::uint64_t at, std::size_t n, const ImageHostMap::Run *in_file) {
            const std::uint8_t *piece = data + (at - offset);
            if (in_file) {
                file_->write(in_file->host + (at - in_file->start), piece, n);
                return;
            }
            checked("write to " + path() + " failed", [&] { queue().write(piece, n, at); });
            writeback_.wrote(n);
        });
    }

    void store_zeros(std::uint64_t offset, std::size_t len) override
    {
        split(offset, len, [&](std::uint64_t at, std::size_t n, const ImageHostMap::Run *in_file) {
            if (in_file)
                file_->write_zero(in_file->host + (at - in_file->start), n);
            else
                checked("write to " + path() + " failed", [&] { qemu_zeros(at, n); });
        });
    }

    void close_durable() override
    {
        if (file_)
            file_->finish();
        if (!connection_)
            return;
        checked("write to " + path() + " failed", [&] { queue_->drain(); });
        queue_.reset();
        if (flush_)
            checked("vma flush of " + path() + " failed", [&] { connection_->flush(); });
        connection_.reset(); // the disconnect lets qemu-nbd close the image and exit
        server_->finish();
    }

private:
    void adopt(QemuWriter qemu)
    {
        server_ = std::move(qemu.server);
        connection_ = std::move(qemu.connection);
        queue_ = std::make_unique<nbd::WriteQueue>(*connection_);
    }

    nbd::WriteQueue &queue()
    {
        if (!queue_)
            adopt(start_qemu_writer(options_));
        return *queue_;
    }

    void qemu_zeros(std::uint64_t offset, std::size_t len)
    {
        nbd::WriteQueue &writes = queue();
        if (connection_->can_zero()) {
            writes.write_zeroes(offset, len);
            return;
        }
        for (std::size_t done = 0; done < len;) {
            std::size_t n = std::min(kZeroChunk, len - done);
            writes.write(zero_chunk, n, offset + done);
            done += n;
        }
    }

    // Calls store(at, n, run) for the pieces of [offset, offset+len), with
    // the map's File run for a piece in the file, else null; then issues the
    // file's coalesced write (the caller's data is valid only until return).
    template <typename Store> void split(std::uint64_t offset, std::size_t len, Store store)
    {
        if (!map_) {
            store(offset, len, nullptr);
            return;
        }
        for (std::uint64_t at = offset, end = offset + len; at < end;) {
            ImageHostMap::Run run = map_->run_at(at);
            std::size_t n = static_cast<std::size_t>(std::min(end, run.start + run.length) - at);
            store(at, n, run.kind == ImageHostMap::Kind::File ? &run : nullptr);
            at += n;
        }
        file_->flush_pending();
    }

    // Runs an NBD request; when it fails because qemu-nbd is gone, says so
    // instead of libnbd's "connection reset".
    template <typename Request> void checked(const std::string &what, Request request)
    {
        try {
            request();
        } catch (const Error &e) {
            std::string reason = server_ ? server_->failure_after_error() : "";
            throw Error(what + " - " + (reason.empty() ? e.what() : reason));
        }
    }

    nbd::QemuNbdOptions options_;
    std::optional<ImageHostMap> map_;
    std::unique_ptr<RestoreTarget> file_; // the image file itself, with map_
    Fd image_;                            // read-only, for writeback_ only
    EarlyWriteback writeback_;            // of what qemu-nbd writes
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
    bool flush = !cache || *cache != CacheMode::Unsafe;
    if (auto map = ImageHostMap::load(filename, format, ImageHostMap::Access::Write)) {
        // the same cache mode on both paths; QEMU's default is writeback
        auto file = RestoreTarget::open_existing(filename, cache.value_or(CacheMode::Writeback), write_zeroes);
        options.format = "qcow2"; // what the map was made for
        return std::make_unique<QemuTarget>(std::move(options), std::move(*map), std::move(file), flush,
                                            write_zeroes);
    }
    QemuWriter qemu = start_qemu_writer(options);
    std::uint64_t size = qemu.connection->size();
    return std::make_unique<QemuTarget>(std::move(options), std::move(qemu), size, flush, write_zeroes);
}

} // namespace engine::vma
