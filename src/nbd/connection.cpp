#include "nbd/connection.h"

#include "util/error.h"

#include <libnbd.h>

#include <algorithm>
#include <sys/socket.h>

namespace engine::nbd {

namespace {

constexpr std::size_t kMaxRequest = 32u << 20;
// NBD's block status and write-zeroes request lengths are 32 bits wide.
constexpr std::uint64_t kMaxStatusRequest = 0xffffffffu & ~std::uint64_t(0xfffff);
constexpr std::uint64_t kMaxZeroRequest = kMaxStatusRequest;

} // namespace

[[noreturn]] void Connection::fail(const char *what) const
{
    const char *message = nbd_get_error();
    throw Error(std::string("NBD ") + what + " on export '" + export_name_ + "' failed - " +
                (message ? message : "unknown error"));
}

Connection::Connection(const std::string &socket_path, const std::string &export_name)
    : export_name_(export_name)
{
    handle_ = nbd_create();
    if (!handle_)
        fail("handle creation");
    try {
        if (nbd_set_export_name(handle_, export_name.c_str()) < 0)
            fail("export selection");
        if (nbd_add_meta_context(handle_, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0)
            fail("meta context request");
        // libnbd zeroes every read buffer first unless told not to: a second
        // pass over all data, and a read that fails throws anyway
        if (nbd_set_pread_initialize(handle_, false) < 0)
            fail("read setup");
        if (nbd_connect_unix(handle_, socket_path.c_str()) < 0)
            fail(("connect to '" + socket_path + "'").c_str());
        int64_t size = nbd_get_size(handle_);
        if (size < 0)
            fail("size query");
        size_ = static_cast<std::uint64_t>(size);
        int has_map = nbd_can_meta_context(handle_, LIBNBD_CONTEXT_BASE_ALLOCATION);
        if (has_map < 0)
            fail("meta context query");
        has_allocation_map_ = has_map == 1;
        int read_only = nbd_is_read_only(handle_), can_zero = nbd_can_zero(handle_),
            can_flush = nbd_can_flush(handle_);
        if (read_only < 0 || can_zero < 0 || can_flush < 0)
            fail("feature query");
        read_only_ = read_only != 0;
        can_zero_ = can_zero == 1;
        can_flush_ = can_flush == 1;
        int64_t maximum = nbd_get_block_size(handle_, LIBNBD_SIZE_MAXIMUM);
        max_request_ = maximum > 0 ? std::min<std::size_t>(static_cast<std::size_t>(maximum), kMaxRequest)
                                   : kMaxRequest;
    } catch (...) {
        nbd_close(handle_);
        throw;
    }
}

Connection::~Connection()
{
    // a graceful NBD_CMD_DISC first, so the server sees a clean disconnect
    nbd_shutdown(handle_, 0);
    nbd_close(handle_);
}

std::vector<Extent> Connection::block_status(std::uint64_t offset, std::uint64_t length)
{
    length = std::min({length, size_ - std::min(offset, size_), kMaxStatusRequest});
    if (length == 0)
        return {};
    if (!has_allocation_map_)
        return {{offset, length, false}};

    struct Collect {
        std::uint64_t next;
        std::uint64_t end;
        std::vector<Extent> extents;
    } collect{offset, offset + length, {}};
    auto on_extents = [](void *user_data, const char *context, uint64_t, uint32_t *entries,
                         size_t count, int *) -> int {
        auto *c = static_cast<Collect *>(user_data);
        if (std::string_view(context) != LIBNBD_CONTEXT_BASE_ALLOCATION)
            return 0;
        for (size_t i = 0; i + 1 < count && c->next < c->end; i += 2) {
            std::uint64_t len = std::min<std::uint64_t>(entries[i], c->end - c->next);
            bool zero = (entries[i + 1] & LIBNBD_STATE_ZERO) != 0;
            if (!c->extents.empty() && c->extents.back().zero == zero)
                c->extents.back().length += len;
            else
                c->extents.push_back({c->next, len, zero});
            c->next += len;
        }
        return 0;
    };
    if (nbd_block_status(handle_, length, offset, nbd_extent_callback{on_extents, &collect, nullptr}, 0) < 0)
        fail("block status");
    if (collect.extents.empty())
        throw Error("NBD block status on export '" + export_name_ + "' failed - the server described no extent at " +
                    std::to_string(offset));
    return collect.extents;
}

void Connection::read(void *buf, std::size_t count, std::uint64_t offset)
{
    for (std::size_t done = 0; done < count;) {
        std::size_t chunk = std::min(count - done, max_request_);
        if (nbd_pread(handle_, static_cast<char *>(buf) + done, chunk, offset + done, 0) < 0)
            fail("read");
        done += chunk;
    }
}

std::uint64_t Connection::start_read(void *buf, std::size_t count, std::uint64_t offset)
{
    int64_t cookie = nbd_aio_pread(handle_, buf, count, offset, NBD_NULL_COMPLETION, 0);
    if (cookie < 0)
        fail("read");
    return static_cast<std::uint64_t>(cookie);
}

void Connection::finish_read(std::uint64_t cookie)
{
    finish_command(cookie, "read");
}

std::uint64_t Connection::start_write(const void *buf, std::size_t count, std::uint64_t offset)
{
    int64_t cookie = nbd_aio_pwrite(handle_, buf, count, offset, NBD_NULL_COMPLETION, 0);
    if (cookie < 0)
        fail("write");
    return static_cast<std::uint64_t>(cookie);
}

std::uint64_t Connection::start_write_zeroes(std::uint64_t offset, std::uint64_t count)
{
    int64_t cookie = nbd_aio_zero(handle_, count, offset, NBD_NULL_COMPLETION, 0);
    if (cookie < 0)
        fail("write zeroes");
    return static_cast<std::uint64_t>(cookie);
}

void Connection::finish_command(std::uint64_t cookie, const char *what)
{
    for (;;) {
        int done = nbd_aio_command_completed(handle_, cookie);
        if (done < 0)
            fail(what);
        if (done == 1)
            return;
        if (nbd_poll(handle_, -1) < 0)
            fail(what);
    }
}

std::uint64_t Connection::max_zero_request()
{
    return kMaxZeroRequest;
}

void Connection::write(const void *buf, std::size_t count, std::uint64_t offset)
{
    for (std::size_t done = 0; done < count;) {
        std::size_t chunk = std::min(count - done, max_request_);
        if (nbd_pwrite(handle_, static_cast<const char *>(buf) + done, chunk, offset + done, 0) < 0)
            fail("write");
        done += chunk;
    }
}

void Connection::write_zeroes(std::uint64_t offset, std::uint64_t count)
{
    for (std::uint64_t done = 0; done < count;) {
        std::uint64_t chunk = std::min(count - done, kMaxZeroRequest);
        if (nbd_zero(handle_, chunk, offset + done, 0) < 0)
            fail("write zeroes");
        done += chunk;
    }
}

void Connection::flush()
{
    if (can_flush_ && nbd_flush(handle_, 0) < 0)
        fail("flush");
}

void Connection::set_socket_buffers(int bytes)
{
    int fd = nbd_aio_get_fd(handle_);
    if (fd < 0)
        return;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
}

} // namespace engine::nbd
