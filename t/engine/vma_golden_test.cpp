// A small archive assembled byte by byte from the format description in
// spec/proxmox-interfaces.md section 5 (offsets written out here on purpose,
// not taken from format.h): the writer must produce exactly these bytes and
// the reader must accept them.
#include "vma_test_support.h"

#include "util/fd.h"
#include "util/md5.h"
#include "vma/writer.h"

#include "catch2_compat.h"

#include <cstring>
#include <sys/mman.h>
#include <unistd.h>

using namespace vma_test;

namespace {

void put_be(Bytes &b, std::size_t at, std::uint64_t v, int width)
{
    for (int i = width - 1; i >= 0; i--, v >>= 8)
        b[at + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(v);
}

void put_md5(Bytes &b, std::size_t begin, std::size_t len, std::size_t md5_at)
{
    auto digest = engine::md5(b.data() + begin, len);
    std::memcpy(b.data() + md5_at, digest.data(), 16);
}

std::size_t put_blob(Bytes &b, std::size_t blob_base, std::size_t pos, const std::string &data)
{
    b[blob_base + pos] = static_cast<std::uint8_t>(data.size() & 0xff);
    b[blob_base + pos + 1] = static_cast<std::uint8_t>(data.size() >> 8);
    std::memcpy(b.data() + blob_base + pos + 2, data.data(), data.size());
    return pos + 2 + data.size();
}

constexpr std::int64_t kCtime = 1635671142; // 2021-10-31

// Device 1 "drive-scsi0": 70000 bytes, recorded as 70144 (next 512), two
// clusters. Device 2 "drive-sata1": 4096 zero bytes, one cluster, mask 0.
Bytes disk1()
{
    Bytes d(70000, 0);
    std::memset(d.data(), 0x11, 4096);                // cluster 0 block 0
    std::memset(d.data() + 5 * 4096, 0x55, 4096);     // cluster 0 block 5
    std::memset(d.data() + 65536, 0x22, 4096);        // cluster 1 block 0
    std::memset(d.data() + 65536 + 4096, 0x33, 70000 - 69632); // block 1, partial
    return d;
}

Bytes golden_archive()
{
    // header: 12288 fixed bytes + a 512-byte blob area
    Bytes h(12288 + 512, 0);
    std::memcpy(h.data(), "VMA\0", 4);
    put_be(h, 4, 1, 4);
    auto uuid = fixed_uuid();
    std::memcpy(h.data() + 8, uuid.data(), 16);
    put_be(h, 24, static_cast<std::uint64_t>(kCtime), 8);
    std::size_t pos = 1; // blob 0 is the unused dummy byte
    std::size_t cfg_name = pos;
    pos = put_blob(h, 12288, pos, std::string("qemu-server.conf\0", 17));
    std::size_t cfg_data = pos;
    pos = put_blob(h, 12288, pos, "abc\n");
    std::size_t dev1_name = pos;
    pos = put_blob(h, 12288, pos, std::string("drive-scsi0\0", 12));
    std::size_t dev2_name = pos;
    pos = put_blob(h, 12288, pos, std::string("drive-sata1\0", 12));
    put_be(h, 48, 12288, 4);       // blob buffer offset
    put_be(h, 52, pos, 4);         // blob buffer size in use
    put_be(h, 56, 12288 + 512, 4); // header size
    put_be(h, 2044, cfg_name, 4);
    put_be(h, 3068, cfg_data, 4);
    put_be(h, 4096 + 32 * 1, dev1_name, 4);
    put_be(h, 4096 + 32 * 1 + 8, 70144, 8);
    put_be(h, 4096 + 32 * 2, dev2_name, 4);
    put_be(h, 4096 + 32 * 2 + 8, 4096, 8);
    put_md5(h, 0, h.size(), 32);

    // one extent: three slots, four stored blocks
    Bytes e(512 + 4 * 4096, 0);
    std::memcpy(e.data(), "VMAE", 4);
    put_be(e, 6, 4, 2);
    std::memcpy(e.data() + 8, uuid.data(), 16);
    put_be(e, 40, (std::uint64_t(0x0021) << 48) | (std::uint64_t(1) << 32) | 0, 8);
    put_be(e, 48, (std::uint64_t(0x0003) << 48) | (std::uint64_t(1) << 32) | 1, 8);
    put_be(e, 56, (std::uint64_t(0x0000) << 48) | (std::uint64_t(2) << 32) | 0, 8);
    std::memset(e.data() + 512, 0x11, 4096);
    std::memset(e.data() + 512 + 4096, 0x55, 4096);
    std::memset(e.data() + 512 + 2 * 4096, 0x22, 4096);
    std::memset(e.data() + 512 + 3 * 4096, 0x33, 70000 - 69632); // zero padded
    put_md5(e, 0, 512, 24);

    h.insert(h.end(), e.begin(), e.end());
    return h;
}

} // namespace

TEST_CASE("the writer reproduces the spec-built golden archive byte for byte", "[vma]")
{
    Bytes archive = write_archive({{"drive-scsi0", disk1()}, {"drive-sata1", Bytes(4096, 0)}},
                                  {{"/etc/pve/qemu-server/qemu-server.conf", "abc\n"}}, kCtime);
    CHECK(first_difference(archive, golden_archive()) == -1);
}

TEST_CASE("the writer never stores bytes past the device end", "[vma]")
{
    engine::Fd mem(memfd_create("golden", MFD_CLOEXEC));
    engine::vma::Writer writer(mem.get(), {fixed_uuid(), kCtime});
    writer.add_config("qemu-server.conf", "abc\n");
    auto dev1 = writer.add_device("drive-scsi0", 70000);
    auto dev2 = writer.add_device("drive-sata1", 4096);
    CHECK(writer.device_size(dev1) == 70144);
    Bytes d = disk1();
    d.resize(70144, 0);        // the recorded size: 70000 rounded up to 512
    d.resize(2 * 65536, 0xee); // garbage past the end must not be stored
    writer.write_cluster(dev1, 0, d.data());
    writer.write_cluster(dev1, 1, d.data() + 65536);
    writer.write_cluster(dev2, 0, nullptr);
    writer.finish();
    CHECK(writer.transferred(dev1) == 70144);
    CHECK(writer.zero_bytes(dev1) == 70144 - 4 * 4096 + (4096 - 512));
    CHECK(writer.transferred(dev2) == 4096);
    CHECK(writer.zero_bytes(dev2) == 4096);
    Bytes out(static_cast<std::size_t>(lseek(mem.get(), 0, SEEK_END)));
    engine::pread_full(mem.get(), out.data(), out.size(), 0, "read");
    CHECK(first_difference(out, golden_archive()) == -1);
}

TEST_CASE("the reader accepts the spec-built golden archive", "[vma]")
{
    auto images = read_archive(golden_archive());
    Bytes expected = disk1();
    expected.resize(70144, 0);
    CHECK(first_difference(images.at("drive-scsi0"), expected) == -1);
    CHECK(first_difference(images.at("drive-sata1"), Bytes(4096, 0)) == -1);
}
