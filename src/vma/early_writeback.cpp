#include "vma/early_writeback.h"

#include <fcntl.h>

namespace engine::vma {

void EarlyWriteback::wrote(std::size_t bytes)
{
    if (fd_ < 0 || (since_start_ += bytes) < kStep)
        return;
    // the pages already under writeback are not waited for
    sync_file_range(fd_, 0, 0, SYNC_FILE_RANGE_WRITE);
    since_start_ = 0;
}

} // namespace engine::vma
