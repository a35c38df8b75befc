// A qcow2's clusters read and written in its own file, where QEMU maps them
// (ImageHostMap from Debian's real qemu-img), and everything else through
// qemu-nbd: the map for reading and for writing, the images it refuses, its
// bound, and a disk read and a target written half in the file and half
// through QEMU, checked with qemu-img.
#include "util/fd.h"
#include "vma/image_host_map.h"
#include "vma/mapped_image_source.h"
#include "vma/qemu_restore_target.h"
#include "vma/writer.h"
#include "vma_test_support.h"

#include "catch2_compat.h"

#include <cstdlib>
#include <fcntl.h>
#include <string>

namespace {

using engine::vma::ImageHostMap;
using Kind = ImageHostMap::Kind;

constexpr std::uint64_t kKiB = 1024;
constexpr std::uint64_t kMiB = 1024 * kKiB;

void run(const std::string &command)
{
    INFO(command);
    REQUIRE(std::system(command.c_str()) == 0);
}

std::optional<ImageHostMap> load(const std::string &path, ImageHostMap::Access access,
                                 std::size_t max_runs = ImageHostMap::kMaxRuns)
{
    return ImageHostMap::load(path, std::nullopt, access, max_runs);
}

// The bytes of the image file at offset.
vma_test::Bytes file_bytes(const std::string &path, std::uint64_t offset, std::size_t len)
{
    vma_test::Bytes all = vma_test::read_file(path);
    REQUIRE(offset + len <= all.size());
    return vma_test::Bytes(all.begin() + offset, all.begin() + offset + len);
}

vma_test::Bytes as_raw(const std::string &image, const std::string &raw)
{
    run("qemu-img convert -O raw '" + image + "' '" + raw + "'");
    return vma_test::read_file(raw);
}

} // namespace

TEST_CASE("image host map: a qcow2's data in its file, zeros, and the rest for QEMU", "[qemu-nbd]")
{
    vma_test::TempDir work;
    std::string base = work / "base.qcow2", image = work / "disk.qcow2";
    run("qemu-img create -q -f qcow2 '" + base + "' 4M");
    run("qemu-io -f qcow2 -c 'write -P 0x22 3M 64k' '" + base + "' >/dev/null");
    run("qemu-img create -q -f qcow2 -b '" + base + "' -F qcow2 '" + image + "' 4M");
    run("qemu-io -f qcow2 -c 'write -P 0x11 0 128k' -c 'write -z 1M 64k' '" + image + "' >/dev/null");

    auto read = load(image, ImageHostMap::Access::Read);
    REQUIRE(read);
    CHECK(read->virtual_size() == 4 * kMiB);
    ImageHostMap::Run data = read->run_at(64 * kKiB);
    REQUIRE(data.kind == Kind::File);
    CHECK(data.start == 0);
    CHECK(data.length == 128 * kKiB);
    // the host offset is where the bytes really are
    CHECK(file_bytes(image, data.host, 128 * kKiB) == vma_test::Bytes(128 * kKiB, 0x11));
    CHECK(read->run_at(1 * kMiB).kind == Kind::Zero);         // a zero cluster
    CHECK(read->run_at(2 * kMiB).kind == Kind::Zero);         // unallocated everywhere
    CHECK(read->run_at(3 * kMiB + 4096).kind == Kind::Qemu);  // in the backing file
    ImageHostMap::Run backing = read->run_at(3 * kMiB + 4096);
    CHECK(backing.start == 3 * kMiB + 4096);
    CHECK(backing.length == 64 * kKiB - 4096);

    // for writing, only allocated clusters are the file's: QEMU allocates,
    // and owns the zero flags
    auto write = load(image, ImageHostMap::Access::Write);
    REQUIRE(write);
    CHECK(write->run_at(0).kind == Kind::File);
    CHECK(write->run_at(0).host == data.host);
    CHECK(write->run_at(1 * kMiB).kind == Kind::Qemu);
    CHECK(write->run_at(2 * kMiB).kind == Kind::Qemu);
    CHECK(write->run_at(3 * kMiB).kind == Kind::Qemu);
}

