#include "vma/writer.h"

#include "util/endian.h"
#include "util/error.h"
#include "util/fd.h"
#include "util/md5.h"
#include "util/zero.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <unistd.h>

namespace engine::vma {

namespace {

std::size_t round_up(std::size_t value, std::size_t unit)
{
    return (value + unit - 1) / unit * unit;
}

// Proxmox grows the blob area by the blob's own size rounded to a sector
// whenever the blob does not fit; the loop only differs from it where
// Proxmox's single step would overflow its buffer.
std::size_t grow_allocation(std::size_t allocated, std::size_t used, std::size_t len)
{
    while (allocated < used + kBlobLengthSize + len)
        allocated += round_up(kBlobLengthSize + len, kBlobAllocationUnit);
    return allocated;
}

std::string basename_of(std::string_view path)
{
    while (path.size() > 1 && path.back() == '/')
        path.remove_suffix(1);
    auto slash = path.rfind('/');
    if (slash != std::string_view::npos && path.size() > 1)
        path.remove_prefix(slash + 1);
    return std::string(path);
}

std::span<const std::uint8_t> bytes_of(std::string_view s)
{
    return {reinterpret_cast<const std::uint8_t *>(s.data()), s.size()};
}

// The header and one entry per stored block at most: one writev call.
static_assert(1 + kSlotsPerExtent * kBlocksPerCluster <= IOV_MAX);

// writev of every byte in iov[0..count), continuing after short writes (a
// pipe takes them in pieces). Advances the entries it consumes.
void writev_all(int fd, struct iovec *iov, int count, const char *what)
{
    while (count > 0) {
        ssize_t n = ::writev(fd, iov, count);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            throw_errno(what);
        }
        auto done = static_cast<std::size_t>(n);
        while (count > 0 && done >= iov->iov_len) {
            done -= iov->iov_len;
            iov++;
            count--;
        }
        if (count > 0) {
            iov->iov_base = static_cast<std::uint8_t *>(iov->iov_base) + done;
            iov->iov_len -= done;
        }
    }
}

} // namespace

Writer::Writer(int fd, WriterOptions options)
    : fd_(fd), options_(std::move(options)), extent_(new std::uint8_t[kMaxExtentSize]())
{
    payload_.reserve(1 + kSlotsPerExtent * kBlocksPerCluster);
    payload_.push_back({extent_.get(), kExtentHeaderSize});
}

Writer::~Writer() = default;

void Writer::fail(const std::string &message)
{
    if (error_.empty())
        error_ = message;
    throw Error(error_);
}

void Writer::check_usable() const
{
    if (!error_.empty())
        throw Error(error_);
    if (finished_)
        throw Error("vma writer: archive already finished");
}

void Writer::check_registration_open(const char *what) const
{
    check_usable();
    if (header_written_)
        throw Error(std::string(what) + ": header already written");
}

Writer::Device &Writer::device(DeviceId dev)
{
    if (dev == 0 || dev > devices_.size())
        fail("vma_writer_write: no such stream " + std::to_string(dev));
    return *devices_[dev - 1];
}

const Writer::Device &Writer::device(DeviceId dev) const
{
    if (dev == 0 || dev > devices_.size())
        throw Error("vma writer: no such stream " + std::to_string(dev));
    return *devices_[dev - 1];
}

std::size_t Writer::projected_header_size(std::size_t extra_blob_bytes) const
{
    std::size_t allocated = blobs_.size(), used = blob_used_;
    auto add = [&](std::size_t len) {
        allocated = grow_allocation(allocated, used, len);
        used += kBlobLengthSize + len;
    };
    if (extra_blob_bytes)
        add(extra_blob_bytes - kBlobLengthSize);
    for (const auto &d : devices_)
        add(d->name.size() + 1);
    return kHeaderFixedSize + std::max(allocated, kBlobAllocationUnit);
}

