// Archives written by the Writer read back through the Reader with every
// byte intact, over many shapes of devices and configs.
#include "vma_test_support.h"

#include "util/fd.h"
#include "vma/reader.h"
#include "vma/writer.h"

#include "catch2_compat.h"

#include <csignal>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

using namespace vma_test;
namespace vma = engine::vma;

namespace {

Bytes padded(Bytes data)
{
    data.resize((data.size() + 511) / 512 * 512, 0);
    return data;
}

Bytes mixed(std::size_t size, std::uint32_t seed)
{
    Bytes d = random_bytes(size, seed);
    // zero every other 1 MiB run, every third 4 KiB block, and a whole cluster
    for (std::size_t off = 0; off < size; off += 4096)
        if ((off / (1 << 20)) % 2 == 1 || (off / 4096) % 3 == 0 || off / 65536 == 2)
            std::fill_n(d.begin() + static_cast<std::ptrdiff_t>(off), std::min<std::size_t>(4096, size - off), 0);
    return d;
}

void check_round_trip(const std::vector<Image> &images, const std::vector<Config> &configs = {})
{
    Bytes archive = write_archive(images, configs);
    auto restored = read_archive(archive);
    REQUIRE(restored.size() == images.size());
    for (const auto &img : images) {
        INFO("device " << img.name << " size " << img.data.size());
        Bytes expected = padded(img.data);
        if (img.name == "vmstate") // the RAM state comes in whole clusters
            expected.resize(vma::clusters_for(expected.size()) * vma::kClusterSize, 0);
        CHECK(first_difference(restored.at(img.name), expected) == -1);
    }
    engine::Fd mem(memfd_create("a", MFD_CLOEXEC));
    engine::write_all(mem.get(), archive.data(), archive.size(), "write");
    lseek(mem.get(), 0, SEEK_SET);
    vma::Reader reader(std::move(mem));
    REQUIRE(reader.configs().size() == configs.size());
    for (std::size_t i = 0; i < configs.size(); i++) {
        CHECK(reader.configs()[i].data == configs[i].data);
    }
    CHECK(reader.uuid() == fixed_uuid());
    CHECK(reader.ctime() == 1700000000);
}

} // namespace

TEST_CASE("round trip of single devices of awkward sizes", "[vma]")
{
    for (std::size_t size : {1ul, 511ul, 512ul, 4095ul, 4096ul, 4097ul, 65535ul, 65536ul, 65537ul,
                             70000ul, 3ul * 65536 + 12345, 59ul * 65536, 58ul * 65536 + 1}) {
        check_round_trip({{"drive-scsi0", random_bytes(size, static_cast<std::uint32_t>(size))}});
        check_round_trip({{"drive-scsi0", Bytes(size, 0)}});
    }
}

TEST_CASE("round trip of mixed data across many extents", "[vma]")
{
    check_round_trip({{"drive-virtio0", mixed(5 * (1 << 20) + 7 * 512, 7)}},
                     {{"qemu-server.conf", "memory: 512\n"}});
}

TEST_CASE("round trip of several devices and vmstate", "[vma]")
{
    check_round_trip({{"drive-scsi0", mixed(300000, 1)},
                      {"drive-scsi1", Bytes(65536 * 3, 0)},
                      {"vmstate", padded(random_bytes(200000, 3))},
                      {"drive-efidisk0", random_bytes(131072, 4)}},
                     {{"qemu-server.conf", "a"}, {"fw.conf", ""}});
}

TEST_CASE("round trip of an archive without devices and with 256 configs", "[vma]")
{
    std::vector<Config> configs;
    for (int i = 0; i < 256; i++)
        configs.push_back({"c" + std::to_string(i) + ".conf", std::string(static_cast<std::size_t>(i * 7), 'x')});
    check_round_trip({}, configs);
    check_round_trip({}, {});
}

TEST_CASE("the writer refuses misuse with a message", "[vma]")
{
    engine::Fd mem(memfd_create("a", MFD_CLOEXEC));
    vma::Writer writer(mem.get());
    CHECK_THROWS_WITH(writer.add_device("d", 0), Catch::Contains("strange size"));
    auto dev = writer.add_device("d", 100000);
    CHECK_THROWS_WITH(writer.add_device("d", 5), Catch::Contains("duplicate device name"));
    CHECK_THROWS_WITH(writer.add_config("big", std::string(70000, 'x')), Catch::Contains("too large"));
    writer.write_cluster(dev, 0, nullptr);
    CHECK_THROWS_WITH(writer.add_device("e", 5), Catch::Contains("header already written"));
    CHECK_THROWS_WITH(writer.write_cluster(dev, 0, nullptr), Catch::Contains("duplicated cluster 0"));
    CHECK_THROWS_WITH(writer.finish(), Catch::Contains("duplicated cluster 0")); // failed stays failed
}

TEST_CASE("the writer reports incomplete devices and out-of-order vmstate", "[vma]")
{
    engine::Fd mem(memfd_create("a", MFD_CLOEXEC));
    vma::Writer writer(mem.get());
    auto dev = writer.add_device("d", 200000);
    auto state = writer.add_device("vmstate", 200000);
    writer.write_cluster(dev, 0, nullptr);
    writer.write_cluster(state, 0, nullptr);
    CHECK_THROWS_WITH(writer.finish(), Catch::Contains("incomplete stream 'd' (65536 != 200192)"));

    engine::Fd mem2(memfd_create("b", MFD_CLOEXEC));
    vma::Writer writer2(mem2.get());
    auto state2 = writer2.add_device("vmstate", 200000);
    CHECK_THROWS_WITH(writer2.write_cluster(state2, 1, nullptr), Catch::Contains("non sequential vmstate"));
}

TEST_CASE("the writer fails cleanly on a closed pipe and on a full disk", "[vma]")
{
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    engine::Fd read_end(fds[0]), write_end(fds[1]);
    read_end = engine::Fd();
    signal(SIGPIPE, SIG_IGN);
    vma::Writer writer(write_end.get());
    writer.add_config("qemu-server.conf", "x");
    CHECK_THROWS_WITH(writer.finish(), Catch::Contains("Broken pipe"));

    engine::Fd full(open("/dev/full", O_WRONLY | O_CLOEXEC));
    REQUIRE(full);
    vma::Writer writer2(full.get());
    auto dev = writer2.add_device("d", 4096);
    CHECK_THROWS_WITH(writer2.write_cluster(dev, 0, nullptr), Catch::Contains("No space left on device"));
}
