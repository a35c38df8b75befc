// Starts the writeback of a restore target's dirty pages every kStep bytes
// written, so that the disk writes while the restore goes on and the final
// flush (fdatasync, or qemu-nbd's) waits for the last step only instead of
// for the whole disk. Advice only: the final flush still makes the data
// durable and reports any write error.
//
// Contract: the fd (not owned) is a regular file or block device written
// through the page cache; -1 makes the object do nothing. wrote() is called
// after each write, on one thread.
#pragma once

#include <cstddef>

namespace engine::vma {

class EarlyWriteback {
public:
    static constexpr std::size_t kStep = 32 << 20;

    explicit EarlyWriteback(int fd) : fd_(fd) {}

    // Counts bytes written; starts the writeback of the whole file (without
    // waiting for it) once kStep bytes have been written since the last start.
    void wrote(std::size_t bytes);

private:
    int fd_;
    std::size_t since_start_ = 0;
};

} // namespace engine::vma
