// Reads and checks a VMA archive from a stream (file, pipe, stdin), with
// memory bounded by one extent (~3.7 MiB) plus one bit per cluster seen.
//
// The constructor reads and checks the header; read_extents() then streams
// every extent to a ClusterSink after checking it completely. Every check of
// Proxmox's reader is made, and more: every offset and length is bounded
// before use, so no input makes the reader access memory out of bounds,
// hang, or hand the sink a block outside its device. Each rejection throws a
// FormatError naming the archive offset; I/O failures throw engine::Error.
#pragma once

#include "util/fd.h"
#include "util/uuid.h"
#include "vma/format.h"
#include "vma/format_error.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace engine::vma {

struct ConfigBlob {
    std::string name; // a file name as stored (Proxmox stores basenames)
    std::string data;
};

struct DeviceInfo {
    std::uint8_t id = 0; // 1..254
    std::string name;
    std::uint64_t size = 0; // bytes as recorded
    bool vmstate = false;
    // clusters a complete archive holds for this device (0 for vmstate,
    // whose cluster count is not recorded)
    std::uint64_t clusters() const { return vmstate ? 0 : clusters_for(size); }
};

// Receives the checked content of each extent in archive order.
class ClusterSink {
public:
    virtual ~ClusterSink() = default;
    // One cluster of a device: the 4 KiB blocks whose mask bit is set are
    // stored back to back at blocks (popcount(mask) * kBlockSize bytes), in
    // ascending bit order. Every stored block starts inside the device (a
    // vmstate cluster is never bounded). blocks stays valid until
    // extent_done().
    virtual void cluster(const DeviceInfo &dev, std::uint32_t cluster, std::uint16_t mask,
                         const std::uint8_t *blocks) = 0;
    // The extent's buffer is about to be reused.
    virtual void extent_done() {}
    // A sink that only counts (verify) answers false: the payload is then
    // still read from the stream (so read errors and truncation show) but
    // through a small cache-friendly buffer, and cluster() gets blocks ==
    // nullptr.
    virtual bool wants_data() const { return true; }
};

class Reader {
public:
    // Opens path ("-" for stdin) and reads the header. Throws Error("can't
    // open file X - ...") or a FormatError.
    static std::unique_ptr<Reader> open(const std::string &path);
    // Takes a stream positioned at the archive start and reads the header.
    explicit Reader(Fd fd);
    ~Reader();

    const Uuid &uuid() const { return uuid_; }
    std::int64_t ctime() const { return ctime_; }
    // Config blobs in table order.
    const std::vector<ConfigBlob> &configs() const { return configs_; }
    // Devices in id order (slots 1..254 with a size and a valid name).
    const std::vector<DeviceInfo> &devices() const { return devices_; }

    // Streams all extents to sink until end of file, then checks that every
    // cluster of every disk device was present (vmstate excepted). Call once.
    // Throws FormatError on the first problem (the sink has then received
    // only clusters of extents that passed every check).
    void read_extents(ClusterSink &sink);

    // During ClusterSink::cluster(): the archive offset of that cluster's
    // first stored block (its blocks lie there back to back), so a sink
    // that indexes the archive can read them later without a copy.
    std::uint64_t cluster_offset() const { return cluster_offset_; }

private:
    void read_header();
    std::size_t read_some(std::uint8_t *buf, std::size_t len, const char *what);
    bool read_extent(ClusterSink &sink);

    Fd fd_;
    std::uint64_t offset_ = 0; // archive bytes consumed so far
    std::uint64_t cluster_offset_ = 0;
    Uuid uuid_{};
    std::int64_t ctime_ = 0;
    std::vector<ConfigBlob> configs_;
    std::vector<DeviceInfo> devices_;
    // device id -> index into devices_, or -1
    int device_index_[kDeviceSlots];
    struct Tracking;
    std::unique_ptr<Tracking> tracking_;
};

} // namespace engine::vma
