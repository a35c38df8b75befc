#include "vma/mapped_image_source.h"

#include "util/error.h"
#include "vma/format.h"

#include <algorithm>
#include <cstring>
#include <fcntl.h>

namespace engine::vma {

MappedImageSource::MappedImageSource(const std::string &path, ImageHostMap map)
    : path_(path), map_(std::move(map)), fd_(open(path.c_str(), O_RDONLY | O_CLOEXEC))
{
    if (!fd_)
        throw_errno("can't open image '" + path + "'");
    posix_fadvise(fd_.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
    // started here, not by the read-ahead thread on first need: qemu-nbd
    // gets SIGTERM when the thread that started it ends (PR_SET_PDEATHSIG)
    if (map_.has_qemu_runs()) {
        nbd::QemuNbdOptions options;
        options.filename = path_;
        options.format = "qcow2";
        options.read_only = true;
        server_ = std::make_unique<nbd::QemuNbdExport>(options);
        connection_ = server_->connect();
    }
}

MappedImageSource::~MappedImageSource() = default;

void MappedImageSource::write_to(Writer &writer, DeviceId dev, const std::function<void()> &progress)
{
    write_image(writer, dev, *this, progress);
}

void MappedImageSource::finish()
{
    if (!server_)
        return;
    connection_.reset();
    server_->finish();
}

void MappedImageSource::read_clusters(std::uint64_t first, std::size_t count, std::uint8_t *buf, bool *hole)
{
    const std::uint64_t begin = first * kClusterSize;
    const std::uint64_t end = std::min(begin + count * kClusterSize, map_.virtual_size());
    std::fill(hole, hole + count, true);
    for (std::uint64_t pos = begin; pos < end;) {
        ImageHostMap::Run run = map_.run_at(pos);
        std::uint64_t piece_end = std::min(end, run.start + run.length);
        std::size_t len = static_cast<std::size_t>(piece_end - pos);
        std::uint8_t *out = buf + (pos - begin);
        if (run.kind == ImageHostMap::Kind::File) {
            std::size_t got = pread_full(fd_.get(), out, len, run.host + (pos - run.start),
                                         ("read error on '" + path_ + "'").c_str());
            if (got < len) // a preallocated cluster past the file's end reads as zeros
                std::memset(out + got, 0, len - got);
        } else if (run.kind == ImageHostMap::Kind::Qemu) {
            read_through_qemu(out, len, pos);
        }
        if (run.kind != ImageHostMap::Kind::Zero)
            mark_read(begin, pos, piece_end, buf, hole);
        pos = piece_end;
    }
}

void MappedImageSource::read_through_qemu(std::uint8_t *buf, std::size_t len, std::uint64_t offset)
{
    try {
        for (std::size_t done = 0; done < len;) {
            std::size_t n = std::min(len - done, connection_->max_request());
            connection_->read(buf + done, n, offset + done);
            done += n;
        }
        qemu_bytes_ += len;
    } catch (const Error &e) {
        std::string reason = server_->failure_after_error();
        throw Error("read error on '" + path_ + "' - " + (reason.empty() ? e.what() : reason));
    }
}

} // namespace engine::vma
