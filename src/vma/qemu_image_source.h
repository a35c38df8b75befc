// A disk read through QEMU's block layer for `vma create`: a private,
// read-only qemu-nbd export (nbd/qemu_nbd_export.h) streamed with
// nbd::ClusterStream. Only what the image holds is read: clusters the
// export's allocation map (NBD block status) reports as zeros - unallocated
// or zero clusters of a qcow2 and its backing chain - are archived as zero
// without a read.
#pragma once

#include "nbd/qemu_nbd_export.h"
#include "vma/device_source.h"

namespace engine::vma {

class QemuImageSource final : public DeviceSource {
public:
    // format nullopt lets QEMU probe. Throws Error(<QEMU's message>), or the
    // message that qemu-nbd is missing.
    QemuImageSource(const std::string &filename, const std::optional<std::string> &format);
    ~QemuImageSource() override;

    std::uint64_t size() const override { return connection_->size(); }
    // A read after qemu-nbd died throws Error("read error on 'F' - qemu-nbd
    // was killed by signal N").
    void write_to(Writer &writer, DeviceId dev, const std::function<void()> &progress) override;
    // Disconnects and waits for qemu-nbd to exit.
    void finish() override;

    // Bytes requested from the export by write_to (clusters reported as
    // zeros cost nothing).
    std::uint64_t bytes_read() const { return bytes_read_; }

private:
    std::unique_ptr<nbd::QemuNbdExport> server_;
    std::unique_ptr<nbd::Connection> connection_;
    std::uint64_t bytes_read_ = 0;
};

} // namespace engine::vma
