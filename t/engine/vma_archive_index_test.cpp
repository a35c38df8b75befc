// The cluster index and random reads of the nbdkit plugin (ArchiveIndex,
// ArchiveImage): every byte at any offset and length equals the image, block
// status follows the stored blocks, the index file has no name, extents out
// of order across index pages are indexed right, concurrent reads agree, and
// a damaged archive is refused with the reader's message.
#include "vma_test_support.h"

#include "util/fd.h"
#include "vma/archive_image.h"
#include "vma/archive_index.h"
#include "vma/format_error.h"
#include "vma/reader.h"

#include "catch2_compat.h"

#include <algorithm>
#include <atomic>
#include <dirent.h>
#include <random>
#include <sys/mman.h>
#include <thread>
#include <unistd.h>

using namespace vma_test;
namespace vma = engine::vma;

namespace {

// Data with holes: zero 4 KiB blocks, a zero cluster, zero MiB runs.
Bytes holey(std::size_t size, std::uint32_t seed)
{
    Bytes d = random_bytes(size, seed);
    for (std::size_t off = 0; off < size; off += 4096)
        if ((off / 4096) % 5 == 1 || off / 65536 == 3 || (off >> 20) % 4 == 2)
            std::fill_n(d.begin() + static_cast<std::ptrdiff_t>(off), std::min<std::size_t>(4096, size - off), 0);
    return d;
}

std::size_t entries_in(const std::string &dir)
{
    std::size_t n = 0;
    DIR *d = opendir(dir.c_str());
    for (dirent *e; (e = readdir(d));)
        n += std::string(e->d_name) != "." && std::string(e->d_name) != "..";
    closedir(d);
    return n;
}

struct Served {
    engine::Fd archive;
    std::unique_ptr<vma::ArchiveIndex> index;
};

Served serve(const Bytes &archive, const std::string &temp_dir)
{
    Served s{memory_file(archive), nullptr};
    vma::Reader reader(memory_file(archive));
    s.index = std::make_unique<vma::ArchiveIndex>(reader, temp_dir);
    return s;
}

const vma::IndexedDevice &device(const Served &s, const std::string &name)
{
    for (const auto &dev : s.index->devices())
        if (dev.info.name == name)
            return dev;
    FAIL("no device " << name);
    throw;
}

void check_reads(const vma::ArchiveImage &image, const Bytes &expected, std::uint32_t seed)
{
    REQUIRE(image.size() == expected.size());
    Bytes all(expected.size());
    image.read(all.data(), all.size(), 0);
    CHECK(first_difference(all, expected) == -1);
    std::mt19937 rng(seed);
    for (int i = 0; i < 300; i++) {
        std::uint64_t off = rng() % expected.size();
        std::size_t len = std::min<std::uint64_t>(1 + rng() % (3 * vma::kClusterSize), expected.size() - off);
        Bytes got(len);
        image.read(got.data(), len, off);
        INFO("offset " << off << " length " << len);
        REQUIRE(std::equal(got.begin(), got.end(), expected.begin() + static_cast<std::ptrdiff_t>(off)));
    }
}

// The runs map() reports must cover the range in order, and be zero exactly
// where whole 4 KiB blocks of the image are zero.
void check_map(const vma::ArchiveImage &image, const Bytes &expected)
{
    std::uint64_t next = 0;
    bool last_zero = false;
    image.map(0, expected.size(), [&](std::uint64_t off, std::uint64_t len, bool zero) {
        REQUIRE(off == next);
        if (off)
            CHECK(zero != last_zero); // merged runs
        for (std::uint64_t b = off; b < off + len; b += vma::kBlockSize) {
            std::size_t n = std::min<std::uint64_t>(vma::kBlockSize, expected.size() - b);
            bool block_zero = std::all_of(expected.begin() + static_cast<std::ptrdiff_t>(b),
                                          expected.begin() + static_cast<std::ptrdiff_t>(b + n),
                                          [](std::uint8_t c) { return c == 0; });
            INFO("block at " << b);
            REQUIRE(block_zero == zero);
        }
        next = off + len;
        last_zero = zero;
        return true;
    });
    CHECK(next == expected.size());
    int calls = 0;
    image.map(0, expected.size(), [&](std::uint64_t, std::uint64_t, bool) { return ++calls < 1; });
    CHECK(calls == 1); // stops when told
}

} // namespace