std::uint32_t Writer::add_blob(std::span<const std::uint8_t> data)
{
    std::size_t allocated = grow_allocation(blobs_.size(), blob_used_, data.size());
    blobs_.resize(allocated, 0);
    std::uint32_t pos = static_cast<std::uint32_t>(blob_used_);
    blobs_[pos] = static_cast<std::uint8_t>(data.size() & 0xff);
    blobs_[pos + 1] = static_cast<std::uint8_t>(data.size() >> 8);
    if (!data.empty())
        std::memcpy(&blobs_[pos + kBlobLengthSize], data.data(), data.size());
    blob_used_ += kBlobLengthSize + data.size();
    return pos;
}

void Writer::add_config(std::string_view name, std::string_view data)
{
    add_config(name, bytes_of(data));
}

void Writer::add_config(std::string_view name, std::span<const std::uint8_t> data)
{
    check_registration_open("vma_writer_add_config");
    std::string base = basename_of(name);
    if (configs_.size() >= kMaxConfigs)
        throw Error("vma_writer_add_config: too many config blobs (max " +
                    std::to_string(kMaxConfigs) + ")");
    if (base.empty() || base.find('\0') != std::string::npos)
        throw Error("vma_writer_add_config: invalid config name '" + base + "'");
    if (base.size() + 1 > kMaxBlobLength || data.size() > kMaxBlobLength)
        throw Error("vma_writer_add_config: config '" + base + "' too large (len = " +
                    std::to_string(data.size()) + ", max " + std::to_string(kMaxBlobLength) + ")");
    // add both blobs, then check the header still fits with the device
    // names that will follow them; undo on failure
    std::vector<std::uint8_t> saved = blobs_;
    std::size_t saved_used = blob_used_;
    std::uint32_t name_pos = add_blob(bytes_of(std::string_view(base.c_str(), base.size() + 1)));
    std::uint32_t data_pos = add_blob(data);
    if (projected_header_size(0) > kMaxHeaderSize) {
        blobs_ = std::move(saved);
        blob_used_ = saved_used;
        throw Error("vma_writer_add_config: header too large with config '" + base + "'");
    }
    configs_.emplace_back(name_pos, data_pos);
}

DeviceId Writer::add_device(std::string_view name, std::uint64_t size)
{
    check_registration_open("vma_writer_register_stream");
    std::string dev_name(name);
    if (devices_.size() >= kMaxDeviceId)
        throw Error("vma_writer_register_stream: too many drives");
    if (dev_name.empty() || dev_name.find('\0') != std::string::npos ||
        dev_name.size() + 1 > kMaxBlobLength)
        throw Error("vma_writer_register_stream: invalid device name '" + dev_name + "'");
    for (const auto &d : devices_)
        if (d->name == dev_name)
            throw Error("vma_writer_register_stream: duplicate device name '" + dev_name + "'");
    if (size == 0)
        throw Error("vma_writer_register_stream: got strange size 0");
    std::uint64_t recorded = (size + kSectorSize - 1) / kSectorSize * kSectorSize;
    if (size > kMaxDeviceSize || recorded > kMaxDeviceSize)
        throw Error("vma_writer_register_stream: device '" + dev_name + "' too large (" +
                    std::to_string(size) + " bytes)");
    if (projected_header_size(kBlobLengthSize + dev_name.size() + 1) > kMaxHeaderSize)
        throw Error("vma_writer_register_stream: header too large with device '" + dev_name + "'");
    bool vmstate = dev_name == kVmstateName;
    std::uint64_t clusters = vmstate ? std::uint64_t(1) << 32 : clusters_for(recorded);
    devices_.push_back(std::unique_ptr<Device>(
        new Device{dev_name, recorded, clusters, vmstate, 0, ClusterSet(vmstate ? 0 : clusters), {}, {}}));
    return static_cast<DeviceId>(devices_.size());
}

