#include "monitor.h"

#include "blockdev.h"
#include "qmp_error.h"
#include "schema.h"

namespace pve_sim {

using engine::Json;

Monitor::Monitor(const Options &options, std::function<void(const std::string &, const Json &)> emit_event)
    : options_(options), emit_event_(std::move(emit_event)), backups_(options)
{
    vm_.status = options.status;
    for (const DriveSpec &spec : options.drives) {
        Drive drive = vm_.make_drive(spec.id, spec.path, spec.format, false);
        drive.qdev = spec.id.starts_with("drive-") ? spec.id.substr(6) : spec.id;
        if (options.blockdev)
            attach_as_blockdev(vm_, drive);
        else
            vm_.drives.push_back(drive);
    }
}

Json Monitor::run(const std::string &execute, const Json &arguments, engine::Fd &passed_fd)
{
    using P = Parameter;
    if (execute == "query-status") {
        check_arguments(arguments, {});
        return query_status();
    }
    if (execute == "cont") {
        check_arguments(arguments, {});
        if (vm_.status != "running") {
            vm_.status = "running";
            emit_event_("RESUME", Json());
        }
        return Json::object();
    }
    if (execute == "stop") {
        check_arguments(arguments, {});
        if (vm_.status == "running") {
            vm_.status = "paused";
            emit_event_("STOP", Json());
        }
        return Json::object();
    }
    if (execute == "quit") {
        check_arguments(arguments, {});
        quit_ = true;
        return Json::object();
    }
    if (execute == "query-block") {
        check_arguments(arguments, {});
        return query_block();
    }
    if (execute == "query-named-block-nodes") {
        check_arguments(arguments, {P{"flat", Type::boolean}});
        return query_named_block_nodes(vm_);
    }
    if (execute == "blockdev-add")
        return blockdev_add(vm_, arguments);
    if (execute == "blockdev-del")
        return blockdev_del(vm_, arguments);
    if (execute == "query-machines") {
        check_arguments(arguments, {P{"compat-props", Type::boolean}});
        return query_machines();
    }
    if (execute == "getfd") {
        check_arguments(arguments, {P{"fdname", Type::string, true}});
        if (!passed_fd)
            throw QmpError("No file descriptor supplied via SCM_RIGHTS");
        vm_.named_fds[string_arg(arguments, "fdname")] = std::move(passed_fd);
        return Json::object();
    }
    if (execute == "closefd") {
        check_arguments(arguments, {P{"fdname", Type::string, true}});
        std::string name = string_arg(arguments, "fdname");
        if (vm_.named_fds.erase(name) == 0)
            throw QmpError("File descriptor named '" + name + "' not found");
        return Json::object();
    }
    if (execute == "human-monitor-command") {
        check_arguments(arguments, {P{"command-line", Type::string, true}, P{"cpu-index", Type::integer}});
        return Json::string(human_monitor_command(string_arg(arguments, "command-line")));
    }
    if (execute == "query-proxmox-support") {
        check_arguments(arguments, {});
        return proxmox_support();
    }
    if (execute == "backup")
        return backups_.backup(vm_, arguments);
    if (execute == "query-backup") {
        check_arguments(arguments, {});
        return backups_.query_backup();
    }
    if (execute == "backup-cancel") {
        check_arguments(arguments, {});
        return backups_.cancel();
    }
    if (execute == "query-pbs-bitmap-info") {
        check_arguments(arguments, {});
        return backups_.bitmap_info();
    }
    if (execute == "backup-access-setup")
        return backups_.access_setup(vm_, arguments);
    if (execute == "backup-access-teardown")
        return backups_.access_teardown(arguments);
    if (execute == "nbd-server-start") {
        check_arguments(arguments, {P{"addr", Type::object, true}, P{"tls-creds", Type::string},
                                    P{"tls-authz", Type::string}, P{"max-connections", Type::integer}});
        if (nbd_running_)
            throw QmpError("NBD server already running");
        nbd_running_ = true;
        return Json::object();
    }
    if (execute == "nbd-server-stop") {
        check_arguments(arguments, {});
        if (!nbd_running_)
            throw QmpError("NBD server not running");
        nbd_running_ = false;
        exports_.clear();
        return Json::object();
    }
    if (execute == "block-export-add")
        return block_export_add(arguments);
    throw QmpError("The command " + execute + " has not been found", "CommandNotFound");
}

Json Monitor::query_status() const
{
    Json status = Json::object();
    status.set("status", Json::string(vm_.status));
    status.set("singlestep", Json::boolean(false));
    status.set("running", Json::boolean(vm_.status == "running"));
    return status;
}

Json Monitor::query_block() const
{
    Json blocks = Json::array();
    for (const Drive &drive : vm_.drives) {
        if (drive.id.empty() && drive.qdev.empty())
            continue; // a node without a BlockBackend
        Json image = Json::object();
        image.set("virtual-size", Json::integer(static_cast<int64_t>(drive.size)));
        image.set("filename", Json::string(drive.path));
        image.set("format", Json::string(drive.format));
        image.set("dirty-flag", Json::boolean(false));
        Json inserted = Json::object();
        inserted.set("image", image);
        inserted.set("node-name", Json::string(drive.node_name));
        inserted.set("drv", Json::string(drive.driver));
        inserted.set("ro", Json::boolean(drive.read_only));
        inserted.set("file", Json::string(drive.path));
        inserted.set("encrypted", Json::boolean(false));
        Json block = Json::object();
        block.set("device", Json::string(drive.id));
        if (!drive.qdev.empty())
            block.set("qdev", Json::string(drive.qdev));
        block.set("locked", Json::boolean(false));
        block.set("removable", Json::boolean(false));
        block.set("type", Json::string("unknown"));
        block.set("io-status", Json::string("ok"));
        block.set("inserted", inserted);
        blocks.append(block);
    }
    return blocks;
}

// The running machine type (pve-qemu 10's i440fx), which qemu-server reads
// before it generates blockdev options.
Json Monitor::query_machines() const
{
    Json machine = Json::object();
    machine.set("name", Json::string("pc-i440fx-10.0"));
    machine.set("alias", Json::string("pc"));
    machine.set("is-default", Json::boolean(true));
    machine.set("is-current", Json::boolean(true));
    machine.set("cpu-max", Json::integer(255));
    machine.set("hotpluggable-cpus", Json::boolean(true));
    machine.set("numa-mem-supported", Json::boolean(false));
    machine.set("deprecated", Json::boolean(false));
    machine.set("default-cpu-type", Json::string("qemu64-x86_64-cpu"));
    machine.set("acpi", Json::boolean(true));
    Json machines = Json::array();
    machines.append(machine);
    return machines;
}

// pve-qemu 9.2.0-6 and later: every flag true; --support overrides or adds.
Json Monitor::proxmox_support() const
{
    Json flags = Json::object();
    for (const char *flag : {"pbs-dirty-bitmap", "query-bitmap-info", "pbs-dirty-bitmap-savevm",
                             "pbs-dirty-bitmap-migration", "pbs-masterkey", "backup-max-workers", "backup-fleecing",
                             "backup-access-api"})
        flags.set(flag, Json::boolean(true));
    flags.set("pbs-library-version", Json::string("1.5.1 (simulated)"));
    for (const auto &[key, value] : options_.support) {
        if (value == "absent")
            flags.remove(key.c_str());
        else if (value == "true" || value == "false")
            flags.set(key.c_str(), Json::boolean(value == "true"));
        else
            flags.set(key.c_str(), Json::string(value));
    }
    return flags;
}

std::string Monitor::human_monitor_command(const std::string &line)
{
    size_t space = line.find(' ');
    std::string name = line.substr(0, space);
    std::string rest = space == std::string::npos ? "" : line.substr(space + 1);
    // HMP reports a failure as output text; the QMP command itself succeeds
    int call = ++hmp_calls_[name];
    for (const Fault &fault : options_.hmp_errors) {
        if (fault.command == name && (fault.occurrence == 0 || fault.occurrence == call))
            return fault.desc + "\r\n";
    }
    if (name == "drive_add") {
        // drive_add <pci-address|auto> "<options>"
        size_t options = rest.find(' ');
        if (options == std::string::npos)
            return "Parameter 'drive' is missing\r\n";
        std::string text = rest.substr(options + 1);
        if (text.size() >= 2 && text.front() == '"' && text.back() == '"')
            text = text.substr(1, text.size() - 2);
        return drive_add(text);
    }
    if (name == "drive_del") {
        for (auto drive = vm_.drives.begin(); drive != vm_.drives.end(); ++drive) {
            if (drive->id == rest) {
                vm_.drives.erase(drive);
                return "";
            }
        }
        return "Device '" + rest + "' not found\r\n";
    }
    return "unknown command: '" + name + "'\r\n";
}

// QEMU's option syntax: key=value pairs separated by ',' (",," is a comma).
std::string Monitor::drive_add(const std::string &text)
{
    std::map<std::string, std::string> options;
    std::string item;
    auto flush = [&] {
        size_t equals = item.find('=');
        if (equals != std::string::npos)
            options[item.substr(0, equals)] = item.substr(equals + 1);
        item.clear();
    };
    for (size_t i = 0; i < text.size(); i++) {
        if (text[i] == ',' && i + 1 < text.size() && text[i + 1] == ',') {
            item += ',';
            i++;
        } else if (text[i] == ',') {
            flush();
        } else {
            item += text[i];
        }
    }
    flush();
    std::string id = options["id"];
    if (vm_.find_drive(id))
        return "Duplicate ID '" + id + "' for drive\r\n";
    std::string format = options.count("format") ? options["format"] : "raw";
    bool read_only = options["read-only"] == "on";
    try {
        vm_.drives.push_back(vm_.make_drive(id, options["file"], format, read_only));
    } catch (const QmpError &e) {
        return std::string(e.what()) + "\r\n";
    }
    return "OK\r\n";
}

Json Monitor::block_export_add(const Json &arguments)
{
    check_arguments(arguments, {{"type", Type::string, true},
                                {"id", Type::string, true},
                                {"node-name", Type::string, true},
                                {"name", Type::string},
                                {"description", Type::string},
                                {"writable", Type::boolean},
                                {"writethrough", Type::boolean},
                                {"bitmaps", Type::array},
                                {"allocation-depth", Type::boolean}});
    std::string node = string_arg(arguments, "node-name");
    std::string id = string_arg(arguments, "id");
    if (!vm_.find_node(node) && !backups_.is_access_node(node))
        throw QmpError("Cannot find device='' nor node-name='" + node + "'");
    if (!nbd_running_)
        throw QmpError("NBD server not running");
    for (const std::string &existing : exports_) {
        if (existing == id)
            throw QmpError("Block export id '" + id + "' is already in use");
    }
    exports_.push_back(id);
    return Json::object();
}

} // namespace pve_sim
