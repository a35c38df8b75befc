#include "vm.h"

#include "qmp_error.h"
#include "util/endian.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace pve_sim {

const Drive *Vm::find_drive(const std::string &id) const
{
    for (const Drive &drive : drives) {
        if (drive.id == id)
            return &drive;
    }
    return nullptr;
}

const Drive *Vm::find_node(const std::string &node_name) const
{
    for (const Drive &drive : drives) {
        if (drive.node_name == node_name)
            return &drive;
    }
    return nullptr;
}

const Drive *Vm::find_device(const std::string &name) const
{
    if (const Drive *drive = find_drive(name))
        return drive;
    const Drive *node = find_node(name);
    if (node && node->driver == "throttle")
        return find_node(node->file_child);
    return node;
}

Drive Vm::make_drive(const std::string &id, const std::string &path, const std::string &format, bool read_only)
{
    engine::Fd image(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!image)
        throw QmpError("Could not open '" + path + "': " + std::strerror(errno));
    Drive drive;
    drive.id = id;
    drive.node_name = "#block" + std::to_string(next_node++);
    drive.driver = format;
    drive.path = path;
    drive.format = format;
    drive.read_only = read_only;
    if (format == "qcow2") {
        // the virtual size sits big-endian at offset 24 of the qcow2 header
        uint8_t header[32];
        if (::pread(image.get(), header, sizeof(header), 0) != sizeof(header) || std::memcmp(header, "QFI\xfb", 4) != 0)
            throw QmpError("Image is not in qcow2 format");
        drive.size = engine::load_be64(header + 24);
    } else {
        struct stat info;
        if (::fstat(image.get(), &info) != 0)
            throw QmpError("Could not open '" + path + "': " + std::strerror(errno));
        drive.size = static_cast<uint64_t>(info.st_size);
    }
    return drive;
}

} // namespace pve_sim
