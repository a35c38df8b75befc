#include "vma/image_format_probe.h"

#include "util/fd.h"

#include <cstring>
#include <fcntl.h>
#include <string_view>
#include <unistd.h>

namespace engine::vma {

namespace {

// The first bytes of each format QEMU probes by content, and where they are.
struct Signature {
    const char *driver;
    std::size_t offset;
    std::string_view magic;
};

using namespace std::string_view_literals;

constexpr Signature kSignatures[] = {
    {"qcow2", 0, "QFI\xfb"sv}, // a version-1 header is "qcow", below
    {"vmdk", 0, "KDMV"sv},
    {"vmdk", 0, "COWD"sv},
    {"vmdk", 0, "# Disk DescriptorFile"sv},
    {"vdi", 64, "\x7f\x10\xda\xbe"sv},
    {"vhdx", 0, "vhdxfile"sv},
    {"vpc", 0, "conectix"sv},
    {"qed", 0, "QED\0"sv},
    {"luks", 0, "LUKS\xba\xbe"sv},
    {"parallels", 0, "WithoutFreeSpace"sv},
    {"parallels", 0, "WithouFreSpacExt"sv},
    {"bochs", 0, "Bochs Virtual HD Image"sv},
    {"cloop", 0, "#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0"sv},
};

constexpr std::size_t kProbeBytes = 512;

} // namespace

bool has_protocol_prefix(const std::string &filename)
{
    std::size_t stop = filename.find_first_of(":/");
    return stop != std::string::npos && filename[stop] == ':';
}

std::optional<std::string> probe_image_format(const std::string &path)
{
    Fd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd)
        return std::nullopt;
    unsigned char header[kProbeBytes];
    ssize_t got = pread(fd.get(), header, sizeof(header), 0);
    if (got < 0)
        return std::nullopt;
    std::string_view bytes(reinterpret_cast<const char *>(header), static_cast<std::size_t>(got));
    for (const Signature &s : kSignatures) {
        if (bytes.size() < s.offset + s.magic.size() || bytes.substr(s.offset, s.magic.size()) != s.magic)
            continue;
        if (std::string_view(s.driver) == "qcow2" && bytes.size() >= 8 && header[4] == 0 &&
            header[5] == 0 && header[6] == 0 && header[7] == 1)
            return "qcow";
        return s.driver;
    }
    return "raw";
}

} // namespace engine::vma
