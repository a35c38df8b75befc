#include "server.h"

#include "qmp_error.h"
#include "util/error.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace pve_sim {

using engine::Json;

namespace {

volatile sig_atomic_t stop_signal = 0;

void on_stop_signal(int signal_number)
{
    stop_signal = signal_number;
}

engine::Fd listen_on(const std::string &path)
{
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (path.size() >= sizeof(address.sun_path))
        throw std::runtime_error("socket path too long: " + path);
    std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
    ::unlink(path.c_str());
    engine::Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd || ::bind(fd.get(), reinterpret_cast<sockaddr *>(&address), sizeof(address)) != 0 ||
        ::listen(fd.get(), 1) != 0)
        engine::throw_errno("cannot listen on " + path);
    return fd;
}

// The error reply QEMU sends, with the request's id when it had one.
Json error_reply(const QmpError &error, const Json &id)
{
    Json details = Json::object();
    details.set("class", Json::string(error.error_class()));
    details.set("desc", Json::string(error.what()));
    Json reply = Json::object();
    reply.set("error", details);
    if (!id.is_null())
        reply.set("id", id);
    return reply;
}

} // namespace

Server::Server(const Options &options)
    : options_(options), monitor_(options, [this](const std::string &name, const Json &data) { emit_event(name, data); }),
      agent_(options.fs_count)
{
    if (!options.log_path.empty()) {
        log_ = engine::Fd(::open(options.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
        if (!log_)
            engine::throw_errno("cannot open log " + options.log_path);
    }
    qmp_listener_ = listen_on(options.qmp_socket);
    if (!options.qga_socket.empty())
        qga_listener_ = listen_on(options.qga_socket);
    if (!options.pid_file.empty()) {
        std::string pid = std::to_string(::getpid()) + "\n";
        engine::Fd file(::open(options.pid_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
        if (!file)
            engine::throw_errno("cannot write " + options.pid_file);
        engine::write_all(file.get(), pid.data(), pid.size(), "write pid file");
    }
}

Server::~Server()
{
    ::unlink(options_.qmp_socket.c_str());
    if (!options_.qga_socket.empty())
        ::unlink(options_.qga_socket.c_str());
    if (!options_.pid_file.empty())
        ::unlink(options_.pid_file.c_str());
}

int Server::run()
{
    struct sigaction action{};
    action.sa_handler = on_stop_signal;
    ::sigaction(SIGTERM, &action, nullptr);
    ::sigaction(SIGINT, &action, nullptr);
    ::signal(SIGPIPE, SIG_IGN);

    while (exit_code_ < 0 && !stop_signal) {
        pollfd watch[2];
        Channel channels[2];
        int count = 0;
        for (Channel channel : {Channel::qmp, Channel::qga}) {
            Peer &peer = channel == Channel::qmp ? qmp_ : qga_;
            engine::Fd &listener = channel == Channel::qmp ? qmp_listener_ : qga_listener_;
            int fd = peer.fd ? peer.fd.get() : listener.get();
            if (fd < 0)
                continue;
            watch[count] = {fd, POLLIN, 0};
            channels[count++] = channel;
        }
        int ready = ::poll(watch, count, 200);
        if (ready < 0 && errno != EINTR)
            engine::throw_errno("poll");
        for (int i = 0; i < count && ready > 0; i++) {
            if (!watch[i].revents)
                continue;
            Peer &peer = channels[i] == Channel::qmp ? qmp_ : qga_;
            if (!peer.fd)
                accept_client(channels[i]);
            else if (!read_input(peer))
                close_client(channels[i]);
            else if (!peer.hung)
                handle_input(channels[i]);
            if (exit_code_ >= 0)
                break;
        }
    }
    return exit_code_ < 0 ? 0 : exit_code_;
}

void Server::accept_client(Channel channel)
{
    Peer &peer = channel == Channel::qmp ? qmp_ : qga_;
    engine::Fd &listener = channel == Channel::qmp ? qmp_listener_ : qga_listener_;
    peer = Peer{};
    peer.fd = engine::Fd(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!peer.fd)
        return;
    if (channel == Channel::qmp) {
        send(channel, R"json({"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 9}, )json"
                      R"json("package": "pve-qemu-kvm_9.2.0-6 (pve-qemu-sim)"}, "capabilities": []}})json");
    }
}

void Server::close_client(Channel channel)
{
    (channel == Channel::qmp ? qmp_ : qga_) = Peer{};
}

bool Server::read_input(Peer &peer)
{
    char chunk[65536];
    iovec data{chunk, sizeof(chunk)};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
    msghdr message{};
    message.msg_iov = &data;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof(control);
    ssize_t got = ::recvmsg(peer.fd.get(), &message, MSG_CMSG_CLOEXEC);
    if (got <= 0)
        return got < 0 && errno == EINTR;
    for (cmsghdr *header = CMSG_FIRSTHDR(&message); header; header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS)
            continue;
        size_t fds = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < fds; i++) {
            int fd;
            std::memcpy(&fd, CMSG_DATA(header) + i * sizeof(int), sizeof(int));
            peer.fds.emplace_back(fd);
        }
    }
    if (!peer.hung)
        peer.input.append(chunk, static_cast<size_t>(got));
    return true;
}

