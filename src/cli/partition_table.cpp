#include "cli/partition_table.h"

#include "util/fd.h"

#include <cstring>
#include <string>

namespace vma_cli {

namespace {

constexpr std::uint64_t kSector = 512;

std::uint32_t le32(const unsigned char *p)
{
    return p[0] | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 | std::uint32_t(p[3]) << 24;
}

std::uint64_t le64(const unsigned char *p) { return le32(p) | std::uint64_t(le32(p + 4)) << 32; }

std::vector<Partition> read_gpt(int fd)
{
    unsigned char header[kSector];
    if (engine::pread_full(fd, header, kSector, kSector, "can't read the GPT header") != kSector ||
        std::memcmp(header, "EFI PART", 8) != 0)
        return {};
    std::uint64_t entries_lba = le64(header + 72);
    std::uint32_t count = le32(header + 80), entry_size = le32(header + 84);
    if (entry_size < 128 || entry_size > 4096 || count > 1024)
        return {};
    std::vector<Partition> parts;
    std::vector<unsigned char> entry(entry_size);
    for (std::uint32_t i = 0; i < count; i++) {
        if (engine::pread_full(fd, entry.data(), entry_size, entries_lba * kSector + std::uint64_t(i) * entry_size,
                               "can't read the GPT") != entry_size)
            break;
        static const unsigned char unused[16] = {};
        if (!std::memcmp(entry.data(), unused, 16))
            continue;
        std::uint64_t first = le64(&entry[32]), last = le64(&entry[40]);
        if (last >= first)
            parts.push_back({static_cast<int>(i + 1), first * kSector, (last - first + 1) * kSector});
    }
    return parts;
}

} // namespace

std::vector<Partition> read_partition_table(int fd)
{
    unsigned char mbr[kSector];
    if (engine::pread_full(fd, mbr, kSector, 0, "can't read the partition table") != kSector ||
        mbr[510] != 0x55 || mbr[511] != 0xaa)
        return {};
    std::vector<Partition> parts;
    for (int i = 0; i < 4; i++) {
        const unsigned char *e = mbr + 446 + 16 * i;
        unsigned char type = e[4];
        if (type == 0xee)
            return read_gpt(fd);
        // empty and extended (DOS, LBA, Linux) entries hold no file system
        if (type == 0 || type == 0x05 || type == 0x0f || type == 0x85)
            continue;
        std::uint64_t start = le32(e + 8), sectors = le32(e + 12);
        if (sectors)
            parts.push_back({i + 1, start * kSector, sectors * kSector});
    }
    return parts;
}

} // namespace vma_cli
