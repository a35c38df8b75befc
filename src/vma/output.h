// Where `vma create` writes an archive, named as Proxmox's vma names it:
// "exec:COMMAND" pipes into `/bin/sh -c COMMAND`, an existing FIFO is opened
// for writing, anything else is a new file (O_EXCL: never overwritten).
#pragma once

#include "util/fd.h"

#include <string>
#include <sys/types.h>

namespace engine::vma {

class ArchiveOutput {
public:
    // Opens or starts the target. Throws Error("can't open file X - ...") or
    // Error("can't popen command 'C' - ...").
    explicit ArchiveOutput(const std::string &target);
    // Without commit(): closes the fd, waits for the command, and removes a
    // file it created, so a failed run leaves no partial archive behind.
    ~ArchiveOutput();
    ArchiveOutput(const ArchiveOutput &) = delete;
    ArchiveOutput &operator=(const ArchiveOutput &) = delete;

    // The fd to hand to the Writer.
    int fd() const { return fd_.get(); }

    // Closes the output and, for a command, waits for it; throws Error if the
    // close fails or the command exits non-zero (then a created file is
    // removed as in the destructor).
    void commit();

private:
    void abandon() noexcept;
    int wait_child() noexcept;

    std::string target_;
    Fd fd_;
    bool created_file_ = false;
    pid_t child_ = -1;
};

} // namespace engine::vma
