// pve-qemu's backup commands (qapi/block-core.json + pve-backup.c as the spec
// describes them): backup (vma: a real VMA stream written by the engine's
// writer in a job thread; pbs: validated, recorded and progress simulated),
// query-backup, backup-cancel, query-pbs-bitmap-info and backup access.
#pragma once

#include "options.h"
#include "util/json.h"
#include "vm.h"

#include <memory>
#include <mutex>
#include <thread>

namespace pve_sim {

struct Job;

class Backups {
  public:
    explicit Backups(const Options &options) : options_(options) {}
    ~Backups(); // cancels and joins a running job

    engine::Json backup(Vm &vm, const engine::Json &arguments);
    engine::Json query_backup() const;
    engine::Json cancel();
    engine::Json bitmap_info() const;
    engine::Json access_setup(const Vm &vm, const engine::Json &arguments);
    engine::Json access_teardown(const engine::Json &arguments);
    // Node names handed out by backup-access-setup (exportable over NBD).
    bool is_access_node(const std::string &node_name) const;

  private:
    bool job_active() const;

    const Options &options_;
    std::shared_ptr<Job> job_;
    engine::Json bitmaps_ = engine::Json::array();
    bool had_pbs_backup_ = false;
    std::string access_target_;
    std::vector<std::string> access_nodes_;
};

} // namespace pve_sim
