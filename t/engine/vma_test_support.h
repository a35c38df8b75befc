// Helpers shared by the VMA tests: temporary directories, files, images and
// in-memory archives.
#pragma once

#include "temp_dir.h"
#include "util/fd.h"
#include "util/uuid.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace vma_test {

using Bytes = std::vector<std::uint8_t>;

using engine_test::TempDir;

Bytes read_file(const std::string &path);
void write_file(const std::string &path, const Bytes &data);

// An anonymous in-memory file holding data, positioned at its start.
engine::Fd memory_file(const Bytes &data);

// Deterministic pseudo-random bytes (never a zero 4 KiB block in practice).
Bytes random_bytes(std::size_t len, std::uint32_t seed);

// The offset of the first byte where a and b differ (or where the shorter
// ends), -1 when equal: keeps failure output short.
long first_difference(const Bytes &a, const Bytes &b);

// A fixed UUID for byte-exact comparisons.
engine::Uuid fixed_uuid();

// Writes an archive of the given images (name, bytes) and configs with the
// library's Writer and returns its bytes. Fixed UUID and ctime.
struct Image {
    std::string name;
    Bytes data;
};
struct Config {
    std::string name;
    std::string data;
};
Bytes write_archive(const std::vector<Image> &images, const std::vector<Config> &configs = {},
                    std::int64_t ctime = 1700000000);

// Reads an archive completely through Reader and Restorer-like sink and
// returns each device's restored bytes by name (vmstate: the clusters read).
std::map<std::string, Bytes> read_archive(const Bytes &archive);

// The reason the reader rejects an archive ("" if it accepts it and all its
// clusters); an exception other than FormatError yields "unexpected: ...".
std::string rejection(const Bytes &archive);

// Damage tools: recompute the header MD5 / an extent header's MD5 after an
// edit, and find where the extents start.
void fix_header_md5(Bytes &archive);
void fix_extent_md5(Bytes &archive, std::size_t extent_offset);
std::vector<std::size_t> extent_offsets(const Bytes &archive);

} // namespace vma_test
