// One non-blocking connection to a QEMU monitor or guest-agent unix socket,
// opened the way PVE::QMPClient opens it and bounded by one deadline that
// covers everything done on it (PVE arms its timeout once per connection).
#pragma once

#include "util/fd.h"

#include <chrono>
#include <string>
#include <string_view>

namespace engine::qmp {

using Clock = std::chrono::steady_clock;

class Channel {
  public:
    // Connects to the unix socket at `path`. Like PVE, a connect failing
    // with EINTR or EAGAIN is retried every 100 ms until `connect_window`
    // has passed; any other errno fails at once. `peer` names the socket in
    // errors, e.g. "VM 100 qmp", giving PVE's
    //   "unable to connect to VM 100 qmp socket - <strerror>\n"
    //   "unable to connect to VM 100 qmp socket - timeout after <n> retries\n"
    // Throws Error(connect).
    Channel(const std::string &path, const std::string &peer, std::chrono::milliseconds connect_window);

    // Every later send and receive fails with Error(timeout, "got timeout\n")
    // once `deadline` has passed.
    void arm(Clock::time_point deadline) { deadline_ = deadline; }

    // Sends all of `bytes`. With `fd` >= 0 the first sendmsg() carries it as
    // one SCM_RIGHTS message (the fd stays open here). Throws Error(timeout),
    // Error(closed) when the peer has gone, Error(protocol, "sendfd failed
    // - <strerror>\n") when the fd cannot be passed.
    void send(std::string_view bytes, int fd = -1);

    // Appends what the peer sent to `buffer`, waiting for at least one byte.
    // Returns false at EOF. Throws Error(timeout) or Error(closed) on a reset.
    bool receive(std::string &buffer);

    int fd() const { return fd_.get(); }

  private:
    void wait_for(short events);

    Fd fd_;
    Clock::time_point deadline_ = Clock::time_point::max();
};

} // namespace engine::qmp
