#include "vma/reader.h"

#include "util/endian.h"
#include "util/error.h"
#include "util/md5.h"
#include "vma/cluster_set.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <map>
#include <sys/stat.h>
#include <unistd.h>

namespace engine::vma {

namespace {

constexpr std::size_t kMaxBlocksPerExtent = kSlotsPerExtent * kBlocksPerCluster;
// The payload starts on a 4 KiB boundary so targets opened with O_DIRECT
// can write straight from it.
constexpr std::size_t kPayloadAlignment = 4096;
// A pipe (`zstd -dc ... | vma extract -`) is enlarged to this (the default
// maximum an unprivileged process may set), so the producer is not stopped
// every 64 KiB.
constexpr int kPipeSize = 1 << 20;

struct FreeDeleter {
    void operator()(std::uint8_t *p) const { std::free(p); }
};

} // namespace

// Per-read state: which clusters came, the extent buffer.
struct Reader::Tracking {
    std::vector<ClusterSet> seen; // per devices_ index (empty set for vmstate)
    std::uint32_t next_vmstate_cluster = 0;
    std::unique_ptr<std::uint8_t, FreeDeleter> buffer;
    std::uint8_t *header = nullptr; // kExtentHeaderSize bytes before payload
    std::uint8_t *payload = nullptr;
};

std::unique_ptr<Reader> Reader::open(const std::string &path)
{
    Fd fd(path == "-" ? fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 0)
                      : ::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd)
        throw_errno("can't open file " + path);
    posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
    struct stat st;
    // best effort: a smaller pipe only costs more wake-ups
    if (fstat(fd.get(), &st) == 0 && S_ISFIFO(st.st_mode))
        fcntl(fd.get(), F_SETPIPE_SZ, kPipeSize);
    return std::make_unique<Reader>(std::move(fd));
}

Reader::Reader(Fd fd) : fd_(std::move(fd))
{
    std::fill(std::begin(device_index_), std::end(device_index_), -1);
    read_header();
}

Reader::~Reader() = default;

std::size_t Reader::read_some(std::uint8_t *buf, std::size_t len, const char *what)
{
    std::size_t got = read_full(fd_.get(), buf, len, what);
    offset_ += got;
    return got;
}