TEST_CASE("image host map: none where the file is not the whole truth", "[qemu-nbd]")
{
    vma_test::TempDir work;
    auto with_data = [&](const std::string &name, const std::string &options) {
        std::string path = work / name;
        run("qemu-img create -q -f qcow2 " + options + " '" + path + "' 1M");
        run("qemu-io -f qcow2 -c 'write -P 0x33 0 64k' '" + path + "' >/dev/null");
        return path;
    };
    std::string plain = with_data("plain.qcow2", "");
    REQUIRE(load(plain, ImageHostMap::Access::Write));

    std::string snapshot = with_data("snapshot.qcow2", "");
    run("qemu-img snapshot -c s1 '" + snapshot + "'");
    CHECK(load(snapshot, ImageHostMap::Access::Read));
    CHECK(!load(snapshot, ImageHostMap::Access::Write)); // shared clusters need QEMU's copy-on-write

    std::string bitmap = with_data("bitmap.qcow2", "");
    run("qemu-img bitmap --add '" + bitmap + "' b0");
    CHECK(load(bitmap, ImageHostMap::Access::Read));
    CHECK(!load(bitmap, ImageHostMap::Access::Write)); // QEMU would record the writes

    std::string external = with_data("external.qcow2", "-o data_file='" + work / "external.data" + "'");
    CHECK(!load(external, ImageHostMap::Access::Read)); // the offsets are in another file

    std::string compressed = work / "compressed.qcow2";
    run("qemu-img convert -c -O qcow2 '" + plain + "' '" + compressed + "'");
    CHECK(!load(compressed, ImageHostMap::Access::Read)); // nothing in the file to gain

    std::string raw = work / "disk.raw";
    run("qemu-img convert -O raw '" + plain + "' '" + raw + "'");
    CHECK(!load(raw, ImageHostMap::Access::Read));
    std::string vmdk = work / "disk.vmdk";
    run("qemu-img convert -O vmdk '" + plain + "' '" + vmdk + "'");
    CHECK(!load(vmdk, ImageHostMap::Access::Read));
    CHECK(!load(work / "missing.qcow2", ImageHostMap::Access::Read));
    CHECK(!load("nbd:unix:" + work / "nbd.sock", ImageHostMap::Access::Read));
    // given as raw, a qcow2 file is its bytes
    CHECK(!ImageHostMap::load(plain, std::string("raw"), ImageHostMap::Access::Read));
}

TEST_CASE("mapped image source: a qcow2 read from its file and through QEMU, past the map's bound",
          "[qemu-nbd]")
{
    vma_test::TempDir work;
    std::string base = work / "base.qcow2", image = work / "disk.qcow2";
    run("qemu-img create -q -f qcow2 '" + base + "' 8M");
    run("qemu-io -f qcow2 -c 'write -P 0x44 5M 1M' '" + base + "' >/dev/null");
    run("qemu-img create -q -f qcow2 -b '" + base + "' -F qcow2 '" + image + "' 8M");
    // four runs of data in the file, apart; one cluster half zero
    run("qemu-io -f qcow2 -c 'write -P 0x01 0 64k' -c 'write -P 0x02 1M 100k' -c 'write -z 1124k 28k'"
        " -c 'write -P 0x03 2M 64k' -c 'write -P 0x04 3M 64k' '" + image + "' >/dev/null");
    vma_test::Bytes expected = as_raw(image, work / "expected.raw");

    for (std::size_t max_runs : {ImageHostMap::kMaxRuns, std::size_t(2)}) {
        INFO("max_runs " << max_runs);
        auto map = load(image, ImageHostMap::Access::Read, max_runs);
        REQUIRE(map);
        // past the bound the rest of the disk is QEMU's
        CHECK(map->run_at(3 * kMiB).kind == (max_runs == 2 ? Kind::Qemu : Kind::File));

        std::string archive = work / "disk.vma";
        {
            engine::vma::MappedImageSource source(image, std::move(*map));
            engine::Fd out(open(archive.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
            REQUIRE(out);
            engine::vma::Writer writer(out.get());
            auto dev = writer.add_device("drive-scsi0", source.size());
            source.write_to(writer, dev, {});
            source.finish();
            writer.finish();
            // the backing file's data, and what lies past the bound, came through QEMU
            CHECK(source.bytes_read_through_qemu() >= 1 * kMiB);
        }
        auto disks = vma_test::read_archive(vma_test::read_file(archive));
        CHECK(vma_test::first_difference(disks.at("drive-scsi0"), expected) == -1);
    }
}

TEST_CASE("qemu restore target: allocated clusters written in the file, the rest through QEMU",
          "[qemu-nbd]")
{
    vma_test::TempDir work;
    std::string image = work / "target.qcow2";
    run("qemu-img create -q -f qcow2 '" + image + "' 4M");
    run("qemu-io -f qcow2 -c 'write -P 0xa5 0 2M' '" + image + "' >/dev/null");
    vma_test::Bytes data = vma_test::random_bytes(1 * kMiB, 11);
    auto before = load(image, ImageHostMap::Access::Write);
    REQUIRE(before);

    auto target = engine::vma::open_qemu_target(image, "qcow2", std::nullopt, true);
    REQUIRE(target->size() == 4 * kMiB);
    // one write across the end of the allocated half, zeros on both sides
    target->write(1536 * kKiB, data.data(), data.size());
    target->write_zero(0, 1536 * kKiB);
    target->write_zero(2560 * kKiB, 1536 * kKiB);
    target->finish();

    vma_test::Bytes expected(4 * kMiB, 0);
    std::copy(data.begin(), data.end(), expected.begin() + 1536 * kKiB);
    CHECK(vma_test::first_difference(as_raw(image, work / "target.raw"), expected) == -1);
    run("qemu-img check -q '" + image + "'");
    // the allocated half stayed where it was, zeros written in place; in the
    // other half QEMU made the zeros zero clusters
    auto after = load(image, ImageHostMap::Access::Read);
    REQUIRE(after);
    CHECK(after->run_at(0).kind == Kind::File);
    CHECK(after->run_at(0).host == before->run_at(0).host);
    CHECK(after->run_at(0).length >= 2 * kMiB);
    CHECK(after->run_at(3 * kMiB).kind == Kind::Zero);
    run("qemu-img map --output=json '" + image + "' | grep -q '\"zero\": true, \"data\": false'");
}