void Writer::write_header()
{
    header_written_ = true;
    // the device names follow the configs in the blob buffer, as in Proxmox
    std::vector<std::uint32_t> name_pos;
    for (const auto &d : devices_)
        name_pos.push_back(add_blob(bytes_of(std::string_view(d->name.c_str(), d->name.size() + 1))));
    // an archive without any blob still needs a blob area for its dummy byte
    if (blobs_.empty())
        blobs_.resize(kBlobAllocationUnit, 0);

    std::size_t header_size = kHeaderFixedSize + blobs_.size();
    std::vector<std::uint8_t> h(header_size, 0);
    std::memcpy(&h[header::kMagicOffset], kMagic, sizeof kMagic);
    store_be32(&h[header::kVersionOffset], kVersion);
    std::memcpy(&h[header::kUuidOffset], options_.uuid.data(), options_.uuid.size());
    std::int64_t ctime = options_.ctime ? *options_.ctime : std::int64_t(std::time(nullptr));
    store_be64(&h[header::kCtimeOffset], static_cast<std::uint64_t>(ctime));
    store_be32(&h[header::kBlobBufferOffsetOffset], kHeaderFixedSize);
    store_be32(&h[header::kBlobBufferSizeOffset], static_cast<std::uint32_t>(blob_used_));
    store_be32(&h[header::kHeaderSizeOffset], static_cast<std::uint32_t>(header_size));
    for (std::size_t i = 0; i < configs_.size(); i++) {
        store_be32(&h[header::kConfigNamesOffset + 4 * i], configs_[i].first);
        store_be32(&h[header::kConfigDataOffset + 4 * i], configs_[i].second);
    }
    for (std::size_t i = 0; i < devices_.size(); i++) {
        std::uint8_t *entry = &h[header::kDeviceInfoOffset + (i + 1) * header::kDeviceInfoSize];
        store_be32(entry + header::kDeviceNameOffset, name_pos[i]);
        store_be64(entry + header::kDeviceSizeOffset, devices_[i]->size);
    }
    std::memcpy(&h[kHeaderFixedSize], blobs_.data(), blobs_.size());
    Md5Digest digest = md5(h.data(), h.size());
    std::memcpy(&h[header::kMd5Offset], digest.data(), digest.size());
    write_out(h.data(), h.size());
}

void Writer::write_out(const std::uint8_t *data, std::size_t len)
{
    try {
        write_all(fd_, data, len, "vma archive write failed");
    } catch (const Error &e) {
        fail(e.what());
    }
}

void Writer::flush_extent()
{
    std::uint8_t *h = extent_.get();
    std::memcpy(h + extent::kMagicOffset, kExtentMagic, sizeof kExtentMagic);
    store_be16(h + extent::kReservedOffset, 0);
    store_be16(h + extent::kBlockCountOffset, static_cast<std::uint16_t>(payload_blocks_));
    std::memcpy(h + extent::kUuidOffset, options_.uuid.data(), options_.uuid.size());
    std::memset(h + extent::kMd5Offset, 0, sizeof(Md5Digest));
    Md5Digest digest = md5(h, kExtentHeaderSize);
    std::memcpy(h + extent::kMd5Offset, digest.data(), digest.size());
    try {
        writev_all(fd_, payload_.data(), static_cast<int>(payload_.size()), "vma archive write failed");
    } catch (const Error &e) {
        fail(e.what());
    }
    std::memset(h + extent::kBlockInfoOffset, 0, kSlotsPerExtent * 8);
    extent_used_ = kExtentHeaderSize;
    payload_.resize(1);
    payload_[0] = {h, kExtentHeaderSize};
    payload_blocks_ = 0;
    slots_used_ = 0;
}

void Writer::append_payload(const std::uint8_t *block)
{
    struct iovec &last = payload_.back();
    // the header entry is never extended: it is rewritten after each flush
    if (payload_.size() > 1 && static_cast<std::uint8_t *>(last.iov_base) + last.iov_len == block)
        last.iov_len += kBlockSize;
    else
        payload_.push_back({const_cast<std::uint8_t *>(block), kBlockSize});
    payload_blocks_++;
}

void Writer::settle()
{
    check_usable();
    std::uint8_t *own_begin = extent_.get(), *own_end = own_begin + kMaxExtentSize;
    for (std::size_t i = 1; i < payload_.size(); i++) {
        auto *base = static_cast<std::uint8_t *>(payload_[i].iov_base);
        if (base >= own_begin && base < own_end)
            continue;
        std::uint8_t *copy = own_begin + extent_used_;
        std::memcpy(copy, base, payload_[i].iov_len);
        extent_used_ += payload_[i].iov_len;
        payload_[i].iov_base = copy;
    }
}

void Writer::write_cluster(DeviceId dev, std::uint32_t cluster, const std::uint8_t *data)
{
    store_cluster(dev, cluster, data, false);
}

