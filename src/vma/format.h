// The VMA archive layout: the only place that knows an offset, a size or a
// magic number. Shared by the writer and the reader.
//
// An archive is a header (fixed part + blob buffer) followed by extents until
// end of file. All integers are big-endian except the 2-byte little-endian
// length in front of each blob.
//
//   header:  magic "VMA\0", version 1, uuid, ctime, md5 (over the whole
//            header with the md5 field zeroed), blob buffer offset/size,
//            header size, config name/data tables (256 each), 256 device
//            entries (0 unused; name pointer + size), then the blob buffer:
//            a dummy byte at 0 (so pointer 0 means "none"), then blobs.
//   extent:  512-byte header (magic "VMAE", block count, uuid, md5, 59 block
//            infos) followed by block_count 4 KiB blocks; each block info
//            names a 64 KiB cluster of one device and a 16-bit mask of which
//            of its 4 KiB blocks are stored (the others are zero).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace engine::vma {

inline constexpr std::size_t kBlockSize = 4096;
inline constexpr std::size_t kBlocksPerCluster = 16;
inline constexpr std::size_t kClusterSize = kBlockSize * kBlocksPerCluster; // 65536
inline constexpr std::size_t kSectorSize = 512;

// --- header -----------------------------------------------------------------
inline constexpr std::uint8_t kMagic[4] = {'V', 'M', 'A', 0};
inline constexpr std::uint32_t kVersion = 1;
inline constexpr std::size_t kHeaderFixedSize = 12288;
inline constexpr std::size_t kMaxConfigs = 256;
inline constexpr std::size_t kDeviceSlots = 256; // entry 0 is unused
inline constexpr unsigned kMaxDeviceId = 254;    // 255 is reserved
inline constexpr std::size_t kMaxBlobLength = 65535;
// The header with its blob buffer never exceeds this in Proxmox's writer.
inline constexpr std::size_t kMaxHeaderSize = 8 * kClusterSize;

namespace header {
inline constexpr std::size_t kMagicOffset = 0;
inline constexpr std::size_t kVersionOffset = 4;
inline constexpr std::size_t kUuidOffset = 8;
inline constexpr std::size_t kCtimeOffset = 24;
inline constexpr std::size_t kMd5Offset = 32;
inline constexpr std::size_t kBlobBufferOffsetOffset = 48;
inline constexpr std::size_t kBlobBufferSizeOffset = 52;
inline constexpr std::size_t kHeaderSizeOffset = 56;
inline constexpr std::size_t kConfigNamesOffset = 2044; // u32[256]
inline constexpr std::size_t kConfigDataOffset = 3068;  // u32[256]
inline constexpr std::size_t kDeviceInfoOffset = 4096;  // 32-byte entries
inline constexpr std::size_t kDeviceInfoSize = 32;
inline constexpr std::size_t kDeviceNameOffset = 0; // within an entry, u32
inline constexpr std::size_t kDeviceSizeOffset = 8; // within an entry, u64
} // namespace header

// The blob area grows in whole sectors.
inline constexpr std::size_t kBlobAllocationUnit = 512;
// A blob is a 2-byte little-endian length, then the data.
inline constexpr std::size_t kBlobLengthSize = 2;

// The device name Proxmox reserves for the VM's RAM state; its clusters come
// in order and are not bounded by the recorded size.
inline constexpr std::string_view kVmstateName = "vmstate";

// --- extents ----------------------------------------------------------------
inline constexpr std::uint8_t kExtentMagic[4] = {'V', 'M', 'A', 'E'};
inline constexpr std::size_t kExtentHeaderSize = 512;
inline constexpr std::size_t kSlotsPerExtent = 59;
// Proxmox's writer starts a new extent once this many slots are used.
inline constexpr std::size_t kWriterSlotsPerExtent = kSlotsPerExtent - 1;
inline constexpr std::size_t kMaxExtentSize = kExtentHeaderSize + kSlotsPerExtent * kClusterSize;

namespace extent {
inline constexpr std::size_t kMagicOffset = 0;
inline constexpr std::size_t kReservedOffset = 4;   // u16, must be 0
inline constexpr std::size_t kBlockCountOffset = 6; // u16
inline constexpr std::size_t kUuidOffset = 8;
inline constexpr std::size_t kMd5Offset = 24;
inline constexpr std::size_t kBlockInfoOffset = 40; // u64[59]
} // namespace extent

// One block info: bits 63..48 mask, 47..40 reserved, 39..32 device id
// (0 = empty slot), 31..0 cluster number.
struct BlockInfo {
    std::uint16_t mask = 0;
    std::uint8_t dev_id = 0;
    std::uint32_t cluster = 0;

    static BlockInfo decode(std::uint64_t v)
    {
        return {static_cast<std::uint16_t>(v >> 48), static_cast<std::uint8_t>(v >> 32),
                static_cast<std::uint32_t>(v)};
    }
    std::uint64_t encode() const
    {
        return std::uint64_t(mask) << 48 | std::uint64_t(dev_id) << 32 | cluster;
    }
};

// Cluster numbers are 32 bits: the largest device an archive can hold.
inline constexpr std::uint64_t kMaxDeviceSize = (std::uint64_t(1) << 32) * kClusterSize;

inline constexpr std::uint64_t clusters_for(std::uint64_t size)
{
    return size / kClusterSize + (size % kClusterSize != 0);
}

} // namespace engine::vma
