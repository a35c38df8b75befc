#include "blockdev.h"

#include "qmp_error.h"
#include "schema.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>

namespace pve_sim {

using engine::Json;

namespace {

constexpr size_t kNodeNameSize = 32; // BlockDriverState.node_name, with its NUL

const std::vector<Parameter> &common_options()
{
    static const std::vector<Parameter> options = {
        {"driver", Type::string, true}, {"node-name", Type::string},  {"discard", Type::string},
        {"cache", Type::object},        {"read-only", Type::boolean}, {"auto-read-only", Type::boolean},
        {"force-share", Type::boolean}, {"detect-zeroes", Type::string},
    };
    return options;
}

std::vector<Parameter> with_common(std::vector<Parameter> specific)
{
    specific.insert(specific.end(), common_options().begin(), common_options().end());
    return specific;
}

// QEMU's id_wellformed(): a letter, then letters, digits, '-', '.', '_'.
bool well_formed(const std::string &name)
{
    if (name.empty() || !std::isalpha(static_cast<unsigned char>(name[0])))
        return false;
    return std::all_of(name.begin(), name.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_';
    });
}

// bdrv_assign_node_name() for a node about to join the graph (`pending`
// holds the nodes of this blockdev-add opened so far).
std::string assign_node_name(Vm &vm, const Json &options, const std::vector<Drive> &pending)
{
    if (!options.has("node-name"))
        return "#block" + std::to_string(vm.next_node++);
    std::string name = string_arg(options, "node-name");
    if (!well_formed(name))
        throw QmpError("Invalid node-name: '" + name + "'");
    if (vm.find_drive(name))
        throw QmpError("node-name=" + name + " is conflicting with a device id");
    bool pending_duplicate =
        std::any_of(pending.begin(), pending.end(), [&](const Drive &node) { return node.node_name == name; });
    if (vm.find_node(name) || pending_duplicate)
        throw QmpError("Duplicate nodes with node-name='" + name + "'");
    if (name.size() >= kNodeNameSize)
        throw QmpError("Node name too long");
    return name;
}

void check_cache(const Json &options)
{
    if (options.has("cache"))
        check_arguments(options.member("cache"), {{"direct", Type::boolean}, {"no-flush", Type::boolean}});
}

Drive open_file_node(Vm &vm, const Json &options, std::vector<Drive> &pending)
{
    check_arguments(options, with_common({{"filename", Type::string, true},
                                          {"aio", Type::string},
                                          {"aio-max-batch", Type::integer},
                                          {"locking", Type::string},
                                          {"drop-cache", Type::boolean}}));
    check_cache(options);
    Drive node;
    node.driver = "file";
    node.path = string_arg(options, "filename");
    node.read_only = boolean_arg(options, "read-only");
    int flags = (node.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
    engine::Fd image(::open(node.path.c_str(), flags));
    struct stat info;
    if (!image || ::fstat(image.get(), &info) != 0)
        throw QmpError("Could not open '" + node.path + "': " + std::strerror(errno));
    node.size = static_cast<uint64_t>(info.st_size);
    node.format = "raw";
    node.node_name = assign_node_name(vm, options, pending);
    return node;
}

const Drive &open_child(Vm &vm, const Json &reference, std::vector<Drive> &pending);

Drive open_format_node(Vm &vm, const std::string &driver, const Json &options, std::vector<Drive> &pending)
{
    if (driver == "raw") {
        check_arguments(options, with_common({{"file", Type::any, true}, {"offset", Type::integer}, {"size", Type::integer}}));
    } else {
        check_arguments(options, with_common({{"file", Type::any, true},
                                              {"backing", Type::any},
                                              {"lazy-refcounts", Type::boolean},
                                              {"discard-no-unref", Type::boolean},
                                              {"cache-size", Type::integer}}));
    }
    check_cache(options);
    // the protocol layer is opened before the format node gets its name
    const Drive child = open_child(vm, options.member("file"), pending);
    Drive node;
    node.driver = driver;
    node.file_child = child.node_name;
    node.path = child.path;
    node.format = driver;
    node.read_only = boolean_arg(options, "read-only");
    if (driver == "raw") {
        uint64_t offset = static_cast<uint64_t>(integer_arg(options, "offset", 0));
        if (offset > child.size) {
            throw QmpError("Offset (" + std::to_string(offset) +
                           ") cannot be greater than size of the containing file (" + std::to_string(child.size) + ")");
        }
        node.size = child.size - offset;
        if (options.has("size")) {
            uint64_t size = static_cast<uint64_t>(integer_arg(options, "size"));
            if (child.size - offset < size) {
                throw QmpError("The sum of offset (" + std::to_string(offset) + ") and size (" +
                               std::to_string(size) +
                               ") has to be smaller or equal to the  actual size of the containing file (" +
                               std::to_string(child.size) + ")");
            }
            if (size % 512 != 0)
                throw QmpError("Specified size is not multiple of 512");
            node.size = size;
        }
    } else {
        Drive image = vm.make_drive("", child.path, "qcow2", true); // reads the header's virtual size
        node.size = image.size;
    }
    node.node_name = assign_node_name(vm, options, pending);
    return node;
}

Drive open_node(Vm &vm, const Json &options, std::vector<Drive> &pending)
{
    if (!options.is_object())
        throw QmpError("Invalid parameter type for 'file', expected: BlockdevRef");
    std::string driver = options.has("driver") && options.member("driver").type() == json_type_string
                             ? string_arg(options, "driver")
                             : "";
    if (driver.empty())
        check_arguments(options, common_options()); // reports the missing or mistyped driver
    if (driver == "file")
        return open_file_node(vm, options, pending);
    if (driver == "raw" || driver == "qcow2")
        return open_format_node(vm, driver, options, pending);
    throw QmpError("Parameter 'driver' does not accept value '" + driver + "'");
}

// A 'file' member: an inline definition (a child the parent owns) or the
// name of an existing node.
const Drive &open_child(Vm &vm, const Json &reference, std::vector<Drive> &pending)
{
    if (reference.type() == json_type_string) {
        std::string name = reference.as_string();
        const Drive *node = vm.find_node(name);
        if (!node)
            throw QmpError("Cannot find device='" + name + "' nor node-name='" + name + "'");
        return *node;
    }
    pending.push_back(open_node(vm, reference, pending));
    return pending.back();
}

bool uses_node(const Vm &vm, const std::string &node_name)
{
    return std::any_of(vm.drives.begin(), vm.drives.end(),
                       [&](const Drive &node) { return node.file_child == node_name; });
}

void remove_node(Vm &vm, const std::string &node_name)
{
    auto node = std::find_if(vm.drives.begin(), vm.drives.end(),
                             [&](const Drive &drive) { return drive.node_name == node_name; });
    if (node == vm.drives.end())
        return;
    std::string child = node->file_child;
    vm.drives.erase(node);
    const Drive *child_node = child.empty() ? nullptr : vm.find_node(child);
    // an implicit child goes with its last parent
    if (child_node && !child_node->monitor_owned && child_node->id.empty() && !uses_node(vm, child))
        remove_node(vm, child);
}

} // namespace

void attach_as_blockdev(Vm &vm, const Drive &drive)
{
    std::string key = drive.id.starts_with("drive-") ? drive.id.substr(6) : drive.id;
    Drive file = drive;
    file.id.clear();
    file.qdev.clear();
    file.node_name = "e" + key;
    file.driver = "file";
    Drive format = drive;
    format.id.clear();
    format.qdev.clear();
    format.node_name = "f" + key;
    format.driver = drive.format;
    format.file_child = file.node_name;
    Drive top = drive;
    top.id.clear();
    // the device's QOM path names virtio disks, the id the others
    top.qdev = key.starts_with("virtio") ? "/machine/peripheral/" + key + "/virtio-backend" : key;
    top.node_name = drive.id;
    top.driver = "throttle";
    top.file_child = format.node_name;
    top.monitor_owned = true;
    vm.drives.push_back(top);
    vm.drives.push_back(format);
    vm.drives.push_back(file);
}

Json blockdev_add(Vm &vm, const Json &arguments)
{
    if (!arguments.is_object())
        check_arguments(arguments, common_options()); // QMP's text for arguments that are no object
    if (!arguments.has("node-name"))
        throw QmpError("'node-name' must be specified for the root node");
    std::vector<Drive> pending;
    Drive root = open_node(vm, arguments, pending);
    root.monitor_owned = true;
    vm.drives.push_back(root);
    for (Drive &child : pending)
        vm.drives.push_back(std::move(child));
    return Json::object();
}

Json blockdev_del(Vm &vm, const Json &arguments)
{
    check_arguments(arguments, {{"node-name", Type::string, true}});
    std::string name = string_arg(arguments, "node-name");
    const Drive *node = vm.find_node(name);
    if (!node)
        throw QmpError("Failed to find node with node-name='" + name + "'");
    if (!node->id.empty() || !node->qdev.empty())
        throw QmpError("Node " + name + " is in use");
    if (!node->monitor_owned)
        throw QmpError("Node " + name + " is not owned by the monitor");
    if (uses_node(vm, name))
        throw QmpError("Block device " + name + " is in use");
    remove_node(vm, name);
    return Json::object();
}

Json query_named_block_nodes(const Vm &vm)
{
    Json nodes = Json::array();
    for (const Drive &drive : vm.drives) {
        Json image = Json::object();
        image.set("filename", Json::string(drive.path));
        image.set("format", Json::string(drive.driver));
        image.set("virtual-size", Json::integer(static_cast<int64_t>(drive.size)));
        Json children = Json::array();
        if (!drive.file_child.empty()) {
            Json child = Json::object();
            child.set("child", Json::string("file"));
            child.set("node-name", Json::string(drive.file_child));
            children.append(child);
        }
        Json node = Json::object();
        node.set("node-name", Json::string(drive.node_name));
        node.set("drv", Json::string(drive.driver));
        node.set("ro", Json::boolean(drive.read_only));
        node.set("file", Json::string(drive.path));
        node.set("encrypted", Json::boolean(false));
        node.set("image", image);
        node.set("children", children);
        nodes.append(node);
    }
    return nodes;
}

} // namespace pve_sim
