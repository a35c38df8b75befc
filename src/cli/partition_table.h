// The partitions of a disk image, read from its MBR or GPT: what vma mount
// needs to loop-mount one partition by offset (the kernel's partition scan
// of loop devices is not available everywhere, e.g. in containers).
#pragma once

#include <cstdint>
#include <vector>

namespace vma_cli {

struct Partition {
    int number = 0;            // 1-based, as Linux numbers them
    std::uint64_t offset = 0;  // bytes
    std::uint64_t size = 0;    // bytes
};

// The primary MBR partitions (extended partitions and their logical ones
// are left out) or, for a protective MBR, the GPT entries; empty when the
// disk has no partition table. Reads fd with pread (512-byte sectors).
std::vector<Partition> read_partition_table(int fd);

} // namespace vma_cli
