#include "cli/drive_list.h"

#include "util/error.h"

namespace vma_cli {

void DriveList::add(const std::string &comma_list)
{
    given_ = true;
    std::size_t start = 0;
    for (;;) {
        std::size_t comma = comma_list.find(',', start);
        std::string name = comma_list.substr(start, comma == std::string::npos ? comma : comma - start);
        if (name.empty())
            throw engine::Error("empty device name in drive list '" + comma_list + "'");
        names_.insert(name);
        if (comma == std::string::npos)
            break;
        start = comma + 1;
    }
}

void DriveList::check_known(const engine::vma::Reader &reader) const
{
    for (const auto &name : names_) {
        bool found = false;
        for (const auto &dev : reader.devices())
            found = found || dev.name == name;
        if (!found)
            throw engine::Error("device '" + name + "' not found in archive");
    }
}

bool DriveList::selects(const engine::vma::DeviceInfo &dev) const
{
    return !given_ || names_.count(dev.name);
}

} // namespace vma_cli