void Writer::write_cluster_in_place(DeviceId dev, std::uint32_t cluster, const std::uint8_t *data)
{
    store_cluster(dev, cluster, data, true);
}

void Writer::store_cluster(DeviceId dev, std::uint32_t cluster, const std::uint8_t *data, bool in_place)
{
    check_usable();
    Device &d = device(dev);
    if (d.vmstate) {
        if (cluster != d.next_vmstate_cluster)
            fail("vma_writer_write: non sequential vmstate write");
        d.next_vmstate_cluster++;
    } else if (cluster >= d.clusters) {
        fail("vma_writer_write: cluster number too big");
    } else if (!d.written.insert(cluster)) {
        fail("vma_writer_write: duplicated cluster " + std::to_string(cluster) + " for stream " +
             d.name);
    }
    if (!header_written_)
        write_header();
    if (slots_used_ >= kWriterSlotsPerExtent)
        flush_extent();

    std::uint64_t offset = std::uint64_t(cluster) * kClusterSize;
    // vmstate clusters are whole; a disk's last cluster may end past its size
    std::uint64_t limit = d.vmstate ? offset + kClusterSize : d.size;
    std::uint16_t mask = 0;
    std::uint64_t covered = 0, zero = 0;
    for (std::size_t j = 0; j < kBlocksPerCluster; j++, offset += kBlockSize) {
        if (offset >= limit)
            break;
        std::size_t in_range = static_cast<std::size_t>(std::min<std::uint64_t>(kBlockSize, limit - offset));
        covered += in_range;
        const std::uint8_t *block = data ? data + j * kBlockSize : nullptr;
        if (!block || is_zero(block, in_range)) {
            zero += in_range;
            continue;
        }
        mask = static_cast<std::uint16_t>(mask | 1u << j);
        // a block cut by the device end is stored zero-padded: always a copy
        if (in_place && in_range == kBlockSize) {
            append_payload(block);
            continue;
        }
        std::uint8_t *out = extent_.get() + extent_used_;
        std::memcpy(out, block, in_range);
        std::memset(out + in_range, 0, kBlockSize - in_range);
        extent_used_ += kBlockSize;
        append_payload(out);
    }
    BlockInfo info{mask, dev, cluster};
    store_be64(extent_.get() + extent::kBlockInfoOffset + 8 * slots_used_, info.encode());
    slots_used_++;
    d.zero_bytes.fetch_add(zero, std::memory_order_relaxed);
    d.transferred.fetch_add(covered, std::memory_order_relaxed);
}

void Writer::finish()
{
    check_usable();
    for (const auto &d : devices_) {
        if (d->vmstate)
            continue;
        std::uint64_t done = d->transferred.load();
        if (done != d->size || d->written.first_missing())
            fail("vma_writer_close: incomplete stream '" + d->name + "' (" + std::to_string(done) +
                 " != " + std::to_string(d->size) + ")");
    }
    if (!header_written_)
        write_header();
    flush_extent();
    finished_ = true;
}

std::uint64_t Writer::transferred(DeviceId dev) const
{
    return device(dev).transferred.load(std::memory_order_relaxed);
}

std::uint64_t Writer::zero_bytes(DeviceId dev) const
{
    return device(dev).zero_bytes.load(std::memory_order_relaxed);
}

std::uint64_t Writer::total_size() const
{
    std::uint64_t sum = 0;
    for (const auto &d : devices_)
        sum += d->size;
    return sum;
}

std::uint64_t Writer::total_transferred() const
{
    std::uint64_t sum = 0;
    for (const auto &d : devices_)
        sum += d->transferred.load(std::memory_order_relaxed);
    return sum;
}

std::uint64_t Writer::total_zero_bytes() const
{
    std::uint64_t sum = 0;
    for (const auto &d : devices_)
        sum += d->zero_bytes.load(std::memory_order_relaxed);
    return sum;
}

const std::string &Writer::device_name(DeviceId dev) const
{
    return device(dev).name;
}

std::uint64_t Writer::device_size(DeviceId dev) const
{
    return device(dev).size;
}

} // namespace engine::vma
