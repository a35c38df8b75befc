#include "upstream/snapshot.h"

#include "qmp/client.h"
#include "qmp/error.h"
#include "upstream/leftovers.h"
#include "upstream/node_names.h"
#include "upstream/qmp_args.h"
#include "util/error.h"

#include <unistd.h>

#include <exception>

namespace engine::upstream {

namespace {

// The QMP client's texts end in a newline; a log line does not.
std::string one_line(const std::exception &e)
{
    std::string text = e.what();
    while (!text.empty() && text.back() == '\n')
        text.pop_back();
    return text;
}

} // namespace

Snapshot::Snapshot(SnapshotOptions options) : options_(std::move(options))
{
    remove_leftovers(options_.peer, options_.log);
    Json block = qmp("query-block", Json::object());
    disks_.reserve(options_.disks.size());
    try {
        for (const DiskRequest &request : options_.disks) {
            Json entry;
            for (size_t i = 0; i < block.size(); i++)
                if (block.at(i).member("device").as_string() == request.device)
                    entry = block.at(i);
            Json inserted = entry.member("inserted");
            if (inserted.is_null())
                throw Error("drive '" + request.device + "' not found in QEMU");
            Disk &disk = disks_.emplace_back();
            disk.device = request.device;
            disk.id = names::drive_id(request.device);
            disk.original_node = inserted.member("node-name").as_string();
            disk.size = static_cast<std::uint64_t>(inserted.member("image").member("virtual-size").as_integer());
            std::string qdev = entry.member("qdev").is_string() ? entry.member("qdev").as_string() : "";
            if (!qdev.empty())
                disk.qom_path = names::device_qom_path(qdev);
            if (!disk.qom_path.empty())
                prepare_disk(disk, request);
        }
    } catch (...) {
        try {
            restore();
        } catch (const std::exception &e) {
            if (options_.log)
                options_.log(one_line(e));
        }
        throw;
    }
}

Snapshot::~Snapshot()
{
    try {
        restore();
    } catch (const std::exception &e) {
        if (options_.log)
            options_.log(one_line(e));
    }
}

Json Snapshot::qmp(const std::string &execute, const Json &arguments)
{
    return qmp::command(options_.peer, execute, arguments);
}

void Snapshot::prepare_disk(Disk &disk, const DiskRequest &request)
{
    if (request.fleecing_path.empty())
        disk.image.emplace(FleecingImage::create_temp(options_.work_dir + "/" + names::temp_image(disk.id), disk.size));
    else
        disk.image.emplace(FleecingImage::existing(request.fleecing_path, request.fleecing_format));
    Json fleece = object({{"driver", str(disk.image->format())},
                          {"node-name", str(names::fleece_node(disk.id))},
                          {"file", object({{"driver", str("file")}, {"filename", str(disk.image->path())}})}});
    // a storage may round a raw image up: QEMU must see the disk's own size
    if (disk.image->format() == "raw")
        fleece.set("size", Json::integer(static_cast<int64_t>(disk.size)));
    qmp("blockdev-add", fleece);
    disk.fleece_added = true;

    // when the fleecing image fails (e.g. full), the guest keeps writing and
    // the snapshot breaks: the backup fails, the VM's data is never at risk
    qmp("blockdev-add", object({{"driver", str("copy-before-write")},
                                {"node-name", str(names::filter_node(disk.id))},
                                {"file", str(disk.original_node)},
                                {"target", str(names::fleece_node(disk.id))},
                                {"on-cbw-error", str("break-snapshot")}}));
    disk.filter_added = true;
}

void Snapshot::set_device_node(const Disk &disk, const std::string &node)
{
    qmp("qom-set", object({{"path", str(disk.qom_path)}, {"property", str("drive")}, {"value", str(node)}}));
}

// One monitor session for the whole switch: QEMU serves one client per
// socket at a time, so no other command on it (e.g. an HMP write) can land
// between two devices' switches, and stop keeps the guest's I/O out.
void Snapshot::take()
{
    std::string execute;
    try {
        qmp::Client client(options_.peer.socket_path, options_.peer.vmid, {.timeout = std::chrono::seconds(60)});
        auto run = [&](const std::string &command, const Json &arguments) {
            execute = command;
            return client.execute(command, arguments);
        };
        bool running = run("query-status", Json::object()).member("running").as_boolean();
        if (running)
            run("stop", Json::object());
        std::exception_ptr failure;
        try {
            for (Disk &disk : disks_) {
                if (!disk.filter_added)
                    continue;
                run("qom-set", object({{"path", str(disk.qom_path)},
                                       {"property", str("drive")},
                                       {"value", str(names::filter_node(disk.id))}}));
                disk.switched = true;
            }
        } catch (const qmp::Error &) {
            failure = std::current_exception();
        }
        // a failed command leaves the client unusable: resume on a new one
        if (running) {
            if (failure)
                qmp("cont", Json::object());
            else
                run("cont", Json::object());
        }
        if (failure)
            std::rethrow_exception(failure);
    } catch (const qmp::CommandFailed &) {
        throw;
    } catch (const qmp::Error &e) {
        throw qmp::CommandFailed(options_.peer.vmid, execute, e);
    }
}

void Snapshot::export_over_nbd()
{
    for (Disk &disk : disks_) {
        if (!disk.switched)
            continue;
        qmp("blockdev-add", object({{"driver", str("snapshot-access")},
                                    {"node-name", str(names::access_node(disk.id))},
                                    {"file", str(names::filter_node(disk.id))}}));
        disk.access_added = true;
    }

    nbd_socket_ = options_.work_dir + "/nbd.sock";
    unlink(nbd_socket_.c_str());
    qmp("nbd-server-start",
        object({{"addr", object({{"type", str("unix")}, {"data", object({{"path", str(nbd_socket_)}})}})}}));
    nbd_started_ = true;

    for (Disk &disk : disks_) {
        std::string node = disk.access_added ? names::access_node(disk.id) : disk.original_node;
        qmp("block-export-add", object({{"type", str("nbd")},
                                        {"id", str(names::nbd_export(disk.id))},
                                        {"node-name", str(node)},
                                        {"name", str(disk.device)},
                                        {"writable", Json::boolean(false)}}));
        disk.export_name = disk.device;
    }
}

void Snapshot::restore()
{
    if (restored_)
        return;
    restored_ = true;

    std::string first_failure;
    auto attempt = [&](const std::string &step, const std::function<void()> &action) {
        try {
            action();
        } catch (const std::exception &e) {
            std::string text = "unable to restore the block graph - " + step + " - " + one_line(e);
            if (first_failure.empty())
                first_failure = text;
            else if (options_.log)
                options_.log(text);
        }
    };

    // stopping the server deletes every export and drops its clients
    if (nbd_started_)
        attempt("stopping the NBD server", [&] { qmp("nbd-server-stop", Json::object()); });
    unlink(nbd_socket_.c_str());

    for (auto disk = disks_.rbegin(); disk != disks_.rend(); ++disk) {
        auto remove_node = [&](const std::string &node) {
            attempt("removing node " + node, [&] { qmp("blockdev-del", object({{"node-name", str(node)}})); });
        };
        if (disk->access_added)
            remove_node(names::access_node(disk->id));
        if (disk->switched)
            attempt("putting " + disk->device + " back on node " + disk->original_node,
                    [&] { set_device_node(*disk, disk->original_node); });
        if (disk->filter_added)
            remove_node(names::filter_node(disk->id));
        if (disk->fleece_added)
            remove_node(names::fleece_node(disk->id));
        disk->image.reset();
    }

    if (!first_failure.empty())
        throw Error(first_failure);
}

} // namespace engine::upstream
