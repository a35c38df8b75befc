// Thin images: the writer learns the holes through SEEK_DATA/SEEK_HOLE and
// never reads them, yet writes exactly the archive plain reads would give.
#include "vma_test_support.h"

#include "util/error.h"
#include "util/fd.h"
#include "vma/image_source.h"
#include "vma/writer.h"

#include "catch2_compat.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

using namespace vma_test;
namespace vma = engine::vma;

namespace {

struct Piece {
    std::uint64_t offset;
    std::size_t len;
};

// A sparse file of the given size with random data only in the pieces.
std::string make_thin(const TempDir &dir, const std::string &name, std::uint64_t size,
                      const std::vector<Piece> &pieces)
{
    std::string path = dir / name;
    engine::Fd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    REQUIRE(fd);
    REQUIRE(ftruncate(fd.get(), static_cast<off_t>(size)) == 0);
    std::uint32_t seed = 1;
    for (const auto &p : pieces) {
        Bytes data = random_bytes(p.len, seed++);
        engine::pwrite_all(fd.get(), data.data(), data.size(), p.offset, "write");
    }
    return path;
}

Bytes archive_of(const std::string &path, bool hole_detection)
{
    engine::Fd mem(memfd_create("thin", MFD_CLOEXEC));
    vma::Writer writer(mem.get(), {fixed_uuid(), 1700000000});
    engine::Fd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(fd);
    vma::ImageSource source(std::move(fd), path, hole_detection);
    auto dev = writer.add_device("drive-scsi0", source.size());
    vma::write_image(writer, dev, source);
    writer.finish();
    Bytes out(static_cast<std::size_t>(lseek(mem.get(), 0, SEEK_END)));
    engine::pread_full(mem.get(), out.data(), out.size(), 0, "read");
    return out;
}

void check_thin(std::uint64_t size, const std::vector<Piece> &pieces)
{
    TempDir dir;
    std::string path = make_thin(dir, "thin.raw", size, pieces);
    Bytes thin = archive_of(path, true);
    Bytes plain = archive_of(path, false);
    CHECK(first_difference(thin, plain) == -1);
    Bytes source = read_file(path);
    source.resize((source.size() + 511) / 512 * 512, 0);
    CHECK(first_difference(read_archive(thin).at("drive-scsi0"), source) == -1);
}

} // namespace

TEST_CASE("thin images archive exactly as when every hole is read", "[vma]")
{
    const std::uint64_t MiB = 1 << 20;
    SECTION("data at the start") { check_thin(64 * MiB, {{0, MiB}}); }
    SECTION("data at the end") { check_thin(64 * MiB + 1000, {{64 * MiB - 5000, 6000}}); }
    SECTION("data in the middle at odd offsets")
    {
        check_thin(40 * MiB, {{5 * MiB + 12345, 70000}, {20 * MiB + 4096, 4096}, {30 * MiB - 1, 2}});
    }
    SECTION("a data run ending inside a cluster") { check_thin(8 * MiB, {{65536, 65536 + 8192 + 100}}); }
    SECTION("many pieces across batches")
    {
        std::vector<Piece> pieces;
        for (std::uint64_t off = 0; off < 48 * MiB; off += 3 * MiB + 65536 * 3 + 4096)
            pieces.push_back({off, 300000});
        check_thin(48 * MiB, pieces);
    }
    SECTION("an all-hole image") { check_thin(100 * MiB + 512, {}); }
    SECTION("a dense image") { check_thin(3 * MiB + 777, {{0, 3 * MiB + 777}}); }
}
