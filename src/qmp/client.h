// A QMP client speaking to QEMU's monitor socket exactly as PVE::QMPClient
// does: one connection per batch of commands, qmp_capabilities first, one
// command in flight, replies matched by id, events set aside.
//
// Contract:
// - The constructor connects and negotiates; the whole life of a Client is
//   bounded by the timeout given to it (PVE arms one timeout per connection,
//   covering capabilities and every command). Destroying the Client closes
//   the socket: QEMU serves one monitor client at a time, so keep a Client
//   only as long as one batch of commands takes, never across sleeps.
// - Every failure throws engine::qmp::Error whose what() is PVE's queue error
//   text ("got timeout\n", "<desc of QEMU's error>\n", ...). A Client is
//   unusable after a throw. Use monitor.h for the one-shot calls that word
//   errors as PVE::QMPClient::cmd dies.
// - Not thread-safe; one Client per thread.
#pragma once

#include "qmp/channel.h"
#include "util/json.h"

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace engine::qmp {

struct ClientOptions {
    // Connect retries and the deadline of the whole connection.
    std::chrono::milliseconds timeout{3000};
    // A reply line longer than this fails with Error(protocol): bounds memory
    // against a peer that never sends a newline.
    size_t max_line_bytes = 64 << 20;
};

class Client {
  public:
    // Connects to `socket_path` (errors name it "VM <vmid> qmp socket") and
    // runs qmp_capabilities. The greeting is not awaited, as in PVE.
    Client(const std::string &socket_path, const std::string &vmid, ClientOptions options = {});

    // Sends {"execute","arguments","id"} (no trailing newline, as PVE) and
    // returns the reply's "return" member (JSON null if it has none). With
    // `fd` >= 0 the fd travels with the command via SCM_RIGHTS (getfd,
    // add-fd); it stays open here. Events read meanwhile are appended to
    // events(). Throws Error: command (QEMU's error desc), timeout, closed
    // ("client closed connection\n"), protocol (malformed JSON, a reply
    // without or with another id).
    Json execute(std::string_view command, const Json &arguments = Json::object(), int fd = -1);

    // Every event seen so far, in arrival order ({"event","data","timestamp"}).
    const std::vector<Json> &events() const { return events_; }
    // The {"QMP": ...} greeting once it has been read (null before).
    const Json &greeting() const { return greeting_; }

  private:
    Json read_reply(const std::string &id);

    Channel channel_;
    ClientOptions options_;
    std::string buffer_;
    std::vector<Json> events_;
    Json greeting_;
};

// PVE's command id "<pid>:<n>", n counting up from 1 across the process.
std::string next_command_id();

} // namespace engine::qmp
