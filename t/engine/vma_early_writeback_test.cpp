// EarlyWriteback against the kernel's own count of a file's dirty pages
// (cachestat(2), Linux 6.5): a restore target's pages go to the disk every
// kStep bytes, not all at the final flush.
#include "util/fd.h"
#include "vma/early_writeback.h"
#include "vma_test_support.h"

#include "catch2_compat.h"

#include <cerrno>
#include <cstdint>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

namespace {

// cachestat(2)'s ABI; Debian 12's headers predate it
constexpr long kSysCachestat = 451;
struct CachestatRange {
    std::uint64_t off, len;
};
struct Cachestat {
    std::uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};

// The file's dirty pages, or -1 where the kernel cannot tell.
long dirty_pages(int fd)
{
    CachestatRange range{0, 0}; // the whole file
    Cachestat stat{};
    if (syscall(kSysCachestat, fd, &range, &stat, 0) != 0)
        return -1;
    return static_cast<long>(stat.nr_dirty);
}

void write_at(int fd, std::uint64_t offset, std::size_t len)
{
    static const vma_test::Bytes data = vma_test::random_bytes(1 << 20, 5);
    for (std::size_t done = 0; done < len; done += data.size())
        engine::pwrite_all(fd, data.data(), data.size(), offset + done, "test write");
}

} // namespace

TEST_CASE("early writeback: a target's pages leave for the disk every step", "[vma]")
{
    vma_test::TempDir dir;
    struct statfs fs;
    REQUIRE(statfs(dir.path().c_str(), &fs) == 0);
    if (fs.f_type == TMPFS_MAGIC) {
        WARN("TMPDIR is a tmpfs, which has no writeback: nothing to observe");
        return;
    }
    std::string path = dir / "target.raw";
    engine::Fd fd(open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    REQUIRE(fd);
    if (dirty_pages(fd.get()) < 0) {
        WARN("no cachestat(2) in this kernel (" << errno << "): nothing to observe");
        return;
    }
    const long page = sysconf(_SC_PAGESIZE);
    const long step_pages = static_cast<long>(engine::vma::EarlyWriteback::kStep) / page;

    engine::vma::EarlyWriteback writeback(fd.get());
    // below a step nothing starts: the pages stay dirty
    std::size_t part = engine::vma::EarlyWriteback::kStep / 2;
    write_at(fd.get(), 0, part);
    writeback.wrote(part);
    CHECK(dirty_pages(fd.get()) > step_pages / 2 * 9 / 10);
    // the write that completes the step starts writeback of all of them
    write_at(fd.get(), part, part);
    writeback.wrote(part);
    CHECK(dirty_pages(fd.get()) < step_pages / 20);
    // and counting starts again
    write_at(fd.get(), 2 * part, part);
    writeback.wrote(part);
    CHECK(dirty_pages(fd.get()) > step_pages / 2 * 9 / 10);

    // an object without a file does nothing
    engine::vma::EarlyWriteback none(-1);
    none.wrote(engine::vma::EarlyWriteback::kStep * 2);
    CHECK(dirty_pages(fd.get()) > step_pages / 2 * 9 / 10);
}