TEST_CASE("random reads and block status of several devices and vmstate", "[vma][index]")
{
    TempDir dir;
    Bytes disk0 = holey(3 * (1 << 20) + 4096 * 5 + 512, 1);
    Bytes disk1 = holey(700 * 1024, 2);
    Bytes state = random_bytes(2 * vma::kClusterSize + 8192, 3);
    Bytes archive = write_archive({{"drive-scsi0", disk0}, {"vmstate", state}, {"drive-virtio1", disk1}});
    Served s = serve(archive, dir.path());
    CHECK(entries_in(dir.path()) == 0); // the index file has no name

    REQUIRE(s.index->devices().size() == 3);
    CHECK(s.index->devices()[0].info.name == "drive-scsi0"); // id order
    CHECK(s.index->devices()[1].info.name == "vmstate");
    check_reads(vma::ArchiveImage(*s.index, device(s, "drive-scsi0"), s.archive.get()), disk0, 10);
    check_reads(vma::ArchiveImage(*s.index, device(s, "drive-virtio1"), s.archive.get()), disk1, 11);
    check_map(vma::ArchiveImage(*s.index, device(s, "drive-scsi0"), s.archive.get()), disk0);
    check_map(vma::ArchiveImage(*s.index, device(s, "drive-virtio1"), s.archive.get()), disk1);
    // vmstate is served as vma extract writes it: whole clusters
    Bytes state_clusters = state;
    state_clusters.resize(3 * vma::kClusterSize, 0);
    check_reads(vma::ArchiveImage(*s.index, device(s, "vmstate"), s.archive.get()), state_clusters, 12);
}

TEST_CASE("extents in reverse order across index pages are indexed right", "[vma][index]")
{
    TempDir dir;
    // 600 clusters each: entries of both devices span several 4 KiB pages
    Bytes disk0 = holey(600 * vma::kClusterSize, 4);
    Bytes disk1 = holey(600 * vma::kClusterSize, 5);
    Bytes ordered = write_archive({{"drive-scsi0", disk0}, {"drive-scsi1", disk1}});
    auto offsets = extent_offsets(ordered);
    REQUIRE(offsets.size() > 10);
    Bytes reversed(ordered.begin(), ordered.begin() + static_cast<std::ptrdiff_t>(offsets[0]));
    for (std::size_t i = offsets.size(); i-- > 0;) {
        std::size_t end = i + 1 < offsets.size() ? offsets[i + 1] : ordered.size();
        reversed.insert(reversed.end(), ordered.begin() + static_cast<std::ptrdiff_t>(offsets[i]),
                        ordered.begin() + static_cast<std::ptrdiff_t>(end));
    }
    Served s = serve(reversed, dir.path());
    check_reads(vma::ArchiveImage(*s.index, device(s, "drive-scsi0"), s.archive.get()), disk0, 20);
    check_reads(vma::ArchiveImage(*s.index, device(s, "drive-scsi1"), s.archive.get()), disk1, 21);
    check_map(vma::ArchiveImage(*s.index, device(s, "drive-scsi1"), s.archive.get()), disk1);
}

TEST_CASE("concurrent reads of one image agree", "[vma][index]")
{
    TempDir dir;
    Bytes disk = holey(4 << 20, 6);
    Served s = serve(write_archive({{"drive-scsi0", disk}}), dir.path());
    vma::ArchiveImage image(*s.index, device(s, "drive-scsi0"), s.archive.get());
    std::vector<std::thread> threads;
    std::atomic<int> bad{0};
    for (unsigned t = 0; t < 4; t++)
        threads.emplace_back([&, t] {
            std::mt19937 rng(t);
            Bytes got(256 * 1024);
            for (int i = 0; i < 200; i++) {
                std::uint64_t off = rng() % (disk.size() - got.size());
                image.read(got.data(), got.size(), off);
                if (!std::equal(got.begin(), got.end(), disk.begin() + static_cast<std::ptrdiff_t>(off)))
                    bad++;
            }
        });
    for (auto &t : threads)
        t.join();
    CHECK(bad == 0);
}

TEST_CASE("a damaged archive is refused while indexing, leaving no file", "[vma][index]")
{
    TempDir dir;
    Bytes archive = write_archive({{"drive-scsi0", holey(8 << 20, 7)}});
    auto offsets = extent_offsets(archive);
    Bytes missing(archive.begin(), archive.begin() + static_cast<std::ptrdiff_t>(offsets[1]));
    vma::Reader reader(memory_file(missing));
    CHECK_THROWS_WITH(vma::ArchiveIndex(reader, dir.path()),
                      Catch::Contains("detected missing cluster 58 for stream drive-scsi0"));
    CHECK(entries_in(dir.path()) == 0);
}

TEST_CASE("reads fail with a message when the archive shrank after indexing", "[vma][index]")
{
    TempDir dir;
    Bytes disk = random_bytes(1 << 20, 8);
    Served s = serve(write_archive({{"drive-scsi0", disk}}), dir.path());
    vma::ArchiveImage image(*s.index, device(s, "drive-scsi0"), s.archive.get());
    REQUIRE(ftruncate(s.archive.get(), 100000) == 0);
    Bytes got(65536);
    CHECK_THROWS_WITH(image.read(got.data(), got.size(), 512 * 1024),
                      Catch::Contains("shorter than when it was indexed"));
}
