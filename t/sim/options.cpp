#include "options.h"

#include <stdexcept>

namespace pve_sim {

namespace {

std::pair<std::string, std::string> split_pair(const std::string &text, char separator, const char *option)
{
    size_t at = text.find(separator);
    if (at == std::string::npos || at == 0)
        throw std::runtime_error(std::string(option) + ": expected NAME" + separator + "VALUE, got '" + text + "'");
    return {text.substr(0, at), text.substr(at + 1)};
}

Fault parse_fault(FaultKind kind, std::string spec, const char *option)
{
    Fault fault{kind, "", 0, ""};
    if (kind == FaultKind::fail) {
        auto [command, desc] = split_pair(spec, '=', option);
        spec = command;
        fault.desc = desc;
    }
    size_t at = spec.find('@');
    if (at != std::string::npos) {
        fault.occurrence = std::stoi(spec.substr(at + 1));
        if (fault.occurrence < 1)
            throw std::runtime_error(std::string(option) + ": occurrence counts from 1");
        spec.resize(at);
    }
    fault.command = spec;
    return fault;
}

} // namespace

Options parse_options(int argc, char **argv)
{
    Options options;
    for (int i = 1; i < argc; i++) {
        std::string option = argv[i];
        if (option == "--interleave") {
            options.interleave = true;
            continue;
        }
        if (option == "--blockdev") {
            options.blockdev = true;
            continue;
        }
        if (i + 1 >= argc)
            throw std::runtime_error(option + ": missing value");
        std::string value = argv[++i];
        if (option == "--qmp") {
            options.qmp_socket = value;
        } else if (option == "--qga") {
            options.qga_socket = value;
        } else if (option == "--log") {
            options.log_path = value;
        } else if (option == "--pidfile") {
            options.pid_file = value;
        } else if (option == "--status") {
            if (value != "prelaunch" && value != "running" && value != "paused")
                throw std::runtime_error("--status: prelaunch, running or paused");
            options.status = value;
        } else if (option == "--drive") {
            auto [id, rest] = split_pair(value, '=', "--drive");
            DriveSpec drive{id, rest, "raw"};
            size_t comma = rest.find(",format=");
            if (comma != std::string::npos) {
                drive.path = rest.substr(0, comma);
                drive.format = rest.substr(comma + 8);
            }
            if (drive.format != "raw" && drive.format != "qcow2")
                throw std::runtime_error("--drive: format raw or qcow2");
            options.drives.push_back(drive);
        } else if (option == "--support") {
            auto [key, flag] = split_pair(value, '=', "--support");
            options.support[key] = flag;
        } else if (option == "--hang") {
            options.faults.push_back(parse_fault(FaultKind::hang, value, "--hang"));
        } else if (option == "--drop") {
            options.faults.push_back(parse_fault(FaultKind::drop, value, "--drop"));
        } else if (option == "--die") {
            options.faults.push_back(parse_fault(FaultKind::die, value, "--die"));
        } else if (option == "--fail") {
            options.faults.push_back(parse_fault(FaultKind::fail, value, "--fail"));
        } else if (option == "--hmp-error") {
            options.hmp_errors.push_back(parse_fault(FaultKind::fail, value, "--hmp-error"));
        } else if (option == "--end-status") {
            options.end_status = value;
        } else if (option == "--without") {
            options.faults.push_back(parse_fault(FaultKind::without, value, "--without"));
        } else if (option == "--backup-delay") {
            options.backup_delay_ms = std::stoll(value);
        } else if (option == "--backup-error-at") {
            options.backup_error_at = std::stoll(value);
        } else if (option == "--pbs-dirty") {
            options.pbs_dirty = std::stoll(value);
        } else if (option == "--fs-count") {
            options.fs_count = std::stoi(value);
        } else {
            throw std::runtime_error("unknown option " + option);
        }
    }
    if (options.qmp_socket.empty())
        throw std::runtime_error("--qmp SOCKET is required");
    return options;
}

} // namespace pve_sim
