#include "qmp/channel.h"

#include "qmp/error.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>
#include <thread>

namespace engine::qmp {

namespace {

std::string connect_error(const std::string &peer, const std::string &reason)
{
    return "unable to connect to " + peer + " socket - " + reason + "\n";
}

} // namespace

Channel::Channel(const std::string &path, const std::string &peer, std::chrono::milliseconds connect_window)
{
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (path.size() >= sizeof(address.sun_path))
        throw Error(Error::Kind::connect, connect_error(peer, std::strerror(ENAMETOOLONG)));
    std::memcpy(address.sun_path, path.c_str(), path.size() + 1);

    auto start = Clock::now();
    for (int attempt = 1;; attempt++) {
        fd_ = Fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
        if (!fd_)
            throw Error(Error::Kind::connect, connect_error(peer, std::strerror(errno)));
        if (::connect(fd_.get(), reinterpret_cast<sockaddr *>(&address), sizeof(address)) == 0)
            return;
        int error = errno;
        if (error != EINTR && error != EAGAIN)
            throw Error(Error::Kind::connect, connect_error(peer, std::strerror(error)));
        if (Clock::now() - start >= connect_window) {
            throw Error(Error::Kind::connect,
                        connect_error(peer, "timeout after " + std::to_string(attempt) + " retries"));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
}

void Channel::wait_for(short events)
{
    for (;;) {
        auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline_ - Clock::now());
        if (left.count() <= 0)
            throw Error(Error::Kind::timeout, "got timeout\n");
        pollfd watch{fd_.get(), events, 0};
        int wait_ms = left.count() > 60'000 ? 60'000 : static_cast<int>(left.count());
        int ready = ::poll(&watch, 1, wait_ms);
        if (ready > 0)
            return;
        if (ready < 0 && errno != EINTR)
            throw Error(Error::Kind::closed, std::string("poll failed - ") + std::strerror(errno) + "\n");
    }
}

void Channel::send(std::string_view bytes, int fd)
{
    while (!bytes.empty()) {
        iovec data{const_cast<char *>(bytes.data()), bytes.size()};
        msghdr message{};
        message.msg_iov = &data;
        message.msg_iovlen = 1;
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
        if (fd >= 0) {
            message.msg_control = control;
            message.msg_controllen = sizeof(control);
            cmsghdr *header = CMSG_FIRSTHDR(&message);
            header->cmsg_level = SOL_SOCKET;
            header->cmsg_type = SCM_RIGHTS;
            header->cmsg_len = CMSG_LEN(sizeof(int));
            std::memcpy(CMSG_DATA(header), &fd, sizeof(int));
        }
        ssize_t sent = ::sendmsg(fd_.get(), &message, MSG_NOSIGNAL);
        if (sent < 0) {
            int error = errno;
            if (error == EINTR)
                continue;
            if (error == EAGAIN) {
                wait_for(POLLOUT);
                continue;
            }
            if (error == EPIPE || error == ECONNRESET)
                throw Error(Error::Kind::closed, "client closed connection\n");
            if (fd >= 0)
                throw Error(Error::Kind::protocol, std::string("sendfd failed - ") + std::strerror(error) + "\n");
            throw Error(Error::Kind::closed, std::string("write failed - ") + std::strerror(error) + "\n");
        }
        bytes.remove_prefix(static_cast<size_t>(sent));
        fd = -1; // the descriptor travelled with the first bytes
    }
}

bool Channel::receive(std::string &buffer)
{
    char chunk[65536];
    for (;;) {
        ssize_t got = ::recv(fd_.get(), chunk, sizeof(chunk), 0);
        if (got > 0) {
            buffer.append(chunk, static_cast<size_t>(got));
            return true;
        }
        if (got == 0)
            return false;
        int error = errno;
        if (error == EINTR)
            continue;
        if (error == EAGAIN) {
            wait_for(POLLIN);
            continue;
        }
        if (error == ECONNRESET)
            return false;
        throw Error(Error::Kind::closed, std::string("read failed - ") + std::strerror(error) + "\n");
    }
}

} // namespace engine::qmp
