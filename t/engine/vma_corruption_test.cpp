// Damaged archives: each kind of damage is rejected with a message naming
// it, never a crash (run under ASan/UBSan by `make asan-test`).
#include "vma_test_support.h"

#include "util/endian.h"

#include "catch2_compat.h"

#include <cstring>

using namespace vma_test;

namespace {

const Bytes &base_archive()
{
    static const Bytes archive = [] {
        Bytes disk = random_bytes(8 * (1 << 20) + 5000, 11);
        for (std::size_t off = 1 << 20; off < 2 << 20; off++)
            disk[off] = 0;
        return write_archive({{"drive-scsi0", disk}, {"drive-scsi1", random_bytes(200000, 12)}},
                             {{"qemu-server.conf", "cores: 2\n"}});
    }();
    return archive;
}

Bytes cut(const Bytes &a, std::size_t len)
{
    return Bytes(a.begin(), a.begin() + static_cast<std::ptrdiff_t>(len));
}

std::size_t header_size()
{
    return engine::load_be32(&base_archive()[56]);
}

// The block info slot i of the extent at offset at.
std::uint8_t *slot(Bytes &a, std::size_t at, std::size_t i)
{
    return &a[at + 40 + 8 * i];
}

} // namespace

TEST_CASE("the intact base archive is accepted", "[vma]")
{
    CHECK(rejection(base_archive()) == "");
    CHECK(extent_offsets(base_archive()).size() >= 3);
}

TEST_CASE("truncation anywhere is rejected with the matching message", "[vma]")
{
    const Bytes &a = base_archive();
    auto extents = extent_offsets(a);
    CHECK(rejection(cut(a, 0)) == "can't read vma header - got EOF");
    CHECK(rejection(cut(a, 12287)) == "can't read vma header - got EOF");
    CHECK(rejection(cut(a, 12288)) == "can't read vma header data - got EOF");
    CHECK(rejection(cut(a, header_size() - 1)) == "can't read vma header data - got EOF");
    for (std::size_t at : extents) {
        INFO("extent at " << at);
        CHECK_THAT(rejection(cut(a, at)), Catch::StartsWith("detected missing cluster"));
        CHECK(rejection(cut(a, at + 1)) == "read short extent (1 bytes)");
        CHECK(rejection(cut(a, at + 511)) == "read short extent (511 bytes)");
        if (engine::load_be16(&a[at + 6]) > 0) {
            CHECK_THAT(rejection(cut(a, at + 512)), Catch::StartsWith("short vma extent (512 < "));
            CHECK_THAT(rejection(cut(a, at + 4096 + 511)), Catch::StartsWith("short vma extent (4607 < "));
        }
    }
    CHECK_THAT(rejection(cut(a, a.size() - 1)), Catch::StartsWith("short vma extent"));
    for (std::size_t len = 0; len < a.size(); len += 4999) {
        std::string reason = rejection(cut(a, len));
        INFO("cut at " << len << ": " << reason);
        CHECK(!reason.empty());
        CHECK_THAT(reason, !Catch::StartsWith("unexpected"));
    }
}

TEST_CASE("bit flips in the header and extent headers are caught by the checksums", "[vma]")
{
    const Bytes &a = base_archive();
    for (std::size_t at = 0; at < header_size(); at += 97) {
        Bytes b = a;
        b[at] ^= 0x10;
        std::string reason = rejection(b);
        INFO("flip at " << at);
        CHECK(!reason.empty());
        CHECK_THAT(reason, !Catch::StartsWith("unexpected"));
    }
    for (std::size_t at : extent_offsets(a)) {
        for (std::size_t off = 0; off < 512; off += 13) {
            Bytes b = a;
            b[at + off] ^= 0x01;
            INFO("flip in extent at " << at << " + " << off);
            CHECK(rejection(b) == "wrong vma extent header chechsum");
        }
    }
}

