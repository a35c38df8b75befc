// The simulated QEMU monitor: runs one QMP command against the VM state and
// returns its "return" value, or throws QmpError for an error reply.
#pragma once

#include "backup.h"
#include "options.h"
#include "util/fd.h"
#include "util/json.h"
#include "vm.h"

#include <functional>
#include <map>
#include <string>

namespace pve_sim {

class Monitor {
  public:
    // emit_event sends {"event": name, "data": data, "timestamp": ...} to
    // the connected client (if any).
    Monitor(const Options &options, std::function<void(const std::string &, const engine::Json &)> emit_event);

    // `passed_fd` is the fd that came with the command via SCM_RIGHTS (if
    // any); getfd takes it over. Sets quit_requested() for "quit".
    engine::Json run(const std::string &execute, const engine::Json &arguments, engine::Fd &passed_fd);
    bool quit_requested() const { return quit_; }

  private:
    engine::Json query_status() const;
    engine::Json query_block() const;
    engine::Json proxmox_support() const;
    engine::Json query_machines() const;
    std::string human_monitor_command(const std::string &line);
    std::string drive_add(const std::string &options);
    engine::Json block_export_add(const engine::Json &arguments);

    const Options &options_;
    std::function<void(const std::string &, const engine::Json &)> emit_event_;
    Vm vm_;
    Backups backups_;
    bool nbd_running_ = false;
    std::vector<std::string> exports_;
    std::map<std::string, int> hmp_calls_; // per HMP command name, for --hmp-error @N
    bool quit_ = false;
};

} // namespace pve_sim
