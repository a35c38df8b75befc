// One-shot calls with PVE::QMPClient's semantics: open the socket, run the
// command(s), close. Errors are worded as PVE dies, so a Perl die carrying
// what() reads exactly as with the original plugin.
//
// Timeouts: a zero timeout means "the default", as PVE's `if (!$timeout)`:
// default_timeout(command) for single commands, 3 s for a batch.
#pragma once

#include "util/json.h"

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace engine::qmp {

// Where a VM's QEMU listens; vmid only names it in error texts.
struct Peer {
    std::string socket_path;
    std::string vmid;
};

// PVE::QMPClient::cmd on a qmp socket: returns the reply's "return".
// Throws CommandFailed: "VM <vmid> qmp command '<execute>' failed - <error>".
Json command(const Peer &peer, const std::string &execute, const Json &arguments,
             std::chrono::milliseconds timeout = {});

// human-monitor-command with `command_line`; returns the HMP output text
// (QEMU reports HMP errors as successful replies carrying the error text,
// e.g. "Duplicate ID ..."). Throws CommandFailed naming
// 'human-monitor-command'.
std::string human_monitor_command(const Peer &peer, const std::string &command_line,
                                  std::chrono::milliseconds timeout = {});

struct BatchCommand {
    std::string execute;
    Json arguments;
    // PVE::QMPClient's callback: runs with the command's "return" as soon as
    // it arrives, before anything else is sent; the commands it returns are
    // queued after those already queued, as a callback's queue_cmd does.
    std::function<std::vector<BatchCommand>(const Json &result)> on_reply = {};
};

// PVE::QMPClient::queue_cmd for each command, then queue_execute: all over
// one connection, in order, each started after the previous reply (and its
// on_reply); getfd and add-fd carry `fd` (>= 0) with SCM_RIGHTS. Returns
// each "return" in the order sent. Throws the bare queue Error (e.g. "got
// timeout\n"), as queue_execute dies, on the first failure, or what an
// on_reply throws; later commands are not sent.
std::vector<Json> batch(const Peer &peer, const std::vector<BatchCommand> &commands, int fd,
                        std::chrono::milliseconds timeout = {});

// PVE::QMPClient::cmd on the guest agent socket: the sync handshake, then
// the command. Returns "return", or {"error": {...}} when the agent answered
// with an error, or JSON null when it closed after the sync (shutdown).
// Throws CommandFailed: "VM <vmid> qmp command '<execute>' failed - <error>"
// (PVE says "qmp" for agent commands too; connect errors say "qga socket").
Json agent_command(const Peer &agent, const std::string &execute, const Json &arguments,
                   std::chrono::milliseconds timeout = {});

} // namespace engine::qmp
