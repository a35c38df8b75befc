// An owned file descriptor and the full-length I/O loops every caller needs
// (retrying EINTR and short transfers).
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

namespace engine {

// Owns one fd; closes it when destroyed. Move-only.
class Fd {
public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    Fd(Fd &&other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    Fd &operator=(Fd &&other) noexcept;
    Fd(const Fd &) = delete;
    Fd &operator=(const Fd &) = delete;
    ~Fd();

    int get() const { return fd_; }
    explicit operator bool() const { return fd_ >= 0; }
    // Gives up ownership without closing.
    int release() { return std::exchange(fd_, -1); }
    // Closes now and reports a failing close (which can mean lost data on
    // NFS or a full disk) by throwing Error("<what> - <errno text>").
    void close_checked(const char *what);

private:
    int fd_ = -1;
};

// Reads until len bytes or end of file; returns the bytes read (less than
// len only at EOF). Throws Error("<what> - <errno text>") on a read error.
std::size_t read_full(int fd, void *buf, std::size_t len, const char *what);

// pread at offset until len bytes or end of file; as read_full.
std::size_t pread_full(int fd, void *buf, std::size_t len, std::uint64_t offset,
                       const char *what);

// Writes all len bytes (a pipe may take them in pieces). Throws
// Error("<what> - <errno text>") on failure, e.g. ENOSPC or EPIPE.
void write_all(int fd, const void *buf, std::size_t len, const char *what);

// pwrite of all len bytes at offset; as write_all.
void pwrite_all(int fd, const void *buf, std::size_t len, std::uint64_t offset,
                const char *what);

} // namespace engine
