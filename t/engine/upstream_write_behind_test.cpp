// The archive's write-behind: on a regular file the pages written long
// enough ago leave the page cache and the file keeps every byte; on a pipe it
// does nothing.
#include "upstream/write_behind.h"
#include "util/fd.h"
#include "vma_test_support.h"

#include "catch2_compat.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <linux/magic.h>

#include <cstring>

using engine::upstream::WriteBehind;

namespace {

constexpr std::size_t kChunk = 1 << 20;

// How many pages of [offset, offset + length) of the file are cached.
std::size_t cached_pages(int fd, off_t offset, std::size_t length)
{
    void *map = ::mmap(nullptr, length, PROT_READ, MAP_SHARED, fd, offset);
    REQUIRE(map != MAP_FAILED);
    const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    std::vector<unsigned char> resident((length + page - 1) / page);
    REQUIRE(::mincore(map, length, resident.data()) == 0);
    ::munmap(map, length);
    std::size_t cached = 0;
    for (unsigned char r : resident)
        cached += r & 1;
    return cached;
}

} // namespace

TEST_CASE("write-behind: a file keeps every byte and drops its old pages from the cache", "[upstream]")
{
    vma_test::TempDir dir;
    struct statfs fs;
    REQUIRE(::statfs(dir.path().c_str(), &fs) == 0);

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
    if (fs.f_type == TMPFS_MAGIC) {
        WARN("SKIPPED the page cache check: $TMPDIR is a tmpfs, whose pages cannot be dropped");
    } else {
        engine::Fd reader(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        REQUIRE(reader);
        const std::size_t old_part = chunks * kChunk - WriteBehind::kWindow - 2 * WriteBehind::kStep;
        const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
        CHECK(cached_pages(reader.get(), 0, old_part) < old_part / page / 10);
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
