// Which way vma opens a device: itself (a raw file or block device) or
// through QEMU's block layer (any other format, and filenames QEMU opens by
// protocol). The probe recognizes the image headers QEMU's own format probing
// knows, so that a file QEMU would take for raw is exactly a file vma reads
// and writes directly.
#pragma once

#include <optional>
#include <string>

namespace engine::vma {

// Whether QEMU reads filename as "PROTOCOL:..." (rbd:, nbd:, iscsi://, json:
// and so on): a colon before the first slash, as QEMU's path_has_protocol.
bool has_protocol_prefix(const std::string &filename);

// The QEMU driver whose header the file or block device at path starts with
// ("qcow2", "vmdk", "vdi", ...), "raw" if none does, or nullopt if it cannot
// be read (the caller's own open then reports why).
std::optional<std::string> probe_image_format(const std::string &path);

} // namespace engine::vma
