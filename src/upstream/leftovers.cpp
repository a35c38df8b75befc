#include "upstream/leftovers.h"

#include "qmp/error.h"
#include "upstream/node_names.h"
#include "upstream/qmp_args.h"
#include "util/error.h"

#include <unistd.h>

#include <map>
#include <vector>

namespace engine::upstream {

namespace {

struct Qemu {
    const qmp::Peer &peer;

    Json operator()(const std::string &execute, const Json &arguments = Json::object()) const
    {
        return qmp::command(peer, execute, arguments);
    }
};

// The node `parent` reads through its "file" child: under a left-over
// filter the device's original node, under a fleecing node its image file's
// node (whose own file name is plain, where the fleecing node's may be a
// "json:{...}" description). Only QEMU's debug graph names a node's children.
std::string file_child(const Qemu &qemu, const std::string &parent)
{
    Json graph = qemu("x-debug-query-block-graph");
    Json nodes = graph.member("nodes");
    std::map<int64_t, std::string> names;
    int64_t parent_id = -1;
    for (size_t i = 0; i < nodes.size(); i++) {
        names[nodes.at(i).member("id").as_integer()] = nodes.at(i).member("name").as_string();
        if (nodes.at(i).member("name").as_string() == parent)
            parent_id = nodes.at(i).member("id").as_integer();
    }
    Json edges = graph.member("edges");
    for (size_t i = 0; i < edges.size(); i++) {
        Json edge = edges.at(i);
        if (edge.member("parent").as_integer() == parent_id && edge.member("name").as_string() == "file")
            return names.at(edge.member("child").as_integer());
    }
    throw Error("unable to find the node under the left-over node '" + parent + "'");
}

std::string base_name(const std::string &path)
{
    return path.substr(path.rfind('/') + 1);
}

} // namespace

void remove_leftovers(const qmp::Peer &peer, const std::function<void(const std::string &)> &log)
{
    const Qemu qemu{peer};
    Json block = qemu("query-block");
    Json node_list = qemu("query-named-block-nodes", object({{"flat", Json::boolean(true)}}));
    Json exports = qemu("query-block-exports");

    std::map<std::string, std::string> node_files; // node-name -> its image file
    for (size_t i = 0; i < node_list.size(); i++)
        node_files[node_list.at(i).member("node-name").as_string()] = node_list.at(i).member("file").as_string();

    std::vector<std::string> found;
    bool server_is_ours = false;
    for (size_t i = 0; i < exports.size(); i++) {
        std::string id = exports.at(i).member("id").as_string();
        if (id.rfind(names::nbd_export(""), 0) == 0) {
            found.push_back("export " + id);
            server_is_ours = true;
        }
    }

    struct Drive {
        std::string id;
        std::string qom_path; // set when the device is still on its filter
    };
    std::vector<Drive> drives;
    for (size_t i = 0; i < block.size(); i++) {
        Json entry = block.at(i);
        Drive drive{names::drive_id(entry.member("device").as_string()), ""};
        const std::string &id = drive.id;
        for (const std::string &node : {names::access_node(id), names::filter_node(id), names::fleece_node(id)})
            if (node_files.count(node))
                found.push_back("node " + node);
        server_is_ours = server_is_ours || node_files.count(names::access_node(id));
        if (entry.member("inserted").member("node-name").is_string() &&
            entry.member("inserted").member("node-name").as_string() == names::filter_node(id) &&
            entry.member("qdev").is_string())
            drive.qom_path = names::device_qom_path(entry.member("qdev").as_string());
        drives.push_back(drive);
    }
    if (found.empty())
        return;

    std::string list;
    for (const std::string &item : found)
        list += (list.empty() ? "" : ", ") + item;
    if (log)
        log("removing what an earlier backup left in QEMU: " + list);

    if (server_is_ours) {
        try {
            qemu("nbd-server-stop"); // deletes the exports too
        } catch (const qmp::CommandFailed &e) {
            // killed between adding its nodes and starting the server
            if (e.kind() != qmp::Error::Kind::command)
                throw;
        }
    }
    for (const Drive &drive : drives) {
        const std::string &id = drive.id;
        auto remove_node = [&](const std::string &node) {
            if (node_files.count(node))
                qemu("blockdev-del", object({{"node-name", str(node)}}));
        };
        remove_node(names::access_node(id));
        if (!drive.qom_path.empty())
            qemu("qom-set", object({{"path", str(drive.qom_path)},
                                    {"property", str("drive")},
                                    {"value", str(file_child(qemu, names::filter_node(id)))}}));
        remove_node(names::filter_node(id));
        if (node_files.count(names::fleece_node(id))) {
            std::string image = node_files.at(file_child(qemu, names::fleece_node(id)));
            remove_node(names::fleece_node(id));
            if (base_name(image) == names::temp_image(id))
                unlink(image.c_str());
        }
    }
}

} // namespace engine::upstream
