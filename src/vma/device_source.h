// A disk `vma create` archives, opened the way Proxmox's vma opens it: a raw
// file or block device is read directly (image_source.h: SEEK_DATA hole
// skipping, large reads); a qcow2 file mostly from its file, where QEMU maps
// its clusters (mapped_image_source.h); an image in any other format, and
// every protocol filename (rbd:, iscsi://, nbd:, json:), through QEMU's block
// layer (qemu_image_source.h). Images are archived as their virtual disk, at
// their virtual size.
#pragma once

#include "vma/writer.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace engine::vma {

class DeviceSource {
public:
    virtual ~DeviceSource() = default;
    // The disk's size in bytes.
    virtual std::uint64_t size() const = 0;
    // Streams the whole disk into the writer as device dev, in order, with
    // bounded memory; progress, if set, is called between batches. Throws
    // Error on a read error.
    virtual void write_to(Writer &writer, DeviceId dev, const std::function<void()> &progress) = 0;
    // Releases the source after write_to; throws Error if that fails.
    virtual void finish() {}
};

// Opens path for reading. format nullopt probes, as QEMU does (a file with
// no known image header is raw). Throws Error with the reason, QEMU's own
// message for an image it cannot open.
std::unique_ptr<DeviceSource> open_device_source(const std::string &path,
                                                 const std::optional<std::string> &format);

} // namespace engine::vma
