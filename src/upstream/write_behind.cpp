#include "upstream/write_behind.h"

#include "util/error.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace engine::upstream {

WriteBehind::WriteBehind(int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        return;
    off_t offset = lseek(fd, 0, SEEK_CUR);
    if (offset < 0)
        return;
    fd_ = fd;
    started_ = dropped_ = offset;
}

void WriteBehind::advance()
{
    if (fd_ < 0)
        return;
    off_t written = lseek(fd_, 0, SEEK_CUR);
    if (written < 0)
        throw_errno("vma archive write failed");
    if (written - started_ >= kStep) {
        if (sync_file_range(fd_, started_, written - started_, SYNC_FILE_RANGE_WRITE) < 0)
            throw_errno("vma archive write failed");
        started_ = written;
    }
    if (started_ - dropped_ >= kWindow + kStep) {
        off_t end = started_ - kWindow;
        if (sync_file_range(fd_, dropped_, end - dropped_,
                            SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER) < 0)
            throw_errno("vma archive write failed");
        // advice only: pages it cannot drop simply stay cached
        posix_fadvise(fd_, dropped_, end - dropped_, POSIX_FADV_DONTNEED);
        dropped_ = end;
    }
}

} // namespace engine::upstream
