// The libnbd reader against a real NBD server (qemu-nbd from qemu-utils)
// serving a sparse raw file: allocation map, reads, cluster stream.
#include "nbd/cluster_stream.h"
#include "nbd/connection.h"
#include "qmp_test_support.h"
#include "util/error.h"
#include "vma_test_support.h"

#include "catch2_compat.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

using namespace std::chrono_literals;

namespace {

constexpr std::size_t kCluster = 64 * 1024;
constexpr std::uint64_t kMiB = 1024 * 1024;

// A sparse image: data at [0, 1 MiB), [3 MiB + 4 KiB, +8 KiB) and a last
// partial cluster; holes elsewhere. Size is not a multiple of the cluster.
struct SparseImage {
    vma_test::TempDir dir;
    std::string path = dir / "disk.raw";
    std::uint64_t size = 5 * kMiB + 12 * 1024;
    vma_test::Bytes content = vma_test::Bytes(size, 0);

    SparseImage()
    {
        auto put = [&](std::uint64_t offset, std::size_t length, std::uint32_t seed) {
            vma_test::Bytes data = vma_test::random_bytes(length, seed);
            std::memcpy(content.data() + offset, data.data(), length);
        };
        put(0, kMiB, 1);
        put(3 * kMiB + 4096, 8192, 2);
        put(5 * kMiB + 4096, 4096, 3);
        int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        REQUIRE(fd >= 0);
        REQUIRE(::ftruncate(fd, static_cast<off_t>(size)) == 0);
        for (auto [offset, length] : {std::pair<std::uint64_t, std::size_t>{0, kMiB}, {3 * kMiB + 4096, 8192},
                                      {5 * kMiB + 4096, 4096}})
            REQUIRE(::pwrite(fd, content.data() + offset, length, static_cast<off_t>(offset)) ==
                    static_cast<ssize_t>(length));
        ::close(fd);
    }
};

// qemu-nbd serving the image read-only on a unix socket as export "disk".
struct Server {
    std::string socket;
    qmp_test::Child process;
    Server(const SparseImage &image)
        : socket(image.dir / "nbd.sock"),
          process({"qemu-nbd", "--read-only", "--persistent", "--format=raw", "--export-name=disk",
                   "--socket=" + socket, image.path})
    {
        REQUIRE(qmp_test::wait_for_socket(socket, 10s));
    }
};

} // namespace

TEST_CASE("nbd connection: size, allocation map and reads", "[nbd]")
{
    SparseImage image;
    Server server(image);
    engine::nbd::Connection connection(server.socket, "disk");

    CHECK(connection.size() == image.size);
    CHECK(connection.max_request() > 0);

    // the map starts where asked, is contiguous and says zero only where the
    // image really is zero
    std::vector<engine::nbd::Extent> extents = connection.block_status(0, image.size);
    REQUIRE_FALSE(extents.empty());
    std::uint64_t pos = 0, zero_bytes = 0;
    for (const auto &extent : extents) {
        CHECK(extent.offset == pos);
        if (extent.zero) {
            zero_bytes += extent.length;
            vma_test::Bytes expected(extent.length, 0);
            CHECK(std::memcmp(image.content.data() + extent.offset, expected.data(), extent.length) == 0);
        }
        pos += extent.length;
    }
    CHECK(pos <= image.size);
    CHECK(zero_bytes >= 3 * kMiB); // the holes are reported

    vma_test::Bytes buf(100000);
    connection.read(buf.data(), buf.size(), 3 * kMiB);
    CHECK(std::memcmp(buf.data(), image.content.data() + 3 * kMiB, buf.size()) == 0);

    CHECK_THROWS_WITH(connection.read(buf.data(), 4096, image.size),
                      Catch::Contains("NBD read on export 'disk' failed"));
}