TEST_CASE("a bit flip in the payload changes only that byte (VMA has no data checksum)", "[vma]")
{
    Bytes b = base_archive();
    std::size_t at = extent_offsets(b)[0] + 512 + 100;
    b[at] ^= 0x80;
    CHECK(rejection(b) == "");
    auto original = read_archive(base_archive()), damaged = read_archive(b);
    CHECK(first_difference(original.at("drive-scsi0"), damaged.at("drive-scsi0")) == 100);
}

TEST_CASE("bad header fields are rejected even with a valid checksum", "[vma]")
{
    auto with = [](std::size_t at, std::uint32_t value) {
        Bytes b = base_archive();
        engine::store_be32(&b[at], value);
        fix_header_md5(b);
        return rejection(b);
    };
    Bytes magic = base_archive();
    magic[1] = 'X';
    CHECK(rejection(magic) == "not a vma file - wrong magic number");
    CHECK(with(4, 2) == "wrong vma version 2");
    CHECK(with(48, 100) == "wrong vma blob buffer offset 100");
    CHECK(with(48, 0xffffffff) == "wrong vma blob buffer size 4294967295/59");
    CHECK(with(52, 0xfffffff0) == "wrong vma blob buffer size 12288/4294967280");
    CHECK(with(2044, 7) == "vma contains invalid data pointers");      // not a blob start
    CHECK(with(3068, 0x7fffffff) == "vma contains invalid data pointers"); // far outside
    Bytes size = base_archive();
    engine::store_be32(&size[56], 0xffffffff);
    CHECK(rejection(size) == "wrong vma header size 4294967295");
    engine::store_be32(&size[56], 12288);
    CHECK(rejection(size) == "wrong vma header size 12288");
}

TEST_CASE("bogus blob lengths cut off the names that follow", "[vma]")
{
    Bytes b = base_archive();
    // the first blob (the config name) claims to run past the used area
    b[12288 + 1] = 0xff;
    b[12288 + 2] = 0xff;
    fix_header_md5(b);
    CHECK(rejection(b) == "vma contains invalid data pointers");
    // a name without its terminating NUL is not a name
    Bytes c = base_archive();
    std::size_t name_at = 12288 + engine::load_be32(&c[2044]);
    std::size_t len = c[name_at] | c[name_at + 1] << 8;
    c[name_at + 2 + len - 1] = 'x';
    fix_header_md5(c);
    CHECK(rejection(c) == "vma contains invalid data pointers");
}

TEST_CASE("devices with impossible sizes or bogus names are rejected", "[vma]")
{
    Bytes huge = base_archive();
    engine::store_be64(&huge[4096 + 32 + 8], std::uint64_t(1) << 62);
    fix_header_md5(huge);
    CHECK(rejection(huge) == "vma device 'drive-scsi0' has impossible size 4611686018427387904");

    Bytes larger = base_archive();
    engine::store_be64(&larger[4096 + 32 + 8], std::uint64_t(1) << 40);
    fix_header_md5(larger);
    CHECK(rejection(larger) == "detected missing cluster 129 for stream drive-scsi0");

    Bytes smaller = base_archive();
    engine::store_be64(&smaller[4096 + 32 + 8], 65536);
    fix_header_md5(smaller);
    CHECK(rejection(smaller) == "got wrong block address - write beyond end");

    Bytes noname = base_archive();
    engine::store_be32(&noname[4096 + 32], 3); // not the start of a blob
    fix_header_md5(noname);
    CHECK(rejection(noname) == "got wrong dev id 1");

    Bytes dup = base_archive();
    std::memcpy(&dup[4096 + 64], &dup[4096 + 32], 4); // device 2 named as device 1
    fix_header_md5(dup);
    CHECK(rejection(dup) == "vma contains duplicate device name 'drive-scsi0'");
}

