// EarlyWriteback against the kernel's own count of a file's dirty pages
// (cachestat(2), Linux 6.5): a restore target's pages go to the disk every
// kStep bytes, not all at the final flush. The count is checked where a
// control file shows dirty pages that sync_file_range(2) starts writing (not
// on tmpfs, which has no writeback, or overlayfs, whose cachestat sees none).
#include "page_cache_probe.h"
#include "util/fd.h"
#include "vma/early_writeback.h"
#include "vma_test_support.h"

#include "catch2_compat.h"

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fcntl.h>
#include <optional>
#include <string>
#include <unistd.h>

using engine::vma::EarlyWriteback;

namespace {

const vma_test::Bytes &block()
{
    static const vma_test::Bytes data = vma_test::random_bytes(1 << 20, 5);
    return data;
}

void write_at(int fd, std::uint64_t offset, std::size_t len)
{
    for (std::size_t done = 0; done < len; done += block().size())
        engine::pwrite_all(fd, block().data(), block().size(), offset + done, "test write");
}

long step_pages()
{
    return static_cast<long>(EarlyWriteback::kStep) / sysconf(_SC_PAGESIZE);
}

// Why the dirty-page checks cannot be made in dir, or nothing when they can:
// a control file written there with half a step must show its pages dirty,
// and sync_file_range(SYNC_FILE_RANGE_WRITE) by hand, what EarlyWriteback
// calls, must take them to near zero.
std::optional<std::string> dirty_check_not_applicable(const vma_test::TempDir &dir)
{
    const std::string path = dir / "control.raw";
    engine::Fd fd(open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    REQUIRE(fd);
    write_at(fd.get(), 0, EarlyWriteback::kStep / 2);
    const long written = engine_test::dirty_pages(fd.get());
    if (written < 0)
        return "no cachestat(2) in this kernel (" + std::to_string(errno) + "): nothing to observe";
    const std::string of_pages = " of " + std::to_string(step_pages() / 2) + " pages dirty";

    if (written < step_pages() / 2 * 9 / 10)
        return engine_test::not_applicable(dir.path(), "shows " + std::to_string(written) + of_pages +
                                                           " after writing them");
    REQUIRE(sync_file_range(fd.get(), 0, 0, SYNC_FILE_RANGE_WRITE) == 0);
    const long kept = engine_test::dirty_pages(fd.get());
    if (kept >= step_pages() / 20)
        return engine_test::not_applicable(dir.path(), "keeps " + std::to_string(kept) + of_pages +
                                                           " after sync_file_range(SYNC_FILE_RANGE_WRITE) by hand");
    return std::nullopt;
}

} // namespace

TEST_CASE("early writeback: a target's pages leave for the disk every step", "[vma]")
{
    vma_test::TempDir dir;
    const std::optional<std::string> not_applicable = dirty_check_not_applicable(dir);

    std::string path = dir / "target.raw";
    engine::Fd fd(open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    REQUIRE(fd);
    EarlyWriteback writeback(fd.get());
    const std::size_t part = EarlyWriteback::kStep / 2;
    write_at(fd.get(), 0, part);
    writeback.wrote(part);
    const long below_step = engine_test::dirty_pages(fd.get());
    write_at(fd.get(), part, part);
    writeback.wrote(part);
    const long at_step = engine_test::dirty_pages(fd.get());
    write_at(fd.get(), 2 * part, part);
    writeback.wrote(part);
    const long next_step = engine_test::dirty_pages(fd.get());
    EarlyWriteback none(-1);
    none.wrote(EarlyWriteback::kStep * 2);
    const long without_file = engine_test::dirty_pages(fd.get());

    if (not_applicable) {
        WARN(*not_applicable);
    } else {
        // below a step nothing starts: the pages stay dirty
        CHECK(below_step > step_pages() / 2 * 9 / 10);
        // the write that completes the step starts writeback of all of them
        CHECK(at_step < step_pages() / 20);
        // and counting starts again
        CHECK(next_step > step_pages() / 2 * 9 / 10);
        // an object without a file does nothing
        CHECK(without_file > step_pages() / 2 * 9 / 10);
    }

    vma_test::Bytes content = vma_test::read_file(path);
    REQUIRE(content.size() == 3 * part);
    for (std::size_t done = 0; done < content.size(); done += block().size())
        CHECK(std::memcmp(content.data() + done, block().data(), block().size()) == 0);
}
