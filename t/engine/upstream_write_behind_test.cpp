// The archive's write-behind: on a regular file the pages written long
// enough ago leave the page cache and the file keeps every byte; on a pipe it
// does nothing. The cache is checked where a control file shows that the
// kernel lets a program drop its pages (not on tmpfs or overlayfs).
#include "upstream/write_behind.h"
#include "page_cache_probe.h"
#include "util/fd.h"
#include "vma_test_support.h"

#include "catch2_compat.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <optional>
#include <string>

using engine::upstream::WriteBehind;

namespace {

constexpr std::size_t kChunk = 1 << 20;

std::size_t page_size()
{
    return static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

// Why the cache check cannot be made in dir, or nothing when it can: a
// control file written there with plain writes must show its pages cached,
// and the drop WriteBehind relies on, done by hand, must take them out.
std::optional<std::string> cache_check_not_applicable(const vma_test::TempDir &dir)
{
    const std::string path = dir / "control";
    engine::Fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    REQUIRE(fd);
    const std::size_t size = WriteBehind::kWindow;
    const vma_test::Bytes chunk = vma_test::random_bytes(kChunk, 1000);
    for (std::size_t done = 0; done < size; done += kChunk)
        engine::write_all(fd.get(), chunk.data(), chunk.size(), "write");
    const std::size_t pages = size / page_size();
    const std::string of_pages = " of " + std::to_string(pages) + " pages cached";

    const std::size_t written = engine_test::cached_pages(fd.get(), 0, size);
    if (written < pages * 9 / 10)
        return engine_test::not_applicable(dir.path(), "shows " + std::to_string(written) + of_pages +
                                                           " after writing them");
    REQUIRE(sync_file_range(fd.get(), 0, size,
                            SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER) == 0);
    REQUIRE(posix_fadvise(fd.get(), 0, size, POSIX_FADV_DONTNEED) == 0);
    const std::size_t kept = engine_test::cached_pages(fd.get(), 0, size);
    if (kept >= pages / 10)
        return engine_test::not_applicable(dir.path(), "keeps " + std::to_string(kept) + of_pages +
                                                           " after sync_file_range + POSIX_FADV_DONTNEED by hand");
    return std::nullopt;
}

} // namespace

TEST_CASE("write-behind: a file keeps every byte and drops its old pages from the cache", "[upstream]")
{
    vma_test::TempDir dir;
    const std::optional<std::string> not_applicable = cache_check_not_applicable(dir);

    const std::string path = dir / "archive.vma";
    engine::Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    REQUIRE(fd);
    engine::write_all(fd.get(), "head", 4, "write"); // starts at an offset
    WriteBehind write_behind(fd.get());
    const std::size_t chunks = 64;
    for (std::size_t i = 0; i < chunks; i++) {
        vma_test::Bytes chunk = vma_test::random_bytes(kChunk, static_cast<std::uint32_t>(i));
        engine::write_all(fd.get(), chunk.data(), chunk.size(), "write");
        write_behind.advance();
    }
    fd.close_checked("close");

    // before anything reads the file: what is cached is what the writes left
    if (not_applicable) {
        WARN(*not_applicable);
    } else {
        engine::Fd reader(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        REQUIRE(reader);
        const std::size_t old_part = chunks * kChunk - WriteBehind::kWindow - 2 * WriteBehind::kStep;
        CHECK(engine_test::cached_pages(reader.get(), 0, old_part) < old_part / page_size() / 10);
    }

    vma_test::Bytes content = vma_test::read_file(path);
    REQUIRE(content.size() == 4 + chunks * kChunk);
    CHECK(std::memcmp(content.data(), "head", 4) == 0);
    for (std::size_t i = 0; i < chunks; i++) {
        vma_test::Bytes chunk = vma_test::random_bytes(kChunk, static_cast<std::uint32_t>(i));
        CHECK(std::memcmp(content.data() + 4 + i * kChunk, chunk.data(), kChunk) == 0);
    }
}

TEST_CASE("write-behind: a pipe is left alone", "[upstream]")
{
    int ends[2];
    REQUIRE(::pipe2(ends, O_CLOEXEC) == 0);
    engine::Fd read_end(ends[0]), write_end(ends[1]);
    WriteBehind write_behind(write_end.get());
    engine::write_all(write_end.get(), "data", 4, "write");
    write_behind.advance();
    char buf[4];
    REQUIRE(engine::read_full(read_end.get(), buf, 4, "read") == 4);
    CHECK(std::memcmp(buf, "data", 4) == 0);
}
