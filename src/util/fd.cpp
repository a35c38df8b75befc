#include "util/fd.h"

#include "util/error.h"

#include <cerrno>
#include <unistd.h>

namespace engine {

Fd &Fd::operator=(Fd &&other) noexcept
{
    if (this != &other) {
        if (fd_ >= 0)
            ::close(fd_);
        fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
}

Fd::~Fd()
{
    if (fd_ >= 0)
        ::close(fd_);
}

void Fd::close_checked(const char *what)
{
    if (::close(std::exchange(fd_, -1)) < 0 && errno != EINTR)
        throw_errno(what);
}

namespace {

// Repeats `read_at(done)`, a read into the buffer from byte `done` on, until
// `len` bytes or end of file, retrying EINTR.
template <typename ReadAt>
std::size_t read_until_full(std::size_t len, const char *what, ReadAt read_at)
{
    std::size_t done = 0;
    while (done < len) {
        ssize_t n = read_at(done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            throw_errno(what);
        }
        if (n == 0)
            break;
        done += static_cast<std::size_t>(n);
    }
    return done;
}

} // namespace

std::size_t read_full(int fd, void *buf, std::size_t len, const char *what)
{
    auto *p = static_cast<unsigned char *>(buf);
    return read_until_full(len, what,
                           [&](std::size_t done) { return ::read(fd, p + done, len - done); });
}

std::size_t pread_full(int fd, void *buf, std::size_t len, std::uint64_t offset,
                       const char *what)
{
    auto *p = static_cast<unsigned char *>(buf);
    return read_until_full(len, what, [&](std::size_t done) {
        return ::pread(fd, p + done, len - done, static_cast<off_t>(offset + done));
    });
}

void write_all(int fd, const void *buf, std::size_t len, const char *what)
{
    auto *p = static_cast<const unsigned char *>(buf);
    while (len > 0) {
        ssize_t n = ::write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            throw_errno(what);
        }
        p += n;
        len -= static_cast<std::size_t>(n);
    }
}

void pwrite_all(int fd, const void *buf, std::size_t len, std::uint64_t offset,
                const char *what)
{
    auto *p = static_cast<const unsigned char *>(buf);
    while (len > 0) {
        ssize_t n = ::pwrite(fd, p, len, static_cast<off_t>(offset));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            throw_errno(what);
        }
        p += n;
        offset += static_cast<std::uint64_t>(n);
        len -= static_cast<std::size_t>(n);
    }
}

} // namespace engine
