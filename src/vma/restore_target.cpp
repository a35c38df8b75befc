#include "vma/restore_target.h"

#include "util/error.h"
#include "util/fd.h"
#include "vma/early_writeback.h"
#include "vma/format.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace engine::vma {

namespace {

// Aligned for O_DIRECT; zero runs are written from it piece by piece.
constexpr std::size_t kZeroChunk = 1 << 20;
alignas(4096) std::uint8_t zero_chunk[kZeroChunk]; // never written: stays zero

int open_flags_for(CacheMode cache)
{
    switch (cache) {
    case CacheMode::Writethrough:
        return O_DSYNC;
    case CacheMode::None:
        return O_DIRECT;
    case CacheMode::DirectSync:
        return O_DIRECT | O_DSYNC;
    case CacheMode::Writeback:
    case CacheMode::Unsafe:
        break;
    }
    return 0;
}

std::uint64_t size_of(int fd, const std::string &path)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        throw_errno("can't stat " + path);
    if (S_ISREG(st.st_mode))
        return static_cast<std::uint64_t>(st.st_size);
    if (S_ISBLK(st.st_mode)) {
        off_t end = lseek(fd, 0, SEEK_END);
        if (end < 0)
            throw_errno("can't get size of " + path);
        return static_cast<std::uint64_t>(end);
    }
    throw Error("can't open file " + path + " - not a regular file or block device");
}

// Linux opens a read-only block device for writing and fails only at the
// first write; asking first keeps a multi-disk restore from half-writing.
void check_writable_device(int fd, const std::string &path)
{
    struct stat st;
    int read_only = 0;
    if (fstat(fd, &st) == 0 && S_ISBLK(st.st_mode) && ioctl(fd, BLKROGET, &read_only) == 0 && read_only)
        throw Error("can't open file " + path + " - read-only block device");
}

} // namespace

CacheMode parse_cache_mode(const std::string &text)
{
    if (text == "writeback")
        return CacheMode::Writeback;
    if (text == "unsafe")
        return CacheMode::Unsafe;
    if (text == "writethrough")
        return CacheMode::Writethrough;
    if (text == "none" || text == "off")
        return CacheMode::None;
    if (text == "directsync")
        return CacheMode::DirectSync;
    throw Error("invalid cache option: " + text);
}

namespace {

// A raw file or block device, written with pwrite.
class FileTarget final : public RestoreTarget {
public:
    FileTarget(Fd fd, std::string path, std::uint64_t size, CacheMode cache, bool write_zeroes)
        : RestoreTarget(std::move(path), size, write_zeroes), fd_(std::move(fd)), cache_(cache),
          writeback_(cache == CacheMode::Writeback ? fd_.get() : -1)
    {
    }

    void grow_to(std::uint64_t size) override
    {
        if (size > size_) {
            if (ftruncate(fd_.get(), static_cast<off_t>(size)) < 0)
                throw_errno("can't resize " + path());
            size_ = size;
        }
    }

protected:
    void store_data(const std::uint8_t *data, std::size_t len, std::uint64_t offset) override
    {
        const std::string what = "write to " + path() + " failed";
        // O_DIRECT takes whole logical blocks (at most 4 KiB) only; offsets
        // are always block-aligned, so only a disk's partial last block
        // needs help
        const bool direct = open_flags_for(cache_) & O_DIRECT;
        const std::size_t direct_len = direct ? len - len % kBlockSize : len;
        if (direct_len)
            pwrite_all(fd_.get(), data, direct_len, offset, what.c_str());
        if (direct_len < len)
            pwrite_buffered(data + direct_len, len - direct_len, offset + direct_len, what);
        writeback_.wrote(len);
    }

    void store_zeros(std::uint64_t offset, std::size_t len) override
    {
        for (std::size_t done = 0; done < len;) {
            std::size_t n = std::min(kZeroChunk, len - done);
            store_data(zero_chunk, n, offset + done);
            done += n;
        }
    }

    void close_durable() override
    {
        if (cache_ != CacheMode::Unsafe && fdatasync(fd_.get()) < 0 && errno != EINVAL)
            throw_errno("vma flush of " + path() + " failed");
        fd_.close_checked(("close of " + path() + " failed").c_str());
    }

private:
    // The partial last block goes through the page cache instead;
    // close_durable()'s fdatasync (or O_DSYNC) makes it as durable as the rest.
    void pwrite_buffered(const std::uint8_t *data, std::size_t len, std::uint64_t offset,
                         const std::string &what)
    {
        int flags = fcntl(fd_.get(), F_GETFL);
        if (flags < 0 || fcntl(fd_.get(), F_SETFL, flags & ~O_DIRECT) < 0)
            throw_errno("can't turn off O_DIRECT on " + path());
        pwrite_all(fd_.get(), data, len, offset, what.c_str());
        if (fcntl(fd_.get(), F_SETFL, flags) < 0)
            throw_errno("can't turn on O_DIRECT on " + path());
    }

    Fd fd_;
    CacheMode cache_;
    EarlyWriteback writeback_;
};

} // namespace

std::unique_ptr<RestoreTarget> RestoreTarget::open_existing(const std::string &path, CacheMode cache,
                                                            bool write_zeroes)
{
    Fd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC | open_flags_for(cache)));
    if (!fd)
        throw_errno("can't open file " + path);
    check_writable_device(fd.get(), path);
    std::uint64_t size = size_of(fd.get(), path);
    return std::make_unique<FileTarget>(std::move(fd), path, size, cache, write_zeroes);
}

std::unique_ptr<RestoreTarget> RestoreTarget::create_sparse(const std::string &path, std::uint64_t size)
{
    Fd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (!fd)
        throw_errno("can't create file " + path);
    if (ftruncate(fd.get(), static_cast<off_t>(size)) < 0) {
        int err = errno;
        unlink(path.c_str());
        throw Error("can't create file " + path + ": " + errno_text(err));
    }
    return std::make_unique<FileTarget>(std::move(fd), path, size, CacheMode::Writeback, false);
}

RestoreTarget::RestoreTarget(std::string path, std::uint64_t size, bool write_zeroes)
    : size_(size), path_(std::move(path)), write_zeroes_(write_zeroes)
{
}

RestoreTarget::~RestoreTarget() = default;

void RestoreTarget::write(std::uint64_t offset, const std::uint8_t *data, std::size_t len)
{
    if (pending_len_ && pending_data_ && offset == pending_offset_ + pending_len_ &&
        data == pending_data_ + pending_len_) {
        pending_len_ += len;
        return;
    }
    flush_pending();
    pending_offset_ = offset;
    pending_data_ = data;
    pending_len_ = len;
}

void RestoreTarget::write_zero(std::uint64_t offset, std::size_t len)
{
    if (!write_zeroes_)
        return;
    if (pending_len_ && !pending_data_ && offset == pending_offset_ + pending_len_) {
        pending_len_ += len;
        return;
    }
    flush_pending();
    pending_offset_ = offset;
    pending_data_ = nullptr;
    pending_len_ = len;
}

void RestoreTarget::flush_pending()
{
    if (!pending_len_)
        return;
    if (throttle_)
        throttle_->consume(pending_len_);
    if (pending_data_)
        store_data(pending_data_, pending_len_, pending_offset_);
    else
        store_zeros(pending_offset_, pending_len_);
    pending_len_ = 0;
    pending_data_ = nullptr;
}

void RestoreTarget::grow_to(std::uint64_t size)
{
    if (size > size_)
        throw Error("can't resize " + path_ + " - only the vmstate file grows");
}

void RestoreTarget::finish()
{
    flush_pending();
    close_durable();
}

} // namespace engine::vma
