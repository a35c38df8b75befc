// A private NBD export of one image through QEMU's block layer: a qemu-nbd
// child serving `filename` (any format or protocol filename QEMU opens:
// qcow2, vmdk, rbd:..., iscsi://..., nbd:..., json:{...}) on a unix socket
// in a fresh 0700 temporary directory, for exactly one client.
//
// Contract:
// - The constructor starts qemu-nbd with the listening socket handed over
//   by socket activation (LISTEN_FDS), so connect() needs no polling: the
//   handshake waits until QEMU has opened the image, or fails once qemu-nbd
//   has exited. Throws Error("qemu-nbd not found in PATH - install the
//   package qemu-utils") when there is none.
// - connect() throws Error(<QEMU's own message>) when QEMU could not open the
//   image, e.g. "Could not open 'x.qcow2': No such file or directory".
// - qemu-nbd exits by itself when its client disconnects; finish() waits for
//   that and throws if it did not exit with status 0 (closing an image can
//   fail, e.g. writing a qcow2's metadata).
// - The socket and its directory are removed once the client is connected;
//   the destructor stops a qemu-nbd still running (SIGTERM, then SIGKILL),
//   reaps it and removes them if connect() never succeeded: no child, socket
//   or directory is left on any path. If vma itself is killed, qemu-nbd gets
//   SIGTERM from the kernel (PR_SET_PDEATHSIG); as that follows the thread
//   that started qemu-nbd, construct the export on a thread that outlives it.
// - Whatever qemu-nbd writes to stdout or stderr is captured (the caller's
//   stdout may be qmrestore's pipe); warnings of a successful run are copied
//   to stderr by finish().
#pragma once

#include "nbd/connection.h"
#include "util/fd.h"

#include <memory>
#include <optional>
#include <string>
#include <sys/types.h>

namespace engine::nbd {

struct QemuNbdOptions {
    std::string filename;
    std::optional<std::string> format; // -f; QEMU probes without it
    bool read_only = false;            // -r
    std::optional<std::string> cache;  // --cache=none|writeback|...
    bool native_aio = false;           // --aio=native (needs an O_DIRECT cache mode)
};

class QemuNbdExport {
public:
    explicit QemuNbdExport(QemuNbdOptions options);
    ~QemuNbdExport();
    QemuNbdExport(const QemuNbdExport &) = delete;
    QemuNbdExport &operator=(const QemuNbdExport &) = delete;

    // Connects the export's only client and removes the socket. Call once.
    std::unique_ptr<Connection> connect();

    // After the client has disconnected: waits for qemu-nbd to exit and
    // throws Error("qemu-nbd failed closing 'F' - ...") unless it exited
    // with status 0.
    void finish();

    // Why qemu-nbd is gone, after a request failed: "qemu-nbd was killed by
    // signal 9" or "qemu-nbd exited with status 1: <its message>"; empty if
    // it is still running a moment later (then the request's own error is
    // the better text).
    std::string failure_after_error();

    const std::string &filename() const { return options_.filename; }

private:
    void spawn(const std::string &program, int listen_fd);
    // waits up to timeout_ms for the child to exit; true if it did
    bool wait_exit(int timeout_ms);
    void stop() noexcept;
    void remove_files() noexcept;
    // QEMU's message from the captured output, without qemu-nbd's prefixes
    std::string qemu_message() const;
    std::string exit_text() const;

    QemuNbdOptions options_;
    std::string dir_;
    std::string socket_path_;
    Fd output_; // memfd holding the child's stdout and stderr
    pid_t pid_ = -1;
    int status_ = 0; // waitpid status once pid_ has been reaped
    bool exited_ = false;
};

} // namespace engine::nbd
