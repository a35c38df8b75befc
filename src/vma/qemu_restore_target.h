// A restore target opened through QEMU's block layer: any format QEMU writes
// (qcow2, vmdk, ...) and any filename it opens (rbd:..., iscsi://...,
// nbd:..., json:{...}), served by a private qemu-nbd (nbd/qemu_nbd_export.h)
// and written with libnbd. Zero ranges (a "1:" map line) become NBD
// write-zeroes, so QEMU records them as zero clusters instead of writing
// zero bytes.
//
// A qcow2 image file whose clusters are allocated already (Proxmox creates
// qcow2 volumes with preallocation=metadata) is written straight into the
// file, at the host offsets QEMU maps them to (image_host_map.h), as fast as
// a raw file; qemu-nbd is started only for the first write to anything else,
// such as an unallocated cluster, which QEMU has to allocate.
#pragma once

#include "vma/restore_target.h"

#include <memory>
#include <optional>
#include <string>

namespace engine::vma {

// Opens filename for writing; format nullopt lets QEMU probe. cache maps
// onto qemu-nbd's --cache (none and directsync also take --aio=native);
// nullopt keeps QEMU's default (writeback). finish() flushes (unless
// cache is unsafe), disconnects and waits for qemu-nbd to close the image.
// Throws Error("can't open file F - <QEMU's message>"), or the message that
// qemu-nbd is missing (for a mapped qcow2 from the write that starts
// qemu-nbd); a write after qemu-nbd died throws
// Error("write to F failed - qemu-nbd was killed by signal N").
std::unique_ptr<RestoreTarget> open_qemu_target(const std::string &filename,
                                                const std::optional<std::string> &format,
                                                std::optional<CacheMode> cache, bool write_zeroes);

} // namespace engine::vma
