#include "qmp_test_support.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace qmp_test {

using engine::Fd;

std::string failure_text(const std::function<void()> &call)
{
    try {
        call();
    } catch (const std::exception &e) {
        return e.what();
    }
    return "(no exception)";
}

bool Connection::fill(engine::Fd *passed)
{
    pollfd watch{fd_.get(), POLLIN, 0};
    if (::poll(&watch, 1, 10'000) <= 0)
        throw std::runtime_error("fake peer: nothing received within 10 s");
    char chunk[65536];
    iovec data{chunk, sizeof(chunk)};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    msghdr message{};
    message.msg_iov = &data;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof(control);
    ssize_t got = ::recvmsg(fd_.get(), &message, MSG_CMSG_CLOEXEC);
    if (got < 0 && errno == ECONNRESET)
        return false;
    if (got < 0)
        throw std::runtime_error(std::string("fake peer: recvmsg: ") + std::strerror(errno));
    for (cmsghdr *header = CMSG_FIRSTHDR(&message); header; header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level == SOL_SOCKET && header->cmsg_type == SCM_RIGHTS) {
            int fd;
            std::memcpy(&fd, CMSG_DATA(header), sizeof(fd));
            if (passed)
                *passed = engine::Fd(fd);
            else
                ::close(fd);
        }
    }
    pending_.append(chunk, static_cast<size_t>(got));
    return got > 0;
}

std::string Connection::read_until(const std::string &marker)
{
    size_t found;
    while ((found = pending_.find(marker)) == std::string::npos) {
        if (!fill())
            throw std::runtime_error("fake peer: EOF before '" + marker + "'");
    }
    std::string text = pending_.substr(0, found + marker.size());
    pending_.erase(0, found + marker.size());
    return text;
}

namespace {

// Length of the balanced JSON object at the start of text, or 0.
size_t object_length(const std::string &text)
{
    int depth = 0;
    bool in_string = false, escaped = false;
    for (size_t i = 0; i < text.size(); i++) {
        char c = text[i];
        if (in_string) {
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '{') {
            depth++;
        } else if (c == '}' && --depth == 0) {
            return i + 1;
        }
    }
    return 0;
}

} // namespace

std::string Connection::read_command()
{
    engine::Fd ignored;
    return read_command_with_fd(ignored);
}

std::string Connection::read_command_with_fd(engine::Fd &passed)
{
    size_t length;
    while ((length = object_length(pending_)) == 0) {
        if (!fill(&passed))
            throw std::runtime_error("fake peer: EOF before a complete command");
    }
    std::string command = pending_.substr(0, length);
    pending_.erase(0, length);
    return command;
}

bool Connection::write(const std::string &bytes)
{
    size_t done = 0;
    while (done < bytes.size()) {
        pollfd watch{fd_.get(), POLLOUT, 0};
        if (::poll(&watch, 1, 10'000) <= 0)
            throw std::runtime_error("fake peer: client took nothing within 10 s");
        ssize_t sent = ::send(fd_.get(), bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (sent < 0 && (errno == EPIPE || errno == ECONNRESET))
            return false;
        if (sent < 0)
            throw std::runtime_error(std::string("fake peer: send: ") + std::strerror(errno));
        done += static_cast<size_t>(sent);
    }
    return true;
}

void Connection::wait_closed()
{
    while (fill()) {
    }
}

FakePeer::FakePeer(const std::string &path, Script script, int connections)
{
    listener_ = engine::Fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
    if (::bind(listener_.get(), reinterpret_cast<sockaddr *>(&address), sizeof(address)) != 0 ||
        ::listen(listener_.get(), 4) != 0)
        throw std::runtime_error("fake peer: cannot listen on " + path + ": " + std::strerror(errno));
    thread_ = std::thread([this, script, connections] {
        try {
            for (int i = 0; i < connections; i++) {
                pollfd watch{listener_.get(), POLLIN, 0};
                if (::poll(&watch, 1, 10'000) <= 0)
                    throw std::runtime_error("fake peer: no client within 10 s");
                Connection connection(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
                script(connection);
            }
        } catch (const std::exception &e) {
            failure_ = e.what();
        }
    });
}

std::string FakePeer::finish()
{
    if (!joined_) {
        thread_.join();
        joined_ = true;
    }
    return failure_;
}

FakePeer::~FakePeer()
{
    finish();
}

Child::Child(const std::vector<std::string> &argv)
{
    std::vector<char *> args;
    for (const std::string &arg : argv)
        args.push_back(const_cast<char *>(arg.c_str()));
    args.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ < 0)
        throw std::runtime_error("fork failed");
    if (pid_ == 0) {
        ::execvp(args[0], args.data());
        ::_exit(127);
    }
}

Child::~Child()
{
    if (pid_ > 0) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
    }
}

int Child::wait_exit(std::chrono::milliseconds limit)
{
    auto end = std::chrono::steady_clock::now() + limit;
    for (;;) {
        int status;
        pid_t done = ::waitpid(pid_, &status, WNOHANG);
        if (done == pid_) {
            pid_ = -1;
            return status;
        }
        if (std::chrono::steady_clock::now() >= end)
            return -1;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

namespace {

// Whether a unix socket bound to `path` listens: /proc/net/unix sets the flag
// __SO_ACCEPTCON (0x10000) from listen(2) on. Looking there, unlike a test
// connection, leaves the server (one client after another) undisturbed.
bool listening(const std::string &path)
{
    std::ifstream table("/proc/net/unix");
    std::string line;
    std::getline(table, line); // the header
    while (std::getline(table, line)) {
        std::istringstream fields(line);
        std::string slot, refs, protocol, flags, type, state, inode, name;
        if (fields >> slot >> refs >> protocol >> flags >> type >> state >> inode >> name && name == path &&
            (std::stoul(flags, nullptr, 16) & 0x10000))
            return true;
    }
    return false;
}

} // namespace

bool wait_for_socket(const std::string &path, std::chrono::milliseconds limit)
{
    auto end = std::chrono::steady_clock::now() + limit;
    // the file appears at bind(), before the server listens: a client
    // connecting in between (on a loaded host) is refused
    while (!listening(path)) {
        if (std::chrono::steady_clock::now() >= end)
            return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return true;
}

const QemuAccel &qemu_accel()
{
    static const QemuAccel probed = [] {
        const char *script = std::getenv("QEMU_PROBE");
        // the probe's report comes before its one line of options
        std::string command = std::string(script && *script ? script : "scripts/qemu-probe") + " 2>&1";
        FILE *pipe = ::popen(command.c_str(), "r");
        if (!pipe)
            throw std::runtime_error("popen " + command + " failed: " + std::strerror(errno));
        std::string output;
        char chunk[4096];
        while (size_t got = std::fread(chunk, 1, sizeof(chunk), pipe))
            output.append(chunk, got);
        int status = ::pclose(pipe);
        int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        QemuAccel result{QemuAccel::State::fails, {}, output};
        if (code == 0) {
            size_t last = output.find_last_of('\n', output.size() - 2);
            std::string line = last == std::string::npos ? output : output.substr(last + 1);
            result.report = output.substr(0, output.size() - line.size());
            std::istringstream words(line);
            for (std::string word; words >> word;)
                result.options.push_back(word);
            result.state = result.options.empty() ? QemuAccel::State::fails : QemuAccel::State::runs;
        } else if (code == 2) {
            result.state = QemuAccel::State::not_installed;
        }
        std::fputs(result.report.c_str(), stderr);
        return result;
    }();
    return probed;
}

} // namespace qmp_test