TEST_CASE("nbd cluster stream: every cluster in order, zero clusters flagged and not read", "[nbd]")
{
    SparseImage image;
    Server server(image);
    engine::nbd::Connection connection(server.socket, "disk");
    // small batches and window so several refills happen
    engine::nbd::ClusterStream stream(connection, {.cluster_size = kCluster, .batch_clusters = 4, .window = 3});

    const std::uint64_t clusters = (image.size + kCluster - 1) / kCluster;
    CHECK(stream.cluster_count() == clusters);
    vma_test::Bytes restored(clusters * kCluster, 0);
    std::uint64_t next = 0, data_clusters = 0;
    while (auto batch = stream.next()) {
        CHECK(batch->first == next);
        for (std::size_t i = 0; i < batch->count; i++) {
            std::uint64_t offset = (batch->first + i) * kCluster;
            if (batch->zero[i])
                continue;
            data_clusters++;
            std::memcpy(restored.data() + offset, batch->data + i * kCluster, kCluster);
        }
        next += batch->count;
    }
    CHECK(next == clusters);
    CHECK_FALSE(stream.next());
    // the tail past the export end came back as zeros
    CHECK(std::all_of(restored.begin() + static_cast<long>(image.size), restored.end(),
                      [](std::uint8_t b) { return b == 0; }));
    restored.resize(image.size);
    CHECK(vma_test::first_difference(restored, image.content) == -1);
    // 16 clusters of the first MiB, one at 3 MiB + 4 KiB, the last one
    CHECK(data_clusters == 18);
    CHECK(stream.bytes_read() == 17 * kCluster + (image.size - 5 * kMiB));
}

TEST_CASE("nbd connection errors name the export and the cause", "[nbd]")
{
    SparseImage image;
    CHECK_THROWS_WITH(engine::nbd::Connection(image.dir / "no.sock", "disk"),
                      Catch::StartsWith("NBD connect to '" + (image.dir / "no.sock") + "' on export 'disk' failed - "));
    Server server(image);
    CHECK_THROWS_WITH(engine::nbd::Connection(server.socket, "other"),
                      Catch::Contains("on export 'other' failed"));
}

TEST_CASE("nbd cluster stream: a server that goes away fails the read", "[nbd]")
{
    SparseImage image;
    auto server = std::make_unique<Server>(image);
    engine::nbd::Connection connection(server->socket, "disk");
    engine::nbd::ClusterStream stream(connection, {.cluster_size = kCluster, .batch_clusters = 2, .window = 1});
    REQUIRE(stream.next());
    server.reset(); // SIGKILL
    CHECK_THROWS_WITH(
        [&] {
            while (stream.next()) {
            }
        }(),
        Catch::Contains("NBD read on export 'disk' failed"));
}

TEST_CASE("nbd cluster stream: a failing read fails the stream after the reads in flight landed", "[nbd]")
{
    SparseImage image;
    // blkdebug fails every read touching the sector at 3 MiB + 4 KiB with EIO
    const std::string socket = image.dir / "nbd.sock";
    qmp_test::Child server({"qemu-nbd", "--read-only", "--persistent", "--export-name=disk", "--socket=" + socket,
                            "--image-opts",
                            "driver=raw,file.driver=blkdebug,file.image.driver=file,file.image.filename=" + image.path +
                                ",file.inject-error.0.event=read_aio,file.inject-error.0.errno=5"
                                ",file.inject-error.0.once=off,file.inject-error.0.sector=" +
                                std::to_string((3 * kMiB + 4096) / 512)});
    REQUIRE(qmp_test::wait_for_socket(socket, 10s));
    engine::nbd::Connection connection(socket, "disk");
    engine::nbd::ClusterStream stream(connection, {.cluster_size = kCluster, .batch_clusters = 4, .window = 4});
    std::uint64_t clusters = 0;
    CHECK_THROWS_WITH(
        [&] {
            while (auto batch = stream.next())
                clusters += batch->count;
        }(),
        Catch::Contains("NBD read on export 'disk' failed"));
    CHECK(clusters < 3 * kMiB / kCluster + 1); // nothing past the failed cluster
}
