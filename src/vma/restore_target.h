// Where a restored device's bytes go: a raw image file, a block device, or
// (through QEMU) any image QEMU opens.
#pragma once

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

// Where a device's data goes, at byte offsets: adjacent writes are coalesced
// into large ones. Zero ranges are written only if write_zeroes is set (a
// target that starts out zero, like a new sparse file, needs no writes).
// The storage behind it is a raw file or block device (open_existing,
// create_sparse) or an image opened by QEMU (qemu_restore_target.h).
class RestoreTarget {
public:
    // Opens an existing file or block device for writing. Throws
    // Error("can't open file X - ...").
    static std::unique_ptr<RestoreTarget> open_existing(const std::string &path, CacheMode cache,
                                                        bool write_zeroes);
    // Creates a new sparse file of the given size (O_EXCL). Throws Error.
    static std::unique_ptr<RestoreTarget> create_sparse(const std::string &path, std::uint64_t size);

    virtual ~RestoreTarget();

    const std::string &path() const { return path_; }
    // The writable size (file size, block device size or virtual disk size).
    std::uint64_t size() const { return size_; }
    bool write_zeroes() const { return write_zeroes_; }
    void set_throttle(std::shared_ptr<Throttle> throttle) { throttle_ = std::move(throttle); }

    // Queues len bytes of data for offset; data must stay valid until
    // flush_pending(). Adjacent queued writes become one write.
    void write(std::uint64_t offset, const std::uint8_t *data, std::size_t len);
    // Queues zeros for [offset, offset+len) if write_zeroes is set.
    void write_zero(std::uint64_t offset, std::size_t len);
    // Issues the queued write. Throws Error on failure (e.g. ENOSPC).
    void flush_pending();
    // Extends the target to at least size bytes (the end reads as zeros).
    // Only the vmstate file grows; other targets throw Error.
    virtual void grow_to(std::uint64_t size);
    // flush_pending(), then makes the data durable (unless the cache mode
    // is unsafe) and closes the target, reporting a failing close.
    void finish();

protected:
    RestoreTarget(std::string path, std::uint64_t size, bool write_zeroes);
    // Stores len bytes of data, or of zeros, at offset (the throttle is
    // already accounted).
    virtual void store_data(const std::uint8_t *data, std::size_t len, std::uint64_t offset) = 0;
    virtual void store_zeros(std::uint64_t offset, std::size_t len) = 0;
    // Makes everything stored durable and closes the storage.
    virtual void close_durable() = 0;

    std::uint64_t size_;

private:
    std::string path_;
    bool write_zeroes_;
    std::shared_ptr<Throttle> throttle_;
    // the queued run: data (or zeros when pending_data_ is null)
    std::uint64_t pending_offset_ = 0;
    std::size_t pending_len_ = 0;
    const std::uint8_t *pending_data_ = nullptr;
};

} // namespace engine::vma