// QEMU's JSON streamer: objects back to back, newlines optional.
void Server::handle_input(Channel channel)
{
    Peer &peer = channel == Channel::qmp ? qmp_ : qga_;
    while (peer.fd && !peer.hung && exit_code_ < 0) {
        size_t start = peer.input.find_first_not_of(" \t\r\n\xff");
        if (start == std::string::npos) {
            peer.input.clear();
            return;
        }
        peer.input.erase(0, start);
        json_tokener *tokener = json_tokener_new();
        json_object *parsed = json_tokener_parse_ex(tokener, peer.input.data(), static_cast<int>(peer.input.size()));
        json_tokener_error status = json_tokener_get_error(tokener);
        size_t end = json_tokener_get_parse_end(tokener);
        json_tokener_free(tokener);
        Json request = Json::adopt(parsed);
        if (status == json_tokener_continue)
            return;
        if (status != json_tokener_success) {
            peer.input.clear();
            send(channel, error_reply(QmpError(std::string("JSON parse error, ") + json_tokener_error_desc(status)),
                                      Json())
                              .text());
            return;
        }
        peer.input.erase(0, end);
        handle_command(channel, request);
    }
}

void Server::handle_command(Channel channel, const Json &request)
{
    Peer &peer = channel == Channel::qmp ? qmp_ : qga_;
    engine::Fd passed;
    if (!peer.fds.empty()) {
        passed = std::move(peer.fds.front());
        peer.fds.pop_front();
    }
    log_command(channel, request, static_cast<bool>(passed));

    Json id = request.member("id");
    std::string execute = request.member("execute").is_string() ? request.member("execute").as_string() : "";
    Json arguments = request.member("arguments");
    Json reply = Json::object();
    try {
        if (!request.is_object() || execute.empty())
            throw QmpError("QMP input lacks member 'execute'");
        if (const Fault *fault = fault_for(execute)) {
            switch (fault->kind) {
            case FaultKind::hang:
                peer.hung = true;
                peer.input.clear();
                return;
            case FaultKind::drop:
                close_client(channel);
                return;
            case FaultKind::die:
                ::_exit(3); // as a crashing QEMU: sockets and pid file stay behind
            case FaultKind::fail:
                throw QmpError(fault->desc);
            case FaultKind::without:
                throw QmpError("The command " + execute + " has not been found", "CommandNotFound");
            }
        }
        Json value = channel == Channel::qmp ? qmp_command(peer, execute, arguments, passed)
                                             : agent_.run(execute, arguments);
        reply.set("return", value);
    } catch (const QmpError &error) {
        reply = error_reply(error, Json());
    } catch (const std::exception &error) {
        reply = error_reply(QmpError(error.what()), Json());
    }
    if (!id.is_null())
        reply.set("id", id);
    if (channel == Channel::qga && execute == "guest-sync-delimited" && reply.has("return"))
        send(channel, "\xff" + reply.text());
    else
        send(channel, reply.text());
    if (channel == Channel::qmp && monitor_.quit_requested()) {
        Json data = Json::object();
        data.set("guest", Json::boolean(false));
        data.set("reason", Json::string("host-qmp-quit"));
        emit_event("SHUTDOWN", data);
        exit_code_ = 0;
    }
}

Json Server::qmp_command(Peer &peer, const std::string &execute, const Json &arguments, engine::Fd &passed)
{
    if (execute == "qmp_capabilities") {
        if (peer.negotiated)
            throw QmpError("Capabilities negotiation is already complete, command ignored", "CommandNotFound");
        peer.negotiated = true;
        return Json::object();
    }
    if (!peer.negotiated)
        throw QmpError("Expecting capabilities negotiation with 'qmp_capabilities'", "CommandNotFound");
    return monitor_.run(execute, arguments, passed);
}

// QMP lines end in CRLF as QEMU's do; the agent ends them in LF.
void Server::send(Channel channel, const std::string &text)
{
    Peer &peer = channel == Channel::qmp ? qmp_ : qga_;
    if (!peer.fd)
        return;
    std::string line = text + (channel == Channel::qmp ? "\r\n" : "\n");
    size_t done = 0;
    while (done < line.size()) {
        ssize_t sent = ::send(peer.fd.get(), line.data() + done, line.size() - done, MSG_NOSIGNAL);
        if (sent < 0 && errno == EINTR)
            continue;
        if (sent <= 0) {
            close_client(channel);
            return;
        }
        done += static_cast<size_t>(sent);
    }
}

void Server::emit_event(const std::string &name, const Json &data)
{
    timeval now;
    ::gettimeofday(&now, nullptr);
    Json timestamp = Json::object();
    timestamp.set("seconds", Json::integer(now.tv_sec));
    timestamp.set("microseconds", Json::integer(now.tv_usec));
    Json event = Json::object();
    event.set("timestamp", timestamp);
    event.set("event", Json::string(name));
    if (!data.is_null())
        event.set("data", data);
    send(Channel::qmp, event.text());
}

void Server::log_command(Channel channel, const Json &request, bool with_fd)
{
    if (!log_)
        return;
    Json entry = Json::object();
    entry.set("socket", Json::string(channel == Channel::qmp ? "qmp" : "qga"));
    entry.set("execute", request.member("execute"));
    entry.set("arguments", request.has("arguments") ? request.member("arguments") : Json::object());
    if (with_fd)
        entry.set("fd", Json::boolean(true));
    std::string line = entry.text() + "\n";
    engine::write_all(log_.get(), line.data(), line.size(), "write command log");
}

const Fault *Server::fault_for(const std::string &execute)
{
    int call = ++calls_[execute];
    for (const Fault &fault : options_.faults) {
        if (fault.command == execute && (fault.occurrence == 0 || fault.occurrence == call))
            return &fault;
    }
    return nullptr;
}

} // namespace pve_sim
