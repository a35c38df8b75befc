// The names the snapshot gives its QEMU objects, one set per drive. They are
// fixed, not unique per run, so that what a killed backup left behind can be
// recognized and removed by the next one (leftovers.h).
#pragma once

#include <string>

namespace engine::upstream::names {

// "drive-scsi0" -> "scsi0"
inline std::string drive_id(const std::string &device)
{
    return device.rfind("drive-", 0) == 0 ? device.substr(6) : device;
}

inline std::string fleece_node(const std::string &id) { return "fleece-" + id; }
inline std::string filter_node(const std::string &id) { return "cbw-" + id; }
inline std::string access_node(const std::string &id) { return "snap-" + id; }
inline std::string nbd_export(const std::string &id) { return "vzdump-" + id; }
// a temp fleecing image's file name, in the task's work dir
inline std::string temp_image(const std::string &id) { return "fleece-" + id + ".raw"; }

// The guest device's QOM path from query-block's "qdev" (an id or a path).
inline std::string device_qom_path(const std::string &qdev)
{
    return qdev[0] == '/' ? qdev : "/machine/peripheral/" + qdev;
}

} // namespace engine::upstream::names
