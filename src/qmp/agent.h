// A client of the QEMU guest agent's socket, speaking as PVE::QMPClient does
// to a 'qga' peer: no capabilities, and every command preceded by
// guest-sync-delimited so a reply left over from an earlier client is
// recognised and skipped.
//
// Contract: as for qmp::Client (client.h) — the connection and every
// command on it are bounded by one timeout; the socket closes with the
// object; failures throw engine::qmp::Error with PVE's queue error texts.
#pragma once

#include "qmp/channel.h"
#include "util/json.h"

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace engine::qmp {

class AgentClient {
  public:
    // Connects to `socket_path`; errors name it "VM <vmid> qga socket".
    AgentClient(const std::string &socket_path, const std::string &vmid, std::chrono::milliseconds timeout,
                size_t max_line_bytes = 64 << 20);

    // Sends {"execute":"guest-sync-delimited","arguments":{"id":<id>}}\n and
    // {"execute":<command>,"arguments":{...}}\n, then waits for the agent's
    // 0xFF sentinel, {"return":<id>} and the command's reply. Returns the
    // whole reply object: agent errors ({"error":{class,desc}}) are not
    // thrown, as in PVE. Returns nullopt when the agent closed the
    // connection after the sync reply (guest-shutdown, guest-suspend-*).
    // Sync replies with a smaller id are stale and skipped; another id
    // throws Error(protocol, "got wrong command id ...").
    std::optional<Json> execute(std::string_view command, const Json &arguments = Json::object());

  private:
    Channel channel_;
    size_t max_line_bytes_;
    std::string buffer_;
    bool closed_ = false;
};

// PVE's agent sync id: the digits of the pid, "0", then a process-wide
// counter from 1, read as one integer.
long long next_agent_sync_id();

} // namespace engine::qmp
