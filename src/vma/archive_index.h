// Where every cluster of an archive's devices lies in the archive, so the
// archive can be read at random without restoring it (the nbdkit plugin).
//
// build() reads the archive once through the Reader, which makes every check
// `vma verify` makes: a damaged or incomplete archive (a missing cluster
// included) is rejected here with the reader's FormatError, so a built index
// covers every cluster of every disk.
//
// Memory stays bounded whatever the disk size: the index is one 8-byte entry
// per 64 KiB cluster (1/8192 of the device size: 4 MiB for 32 GiB, 512 MiB
// for 4 TiB) in an unlinked temporary file, written through one 4 KiB page
// and read back with pread. The build itself holds the reader's 128 KiB scan
// buffer and one bit per cluster of duplicate tracking (64 KiB per 32 GiB).
#pragma once

#include "util/fd.h"
#include "vma/reader.h"

#include <cstdint>
#include <string>
#include <vector>

namespace engine::vma {

// One cluster: its stored 4 KiB blocks (mask bit j = block j) lie back to
// back from archive offset `offset` in ascending bit order; the other blocks
// read as zeros.
struct ClusterEntry {
    std::uint64_t offset = 0;
    std::uint16_t mask = 0;
};

// A device as the index serves it.
struct IndexedDevice {
    DeviceInfo info;
    // bytes served: the recorded size for a disk; for vmstate the clusters
    // stored, as `vma extract` writes vmstate.bin
    std::uint64_t size = 0;
    std::uint64_t clusters = 0;
    std::uint64_t first_entry = 0; // of this device in the index file
};

class ArchiveIndex {
public:
    // Reads all extents of reader (call before anything else reads them) and
    // writes the index into an unlinked file created in temp_dir. Throws the
    // reader's FormatError for a damaged archive, Error for I/O failures
    // (e.g. "can't write the archive index - No space left on device").
    ArchiveIndex(Reader &reader, const std::string &temp_dir);

    // Devices in id order.
    const std::vector<IndexedDevice> &devices() const { return devices_; }

    // Entries of clusters first .. first + count - 1 of dev (all < its
    // cluster count). Thread-safe (pread).
    void entries(const IndexedDevice &dev, std::uint64_t first, std::size_t count,
                 ClusterEntry *out) const;

    // The file entry, as stored: offset in the upper 48 bits, mask below.
    static constexpr std::uint64_t kMaxArchiveOffset = (std::uint64_t(1) << 48) - 1;

private:
    class Builder;
    std::vector<IndexedDevice> devices_;
    Fd file_;
};

} // namespace engine::vma
