// Streams a VMA archive to a file descriptor, byte-compatible with the
// archives Proxmox's QEMU and `vma create` write.
//
// Use: construct on an fd, add config blobs and register every device, then
// write each device's clusters (any order, each exactly once; vmstate in
// order), then finish(). The header is written on the first write_cluster()
// or finish(); registering after that is an error.
//
//     engine::Fd out(open("backup.vma", O_WRONLY | O_CREAT | O_EXCL, 0644));
//     engine::vma::Writer w(out.get());
//     w.add_config("/etc/pve/qemu-server/100.conf", config_text);
//     auto dev = w.add_device("drive-scsi0", disk_size);
//     for (uint32_t c = 0; c < engine::vma::clusters_for(disk_size); c++)
//         w.write_cluster(dev, c, cluster_data_or_nullptr);
//     w.finish();
//
// Errors: every call throws engine::Error with a message on misuse or an I/O
// failure (short write, ENOSPC, EPIPE); after a throw the writer is failed and
// every further call except the progress getters throws the first error
// again. The writer never closes or unlinks anything: removing a partial
// output is the caller's job (see output.h).
//
// Threads: one thread drives the writer; the progress getters may be called
// from any thread at any time (they read atomic counters).
#pragma once

#include "util/uuid.h"
#include "vma/cluster_set.h"
#include "vma/format.h"

#include <atomic>
#include <cstdint>
#include <ctime>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <sys/uio.h>
#include <vector>

namespace engine::vma {

using DeviceId = std::uint8_t;

struct WriterOptions {
    // The archive UUID, stored in the header and every extent.
    Uuid uuid = generate_uuid();
    // The header's ctime; unset means time(nullptr) when the header is written.
    std::optional<std::int64_t> ctime;
};

class Writer {
public:
    // fd must remain open while the Writer is in use; it is written with
    // plain blocking write(2)/writev(2) calls of up to one extent (~3.7 MiB)
    // each.
    explicit Writer(int fd, WriterOptions options = {});
    ~Writer();
    Writer(const Writer &) = delete;
    Writer &operator=(const Writer &) = delete;

    // Adds a config blob stored under the basename of name (as Proxmox does).
    // At most 256 configs; data at most 65535 bytes.
    void add_config(std::string_view name, std::span<const std::uint8_t> data);
    void add_config(std::string_view name, std::string_view data);

    // Registers a device (up to 254; name unique, non-empty, no NUL) and
    // returns its id (1, 2, ... in order). size > 0 is recorded rounded up to
    // a multiple of 512 bytes, as Proxmox's reader drops a partial sector;
    // the device then has clusters_for(recorded size) clusters. The name
    // "vmstate" makes it the RAM-state stream: its clusters must come in
    // order 0, 1, 2, ... and are not bounded by the size.
    DeviceId add_device(std::string_view name, std::uint64_t size);

    // Writes one cluster of a device. data points to kClusterSize bytes, or
    // is nullptr for a cluster known to be all zeros (stored without data).
    // Zero 4 KiB blocks are omitted; bytes past the device end are never
    // stored (they need not be zero in data). Each cluster exactly once.
    void write_cluster(DeviceId dev, std::uint32_t cluster, const std::uint8_t *data);

    // As write_cluster, but the stored blocks are not copied: the writer
    // keeps pointers into data and writes them with writev(2) when the
    // extent is written, so data must stay unchanged until then, or until
    // settle(). An extent holds at most kWriterSlotsPerExtent clusters and
    // is written at the latest by the call for the kWriterSlotsPerExtent-th
    // cluster after this one: the memory of the last kWriterSlotsPerExtent
    // clusters written is all the writer may still point into. The archive
    // is the same as with write_cluster.
    void write_cluster_in_place(DeviceId dev, std::uint32_t cluster, const std::uint8_t *data);

    // Copies the blocks of the pending extent that still point into callers'
    // memory into the writer's own buffer, so that memory may be reused.
    void settle();

    // Writes the last extent (an empty one if nothing is pending, so an
    // archive without devices is header + one empty extent) and checks that
    // every device got all its clusters. Does not close the fd.
    void finish();

    // --- progress (any thread) ---------------------------------------------
    // Bytes of the device covered by written clusters (the tail of the last
    // cluster past the device end does not count), and of those the bytes
    // that were zero. For a complete device transferred == recorded size.
    std::uint64_t transferred(DeviceId dev) const;
    std::uint64_t zero_bytes(DeviceId dev) const;
    // Sums over all devices.
    std::uint64_t total_size() const;
    std::uint64_t total_transferred() const;
    std::uint64_t total_zero_bytes() const;

    // --- what was registered ------------------------------------------------
    const Uuid &uuid() const { return options_.uuid; }
    unsigned device_count() const { return static_cast<unsigned>(devices_.size()); }
    const std::string &device_name(DeviceId dev) const;
    // The recorded (512-rounded) size.
    std::uint64_t device_size(DeviceId dev) const;

private:
    struct Device {
        std::string name;
        std::uint64_t size;
        std::uint64_t clusters;
        bool vmstate;
        std::uint32_t next_vmstate_cluster = 0;
        ClusterSet written;
        std::atomic<std::uint64_t> transferred{0};
        std::atomic<std::uint64_t> zero_bytes{0};
    };

    Device &device(DeviceId dev);
    const Device &device(DeviceId dev) const;
    void check_usable() const;
    void check_registration_open(const char *what) const;
    std::uint32_t add_blob(std::span<const std::uint8_t> data);
    std::size_t projected_header_size(std::size_t extra_blob_bytes) const;
    void write_header();
    void flush_extent();
    void write_out(const std::uint8_t *data, std::size_t len);
    void store_cluster(DeviceId dev, std::uint32_t cluster, const std::uint8_t *data, bool in_place);
    void append_payload(const std::uint8_t *block);
    [[noreturn]] void fail(const std::string &message);

    int fd_;
    WriterOptions options_;
    std::string error_;
    bool header_written_ = false;
    bool finished_ = false;

    // The blob buffer as Proxmox builds it: byte 0 unused, allocation grown
    // in whole sectors.
    std::vector<std::uint8_t> blobs_;
    std::size_t blob_used_ = 1;
    std::vector<std::pair<std::uint32_t, std::uint32_t>> configs_; // name, data
    std::vector<std::unique_ptr<Device>> devices_;                 // dev id - 1

    // The extent being filled. extent_ holds its header, then the blocks
    // copied in; payload_ lists every stored block in archive order (copied
    // ones and ones still in callers' memory), adjacent blocks merged, after
    // a first entry reserved for the header.
    std::unique_ptr<std::uint8_t[]> extent_;
    std::size_t extent_used_ = kExtentHeaderSize;
    std::vector<struct iovec> payload_;
    std::size_t payload_blocks_ = 0;
    std::size_t slots_used_ = 0;
};

} // namespace engine::vma