void Reader::read_header()
{
    std::vector<std::uint8_t> h(kHeaderFixedSize);
    if (read_some(h.data(), h.size(), "can't read vma header") != h.size())
        throw FormatError(offset_, "can't read vma header - got EOF");
    if (std::memcmp(&h[header::kMagicOffset], kMagic, sizeof kMagic) != 0)
        throw FormatError(header::kMagicOffset, "not a vma file - wrong magic number");

    std::uint32_t header_size = load_be32(&h[header::kHeaderSizeOffset]);
    // Proxmox never writes a larger header; the bound keeps memory small
    if (header_size <= kHeaderFixedSize || header_size > kMaxHeaderSize)
        throw FormatError(header::kHeaderSizeOffset,
                          "wrong vma header size " + std::to_string(header_size));
    h.resize(header_size);
    std::size_t rest = header_size - kHeaderFixedSize;
    if (read_some(&h[kHeaderFixedSize], rest, "can't read vma header data") != rest)
        throw FormatError(offset_, "can't read vma header data - got EOF");

    Md5Digest stored;
    std::memcpy(stored.data(), &h[header::kMd5Offset], stored.size());
    std::memset(&h[header::kMd5Offset], 0, stored.size());
    if (md5(h.data(), h.size()) != stored)
        throw FormatError(header::kMd5Offset, "wrong vma header chechsum");

    std::uint32_t version = load_be32(&h[header::kVersionOffset]);
    if (version != kVersion)
        throw FormatError(header::kVersionOffset, "wrong vma version " + std::to_string(version));
    std::memcpy(uuid_.data(), &h[header::kUuidOffset], uuid_.size());
    ctime_ = static_cast<std::int64_t>(load_be64(&h[header::kCtimeOffset]));

    std::uint64_t blob_offset = load_be32(&h[header::kBlobBufferOffsetOffset]);
    std::uint64_t blob_size = load_be32(&h[header::kBlobBufferSizeOffset]);
    if (blob_offset + 1 <= kHeaderFixedSize)
        throw FormatError(header::kBlobBufferOffsetOffset,
                          "wrong vma blob buffer offset " + std::to_string(blob_offset));
    if (blob_offset + blob_size > header_size)
        throw FormatError(header::kBlobBufferSizeOffset,
                          "wrong vma blob buffer size " + std::to_string(blob_offset) + "/" +
                              std::to_string(blob_size));

    // The blob chain from position 1; a pointer is valid only if it names
    // the start of a blob lying wholly inside the used area.
    std::map<std::uint32_t, std::string_view> blobs;
    const std::uint64_t end = blob_offset + blob_size;
    for (std::uint64_t pos = blob_offset + 1; pos + kBlobLengthSize <= end;) {
        std::uint64_t len = h[pos] | std::uint64_t(h[pos + 1]) << 8;
        if (pos + kBlobLengthSize + len <= end)
            blobs.emplace(static_cast<std::uint32_t>(pos - blob_offset),
                          std::string_view(reinterpret_cast<const char *>(&h[pos + kBlobLengthSize]),
                                           len));
        pos += kBlobLengthSize + len;
    }
    auto blob = [&](std::uint32_t ptr) -> const std::string_view * {
        auto it = blobs.find(ptr);
        return it == blobs.end() ? nullptr : &it->second;
    };
    // a string blob must end with its NUL; the name is the text before the
    // first NUL, as C reads it
    auto string_blob = [&](std::uint32_t ptr, std::string &out) {
        const std::string_view *b = blob(ptr);
        if (!b || b->empty() || b->back() != '\0')
            return false;
        out.assign(b->data(), std::strlen(b->data()));
        return true;
    };

    for (unsigned id = 1; id <= kMaxDeviceId; id++) {
        const std::uint8_t *entry = &h[header::kDeviceInfoOffset + id * header::kDeviceInfoSize];
        std::uint64_t size = load_be64(entry + header::kDeviceSizeOffset);
        DeviceInfo dev;
        if (!size || !string_blob(load_be32(entry + header::kDeviceNameOffset), dev.name))
            continue;
        dev.id = static_cast<std::uint8_t>(id);
        dev.size = size;
        dev.vmstate = dev.name == kVmstateName;
        std::uint64_t entry_offset = header::kDeviceInfoOffset + id * header::kDeviceInfoSize;
        for (const auto &other : devices_)
            if (other.name == dev.name)
                throw FormatError(entry_offset, "vma contains duplicate device name '" + dev.name + "'");
        if (!dev.vmstate && size > kMaxDeviceSize)
            throw FormatError(entry_offset + header::kDeviceSizeOffset,
                              "vma device '" + dev.name + "' has impossible size " +
                                  std::to_string(size));
        device_index_[id] = static_cast<int>(devices_.size());
        devices_.push_back(std::move(dev));
    }

    for (std::size_t i = 0; i < kMaxConfigs; i++) {
        std::uint32_t name_ptr = load_be32(&h[header::kConfigNamesOffset + 4 * i]);
        std::uint32_t data_ptr = load_be32(&h[header::kConfigDataOffset + 4 * i]);
        if (!name_ptr || !data_ptr)
            continue;
        ConfigBlob config;
        const std::string_view *data = blob(data_ptr);
        if (!string_blob(name_ptr, config.name) || !data)
            throw FormatError(header::kConfigNamesOffset + 4 * i,
                              "vma contains invalid data pointers");
        config.data.assign(data->data(), data->size());
        configs_.push_back(std::move(config));
    }
}

void Reader::read_extents(ClusterSink &sink)
{
    if (tracking_)
        throw Error("vma reader: extents already read");
    tracking_ = std::make_unique<Tracking>();
    for (const auto &dev : devices_)
        tracking_->seen.emplace_back(dev.clusters());
    tracking_->buffer.reset(static_cast<std::uint8_t *>(
        std::aligned_alloc(kPayloadAlignment, kPayloadAlignment + kMaxBlocksPerExtent * kBlockSize)));
    if (!tracking_->buffer)
        throw Error("vma reader: out of memory for the extent buffer");
    tracking_->payload = tracking_->buffer.get() + kPayloadAlignment;
    tracking_->header = tracking_->payload - kExtentHeaderSize;

    while (read_extent(sink)) {
    }

    for (std::size_t i = 0; i < devices_.size(); i++) {
        if (devices_[i].vmstate)
            continue;
        if (auto missing = tracking_->seen[i].first_missing())
            throw FormatError(offset_, "detected missing cluster " + std::to_string(*missing) +
                                           " for stream " + devices_[i].name);
    }
}

