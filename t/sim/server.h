// The simulator's sockets: QMP (one client at a time, as QEMU's monitor) and
// the guest agent, JSON framing, fds received with SCM_RIGHTS, the command
// log and the fault options. Single-threaded; the backup job runs on its own.
#pragma once

#include "agent.h"
#include "monitor.h"
#include "options.h"
#include "util/fd.h"

#include <deque>
#include <map>
#include <string>

namespace pve_sim {

class Server {
  public:
    explicit Server(const Options &options);
    ~Server(); // removes the socket files and the pid file
    // Serves until quit, SIGTERM/SIGINT or a die fault; returns the exit code.
    int run();

  private:
    struct Peer {
        engine::Fd fd;
        std::string input;
        std::deque<engine::Fd> fds; // received with SCM_RIGHTS, not yet used
        bool negotiated = false;
        bool hung = false; // a hang fault: nothing more is answered
    };
    enum class Channel { qmp, qga };

    void accept_client(Channel channel);
    // Reads what arrived; false when the peer has gone.
    bool read_input(Peer &peer);
    void handle_input(Channel channel);
    void handle_command(Channel channel, const engine::Json &request);
    engine::Json qmp_command(Peer &peer, const std::string &execute, const engine::Json &arguments,
                             engine::Fd &passed);
    void send(Channel channel, const std::string &text);
    void emit_event(const std::string &name, const engine::Json &data);
    void log_command(Channel channel, const engine::Json &request, bool with_fd);
    const Fault *fault_for(const std::string &execute);
    void close_client(Channel channel);

    const Options &options_;
    engine::Fd qmp_listener_, qga_listener_;
    Peer qmp_, qga_;
    engine::Fd log_;
    Monitor monitor_;
    GuestAgent agent_;
    std::map<std::string, int> calls_;
    int exit_code_ = -1;
};

} // namespace pve_sim
