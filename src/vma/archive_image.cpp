#include "vma/archive_image.h"

#include "util/error.h"

#include <algorithm>
#include <bit>
#include <cstring>

namespace engine::vma {

namespace {

constexpr std::uint64_t kZero = ~std::uint64_t(0);
// index entries looked up at once: 32 MiB of device
constexpr std::size_t kEntryBatch = 512;

} // namespace

template <typename Visit>
void ArchiveImage::for_each_piece(std::uint64_t offset, std::uint64_t len, Visit visit) const
{
    ClusterEntry entries[kEntryBatch];
    const std::uint64_t end = offset + len;
    while (offset < end) {
        std::uint64_t first = offset / kClusterSize;
        std::uint64_t last = (end - 1) / kClusterSize;
        std::size_t count = static_cast<std::size_t>(std::min<std::uint64_t>(last - first + 1, kEntryBatch));
        index_.entries(dev_, first, count, entries);
        for (std::size_t i = 0; i < count && offset < end; i++) {
            const ClusterEntry &e = entries[i];
            const std::uint64_t cluster_start = (first + i) * kClusterSize;
            while (offset < end && offset < cluster_start + kClusterSize) {
                unsigned block = static_cast<unsigned>((offset - cluster_start) / kBlockSize);
                std::uint64_t block_start = cluster_start + block * kBlockSize;
                std::uint64_t piece = std::min(end, block_start + kBlockSize) - offset;
                std::uint64_t source = kZero;
                if (e.mask & (1u << block)) {
                    unsigned before = static_cast<unsigned>(std::popcount(
                        static_cast<unsigned>(e.mask & ((1u << block) - 1))));
                    source = e.offset + before * kBlockSize + (offset - block_start);
                }
                if (!visit(offset, piece, source))
                    return;
                offset += piece;
            }
        }
    }
}

void ArchiveImage::read(void *buf, std::size_t len, std::uint64_t offset) const
{
    auto *out = static_cast<std::uint8_t *>(buf);
    const std::uint64_t base = offset;
    // consecutive stored pieces that are consecutive in the archive too
    // (blocks of one extent) become one pread
    std::uint64_t run_source = 0, run_offset = 0, run_len = 0;
    auto flush = [&] {
        if (!run_len)
            return;
        std::size_t got = pread_full(archive_fd_, out + (run_offset - base), run_len, run_source,
                                     "can't read the archive");
        if (got != run_len)
            throw Error("can't read the archive - it ends at " + std::to_string(run_source + got) +
                        ", shorter than when it was indexed");
        run_len = 0;
    };
    for_each_piece(offset, len, [&](std::uint64_t at, std::uint64_t piece, std::uint64_t source) {
        if (source == kZero) {
            flush();
            std::memset(out + (at - base), 0, piece);
        } else if (run_len && run_source + run_len == source) {
            run_len += piece;
        } else {
            flush();
            run_source = source;
            run_offset = at;
            run_len = piece;
        }
        return true;
    });
    flush();
}

void ArchiveImage::map(std::uint64_t offset, std::uint64_t len, const AddRun &add) const
{
    std::uint64_t run_offset = offset, run_len = 0;
    bool run_zero = false;
    bool more = true;
    for_each_piece(offset, len, [&](std::uint64_t at, std::uint64_t piece, std::uint64_t source) {
        bool zero = source == kZero;
        if (run_len && zero != run_zero) {
            more = add(run_offset, run_len, run_zero);
            run_len = 0;
            if (!more)
                return false;
        }
        if (!run_len) {
            run_offset = at;
            run_zero = zero;
        }
        run_len += piece;
        return true;
    });
    if (more && run_len)
        add(run_offset, run_len, run_zero);
}

} // namespace engine::vma