bool Reader::read_extent(ClusterSink &sink)
{
    Tracking &t = *tracking_;
    const std::uint64_t start = offset_;
    std::uint8_t *h = t.header;
    std::size_t got = read_some(h, kExtentHeaderSize, "read failed");
    if (got == 0)
        return false;
    if (got < kExtentHeaderSize)
        throw FormatError(start, "read short extent (" + std::to_string(got) + " bytes)");

    Md5Digest stored;
    std::memcpy(stored.data(), h + extent::kMd5Offset, stored.size());
    std::memset(h + extent::kMd5Offset, 0, stored.size());
    if (md5(h, kExtentHeaderSize) != stored)
        throw FormatError(start + extent::kMd5Offset, "wrong vma extent header chechsum");
    if (std::memcmp(h + extent::kUuidOffset, uuid_.data(), uuid_.size()) != 0)
        throw FormatError(start + extent::kUuidOffset, "wrong vma extent uuid");
    if (std::memcmp(h + extent::kMagicOffset, kExtentMagic, sizeof kExtentMagic) != 0 ||
        load_be16(h + extent::kReservedOffset) != 0)
        throw FormatError(start, "wrong vma extent header magic");

    std::size_t block_count = load_be16(h + extent::kBlockCountOffset);
    if (block_count > kMaxBlocksPerExtent)
        throw FormatError(start + extent::kBlockCountOffset,
                          "vma extent error - too many blocks (" + std::to_string(block_count) + ")");
    std::size_t extent_size = kExtentHeaderSize + block_count * kBlockSize;
    std::size_t payload = block_count * kBlockSize;
    std::size_t have = 0;
    if (sink.wants_data()) {
        have = read_some(t.payload, payload, "read failed");
    } else {
        // the payload area doubles as a small scratch buffer
        constexpr std::size_t kScratch = 128 * 1024;
        while (have < payload) {
            std::size_t want = std::min(kScratch, payload - have);
            std::size_t got = read_some(t.payload, want, "read failed");
            have += got;
            if (got < want)
                break;
        }
    }
    if (have < payload)
        throw FormatError(start, "short vma extent (" + std::to_string(kExtentHeaderSize + have) +
                                     " < " + std::to_string(extent_size) + ")");

    // Check every slot before handing out anything from this extent.
    struct Slot {
        const DeviceInfo *dev;
        BlockInfo info;
        std::size_t first_block;
    };
    Slot slots[kSlotsPerExtent];
    std::size_t slot_count = 0, blocks = 0;
    for (std::size_t i = 0; i < kSlotsPerExtent; i++) {
        std::uint64_t slot_offset = start + extent::kBlockInfoOffset + 8 * i;
        BlockInfo info = BlockInfo::decode(load_be64(h + extent::kBlockInfoOffset + 8 * i));
        if (!info.dev_id)
            continue;
        int index = device_index_[info.dev_id];
        if (index < 0)
            throw FormatError(slot_offset, "got wrong dev id " + std::to_string(info.dev_id));
        const DeviceInfo &dev = devices_[static_cast<std::size_t>(index)];
        if (dev.vmstate) {
            if (info.cluster != t.next_vmstate_cluster)
                throw FormatError(slot_offset, "found out of order vmstate data");
            t.next_vmstate_cluster++;
        } else {
            std::uint64_t cluster_start = std::uint64_t(info.cluster) * kClusterSize;
            if (info.cluster >= dev.clusters())
                throw FormatError(slot_offset, "got wrong block address - write beyond end");
            if (info.mask) {
                // the highest stored block must start inside the device
                unsigned last = 15 - static_cast<unsigned>(std::countl_zero(info.mask));
                if (cluster_start + last * kBlockSize >= dev.size)
                    throw FormatError(slot_offset, "got wrong block address - write beyond end");
            }
            if (!t.seen[static_cast<std::size_t>(index)].insert(info.cluster))
                throw FormatError(slot_offset, "found duplicated cluster " +
                                                   std::to_string(info.cluster) + " for stream " +
                                                   dev.name);
        }
        slots[slot_count++] = {&dev, info, blocks};
        blocks += static_cast<std::size_t>(std::popcount(info.mask));
    }
    if (blocks > block_count)
        throw FormatError(start, "short vma extent - too many blocks");
    if (blocks < block_count)
        throw FormatError(start, "vma extent error - missing blocks");

    for (std::size_t i = 0; i < slot_count; i++) {
        cluster_offset_ = start + kExtentHeaderSize + slots[i].first_block * kBlockSize;
        sink.cluster(*slots[i].dev, slots[i].info.cluster, slots[i].info.mask,
                     sink.wants_data() ? t.payload + slots[i].first_block * kBlockSize : nullptr);
    }
    sink.extent_done();
    return true;
}

} // namespace engine::vma
