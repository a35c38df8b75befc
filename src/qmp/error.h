// Errors of the QMP and guest-agent clients. what() is the text
// PVE::QMPClient would store as the queue's error (always ending in "\n"),
// so callers can prefix it exactly as Proxmox does.
#pragma once

#include <stdexcept>
#include <string>

namespace engine::qmp {

class Error : public std::runtime_error {
  public:
    enum class Kind {
        connect,  // "unable to connect to VM <vmid> <qmp|qga> socket - ..."
        timeout,  // "got timeout"
        closed,   // "client closed connection", or agent EOF with commands left
        command,  // the peer answered with an error: text is its desc
        protocol, // malformed or unexpected reply (bad id, bad JSON, too large)
    };

    Error(Kind kind, std::string text) : std::runtime_error(std::move(text)), kind_(kind) {}
    Kind kind() const { return kind_; }

  private:
    Kind kind_;
};

// A failed one-shot call, worded as PVE::QMPClient::cmd dies:
// "VM <vmid> qmp command '<execute>' failed - <queue error>". kind() is the
// kind of the underlying queue error.
class CommandFailed : public Error {
  public:
    CommandFailed(const std::string &vmid, const std::string &execute, const Error &cause)
        : Error(cause.kind(), "VM " + vmid + " qmp command '" + execute + "' failed - " + cause.what())
    {
    }
};

} // namespace engine::qmp