TEST_CASE("extent header damage with a valid checksum names the problem", "[vma]")
{
    std::size_t first = extent_offsets(base_archive())[0];
    auto damaged = [&](auto edit) {
        Bytes b = base_archive();
        edit(b);
        fix_extent_md5(b, first);
        return rejection(b);
    };
    CHECK(damaged([&](Bytes &b) { b[first + 8] ^= 1; }) == "wrong vma extent uuid");
    CHECK(damaged([&](Bytes &b) { b[first + 3] = 'F'; }) == "wrong vma extent header magic");
    CHECK(damaged([&](Bytes &b) { b[first + 5] = 1; }) == "wrong vma extent header magic");
    CHECK(damaged([&](Bytes &b) { engine::store_be16(&b[first + 6], 60000); }) ==
          "vma extent error - too many blocks (60000)");
    auto add_blocks = [&](int delta) {
        return damaged([&](Bytes &b) {
            engine::store_be16(&b[first + 6],
                               static_cast<std::uint16_t>(engine::load_be16(&b[first + 6]) + delta));
        });
    };
    CHECK(add_blocks(-1) == "short vma extent - too many blocks");
    CHECK(add_blocks(+1) == "vma extent error - missing blocks");
    CHECK(damaged([&](Bytes &b) { slot(b, first, 0)[3] = 9; }) == "got wrong dev id 9");
    CHECK(damaged([&](Bytes &b) { engine::store_be32(slot(b, first, 0) + 4, 0x7fffffff); }) ==
          "got wrong block address - write beyond end");
    CHECK(damaged([&](Bytes &b) { engine::store_be32(slot(b, first, 1) + 4, 0); }) ==
          "found duplicated cluster 0 for stream drive-scsi0");
    // a mask bit more than the blocks stored, or one less
    CHECK(damaged([&](Bytes &b) { slot(b, first, 0)[0] = 0xff; slot(b, first, 0)[1] = 0xff; slot(b, first, 1)[0] = 0xff; slot(b, first, 1)[1] = 0xfe; }) ==
          "vma extent error - missing blocks");
    // cluster 20 lies in the zero MiB: a stored block it does not have
    CHECK(damaged([&](Bytes &b) {
              REQUIRE(engine::load_be32(slot(b, first, 20) + 4) == 20);
              REQUIRE(engine::load_be16(slot(b, first, 20)) == 0);
              slot(b, first, 20)[1] = 0x01;
          }) == "short vma extent - too many blocks");
}

TEST_CASE("a missing extent in the middle is a missing cluster", "[vma]")
{
    const Bytes &a = base_archive();
    auto extents = extent_offsets(a);
    Bytes b(a.begin(), a.begin() + static_cast<std::ptrdiff_t>(extents[1]));
    b.insert(b.end(), a.begin() + static_cast<std::ptrdiff_t>(extents[2]), a.end());
    CHECK(rejection(b) == "detected missing cluster 58 for stream drive-scsi0");
    // the same extent twice
    Bytes c(a.begin(), a.begin() + static_cast<std::ptrdiff_t>(extents[2]));
    c.insert(c.end(), a.begin() + static_cast<std::ptrdiff_t>(extents[1]), a.end());
    CHECK(rejection(c) == "found duplicated cluster 58 for stream drive-scsi0");
}

TEST_CASE("vmstate clusters out of order are rejected", "[vma]")
{
    Bytes a = write_archive({{"vmstate", random_bytes(3 * 65536, 5)}});
    std::size_t first = extent_offsets(a)[0];
    engine::store_be32(slot(a, first, 1) + 4, 2);
    fix_extent_md5(a, first);
    CHECK(rejection(a) == "found out of order vmstate data");
}

TEST_CASE("random damage never crashes the reader", "[vma]")
{
    const Bytes &a = base_archive();
    auto extents = extent_offsets(a);
    std::uint64_t x = 42;
    auto next = [&x] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        return x;
    };
    for (int round = 0; round < 300; round++) {
        Bytes b = a;
        int edits = 1 + static_cast<int>(next() % 4);
        for (int e = 0; e < edits; e++) {
            std::size_t at = next() % 3 == 0 ? next() % header_size()
                                             : extents[next() % extents.size()] + next() % 512;
            b[at] = static_cast<std::uint8_t>(next());
        }
        if (next() % 2)
            fix_header_md5(b);
        for (std::size_t e : extents)
            if (next() % 2)
                fix_extent_md5(b, e);
        std::string reason = rejection(b);
        INFO("round " << round << ": " << reason);
        CHECK_THAT(reason, !Catch::StartsWith("unexpected"));
    }
}
