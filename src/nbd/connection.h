// One client connection to an NBD export (libnbd): the export's size, its
// allocation map (base:allocation block status) and reads, either blocking
// or several in flight at once; and, on a writable export, blocking writes,
// write-zeroes and flush.
//
// Contract:
// - The constructor connects to a unix socket and negotiates the export; the
//   destructor shuts the connection down and closes its socket (libnbd opens
//   it close-on-exec, so no child inherits it).
// - Every failure throws engine::Error("NBD <what> on export '<name>' failed
//   - <libnbd's message>"). After a failed read the connection may be broken;
//   the caller should give up on it.
// - Not thread-safe: one thread drives a Connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

struct nbd_handle;

namespace engine::nbd {

// A run of the export with one allocation state. zero means the server
// promises the run reads as zeros (NBD_STATE_ZERO), so it need not be read.
struct Extent {
    std::uint64_t offset;
    std::uint64_t length;
    bool zero;
};

class Connection {
public:
    // Connects to `socket_path` and opens `export_name`, asking for the
    // base:allocation context. Throws if either fails.
    Connection(const std::string &socket_path, const std::string &export_name);
    ~Connection();
    Connection(const Connection &) = delete;
    Connection &operator=(const Connection &) = delete;

    std::uint64_t size() const { return size_; }
    const std::string &export_name() const { return export_name_; }

    // The allocation map from offset on, as the server describes it: one or
    // more extents, contiguous, starting at offset and ending at most at
    // offset + length (the server may describe less than asked). Without
    // base:allocation support the whole range is one data extent.
    std::vector<Extent> block_status(std::uint64_t offset, std::uint64_t length);

    // Reads count bytes at offset; blocks until done.
    void read(void *buf, std::size_t count, std::uint64_t offset);

    // Starts a read into buf (which must stay valid until it completes) and
    // returns its cookie without waiting. count must not exceed
    // max_request().
    std::uint64_t start_read(void *buf, std::size_t count, std::uint64_t offset);
    // Waits for a started read to finish; throws if it failed.
    void finish_read(std::uint64_t cookie);

    // As start_read, for a write of buf (valid until it completes) and for
    // write-zeroes (only if can_zero()); finish_command() waits for either.
    std::uint64_t start_write(const void *buf, std::size_t count, std::uint64_t offset);
    std::uint64_t start_write_zeroes(std::uint64_t offset, std::uint64_t count);
    void finish_command(std::uint64_t cookie, const char *what);

    // Writes count bytes at offset; blocks until the server has them (not
    // necessarily on stable storage: see flush()).
    void write(const void *buf, std::size_t count, std::uint64_t offset);
    // Makes [offset, offset+count) read as zeros without sending them
    // (NBD_CMD_WRITE_ZEROES). Only if can_zero(); count at most
    // max_zero_request() for start_write_zeroes.
    void write_zeroes(std::uint64_t offset, std::uint64_t count);
    // Asks the server to make every write it acknowledged durable
    // (NBD_CMD_FLUSH); a no-op on a server without flush support.
    void flush();

    // Asks for socket buffers of `bytes` each way (best effort: the kernel
    // caps them), so that large writes leave in one piece.
    void set_socket_buffers(int bytes);

    bool read_only() const { return read_only_; }
    bool can_zero() const { return can_zero_; }
    static std::uint64_t max_zero_request();

    // The largest single read the server accepts (its block_size_maximum,
    // capped at 32 MiB; 32 MiB when it does not say).
    std::size_t max_request() const { return max_request_; }

private:
    [[noreturn]] void fail(const char *what) const;

    nbd_handle *handle_ = nullptr;
    std::string export_name_;
    std::uint64_t size_ = 0;
    std::size_t max_request_ = 0;
    bool has_allocation_map_ = false;
    bool read_only_ = true;
    bool can_zero_ = false;
    bool can_flush_ = false;
};

} // namespace engine::nbd
