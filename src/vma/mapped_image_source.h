// A qcow2 disk `vma create` reads mostly by itself: the data of clusters
// allocated in the image file is read with pread at the host offsets QEMU
// reports (vma/image_host_map.h), as fast as a raw image; zero and
// unallocated clusters are archived as zero without a read; only what lies
// elsewhere (compressed clusters, data of a backing file) is read through
// QEMU's block layer, a private read-only qemu-nbd started only if the map
// has such parts.
#pragma once

#include "nbd/connection.h"
#include "nbd/qemu_nbd_export.h"
#include "util/fd.h"
#include "vma/device_source.h"
#include "vma/image_host_map.h"
#include "vma/image_source.h"

#include <memory>
#include <string>

namespace engine::vma {

class MappedImageSource final : public DeviceSource, private ClusterReader {
public:
    // map is the image's ImageHostMap for Access::Read. Throws Error("can't
    // open image 'F' - ..."), or QEMU's message.
    MappedImageSource(const std::string &path, ImageHostMap map);
    ~MappedImageSource() override;

    std::uint64_t size() const override { return map_.virtual_size(); }
    void write_to(Writer &writer, DeviceId dev, const std::function<void()> &progress) override;
    // Disconnects from qemu-nbd, if it was needed, and waits for it to exit.
    void finish() override;

    // Bytes read through QEMU (not from the file itself).
    std::uint64_t bytes_read_through_qemu() const { return qemu_bytes_; }

private:
    const std::string &name() const override { return path_; }
    void read_clusters(std::uint64_t first, std::size_t count, std::uint8_t *buf, bool *hole) override;
    void read_through_qemu(std::uint8_t *buf, std::size_t len, std::uint64_t offset);

    std::string path_;
    ImageHostMap map_;
    Fd fd_;
    std::unique_ptr<nbd::QemuNbdExport> server_;
    std::unique_ptr<nbd::Connection> connection_;
    std::uint64_t qemu_bytes_ = 0;
};

} // namespace engine::vma
