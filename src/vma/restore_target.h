// Where a restored device's bytes go: a raw image file or a block device.
#pragma once

#include "util/fd.h"
#include "vma/throttle.h"

#include <cstdint>
#include <memory>
#include <string>

namespace engine::vma {

// How a target is opened, as QEMU's cache= modes map onto a raw file.
enum class CacheMode {
    Writeback,    // page cache, flushed at the end (the default)
    Unsafe,       // page cache, never flushed
    Writethrough, // O_DSYNC
    None,         // O_DIRECT, flushed at the end
    DirectSync,   // O_DIRECT | O_DSYNC
};

// Parses a cache= value; throws Error("invalid cache option: X").
CacheMode parse_cache_mode(const std::string &text);

// Writes a device's data at byte offsets, coalescing adjacent writes into
// large pwrite calls. Zero ranges are written only if write_zeroes is set
// (a target that starts out zero, like a new sparse file, needs no writes).
class RestoreTarget {
public:
    // Opens an existing file or block device for writing. Throws
    // Error("can't open file X - ...").
    static std::unique_ptr<RestoreTarget> open_existing(const std::string &path, CacheMode cache,
                                                        bool write_zeroes);
    // Creates a new sparse file of the given size (O_EXCL). Throws Error.
    static std::unique_ptr<RestoreTarget> create_sparse(const std::string &path, std::uint64_t size);

    ~RestoreTarget();

    const std::string &path() const { return path_; }
    // The writable size (file size or block device size).
    std::uint64_t size() const { return size_; }
    bool write_zeroes() const { return write_zeroes_; }
    void set_throttle(std::shared_ptr<Throttle> throttle) { throttle_ = std::move(throttle); }

    // Queues len bytes of data for offset; data must stay valid until
    // flush_pending(). Adjacent queued writes become one pwrite.
    void write(std::uint64_t offset, const std::uint8_t *data, std::size_t len);
    // Queues zeros for [offset, offset+len) if write_zeroes is set.
    void write_zero(std::uint64_t offset, std::size_t len);
    // Issues the queued write. Throws Error on failure (e.g. ENOSPC).
    void flush_pending();
    // Extends a file target to at least size bytes (the end reads as zeros).
    void grow_to(std::uint64_t size);
    // flush_pending(), then makes the data durable (fdatasync) unless the
    // cache mode is unsafe, and closes the target, reporting a failing close.
    void finish();

private:
    RestoreTarget(Fd fd, std::string path, std::uint64_t size, CacheMode cache, bool write_zeroes);
    void pwrite_checked(const std::uint8_t *data, std::size_t len, std::uint64_t offset);
    void pwrite_buffered(const std::uint8_t *data, std::size_t len, std::uint64_t offset,
                         const std::string &what);

    Fd fd_;
    std::string path_;
    std::uint64_t size_;
    CacheMode cache_;
    bool write_zeroes_;
    std::shared_ptr<Throttle> throttle_;
    // the queued run: data (or zeros when pending_data_ is null)
    std::uint64_t pending_offset_ = 0;
    std::size_t pending_len_ = 0;
    const std::uint8_t *pending_data_ = nullptr;
};

} // namespace engine::vma
