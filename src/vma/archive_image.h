// One device of an indexed archive, read at random straight from the archive
// file: stored 4 KiB blocks with pread, unstored ones as zeros.
#pragma once

#include "vma/archive_index.h"

#include <cstdint>
#include <functional>

namespace engine::vma {

class ArchiveImage {
public:
    // archive_fd (the archive the index was built from) and index must
    // outlive the image.
    ArchiveImage(const ArchiveIndex &index, const IndexedDevice &dev, int archive_fd)
        : index_(index), dev_(dev), archive_fd_(archive_fd)
    {
    }

    const IndexedDevice &device() const { return dev_; }
    std::uint64_t size() const { return dev_.size; }

    // Fills buf with len bytes from offset (offset + len <= size()).
    // Thread-safe. Throws Error on a read failure or an archive that got
    // shorter since it was indexed.
    void read(void *buf, std::size_t len, std::uint64_t offset) const;

    // Describes [offset, offset + len) as consecutive runs of data and of
    // zeros (unstored blocks), calling add(offset, length, zero) for each in
    // order; stops early when add returns false. Thread-safe.
    using AddRun = std::function<bool(std::uint64_t offset, std::uint64_t length, bool zero)>;
    void map(std::uint64_t offset, std::uint64_t len, const AddRun &add) const;

private:
    // Calls visit(offset, length, archive_offset or kZero) for each piece
    // of [offset, offset + len) that lies within one 4 KiB block, in order.
    template <typename Visit>
    void for_each_piece(std::uint64_t offset, std::uint64_t len, Visit visit) const;

    const ArchiveIndex &index_;
    const IndexedDevice &dev_;
    int archive_fd_;
};

} // namespace engine::vma
