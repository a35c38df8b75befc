// Keeps the page cache an archive file occupies small, as nbdcopy does for
// the files it writes: writeback of what was just written starts at once,
// and the pages further behind are waited for and dropped. The copy then
// cycles through a few tens of MiB of cache instead of filling memory with an
// archive nobody reads back (which evicts the VMs' own cache and, on a host
// short of free pages, makes every write slow), and a storage write error
// shows up during the backup rather than after it.
//
// Contract: does nothing unless fd is a regular file (a pipe to a compressor
// needs none of this). advance() reads the fd's current offset, so it must be
// called from the thread that writes the fd (sequentially, with write(2)),
// between writes. Throws engine::Error("vma archive write failed - <errno
// text>") when the kernel reports a failed writeback. Memory: at most
// kStep + kWindow bytes of the archive stay cached through this object.
#pragma once

#include <sys/types.h>

namespace engine::upstream {

class WriteBehind {
public:
    // writeback is started for every kStep bytes written ...
    static constexpr off_t kStep = 8 << 20;
    // ... and waited for and dropped once it lies kWindow bytes behind
    static constexpr off_t kWindow = 32 << 20;

    explicit WriteBehind(int fd);

    // Handles the bytes written since the last call.
    void advance();

private:
    int fd_ = -1; // -1: not a regular file
    off_t started_ = 0; // writeback started for the bytes before this offset
    off_t dropped_ = 0; // cached pages dropped before this offset
};

} // namespace engine::upstream
