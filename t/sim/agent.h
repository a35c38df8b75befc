// The simulated guest agent (qemu-ga inside the guest): sync, ping and the
// fs-freeze commands, with qemu-ga's replies and frozen-state refusals.
#pragma once

#include "util/json.h"

#include <string>

namespace pve_sim {

class GuestAgent {
  public:
    explicit GuestAgent(int fs_count) : fs_count_(fs_count) {}
    // Returns "return"; throws QmpError for an error reply.
    engine::Json run(const std::string &execute, const engine::Json &arguments);

  private:
    int fs_count_;
    bool frozen_ = false;
};

} // namespace pve_sim
