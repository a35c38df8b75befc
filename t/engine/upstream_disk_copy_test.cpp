// DiskCopy against real NBD servers (qemu-nbd serving sparse raw images):
// the archive holds every disk exactly, zero clusters are never read, the
// work comes in slices that end at the caller's deadline or interruption,
// and a size mismatch is refused.
#include "nbd/connection.h"
#include "upstream/disk_copy.h"
#include "util/error.h"
#include "util/fd.h"
#include "vma/writer.h"
#include "qmp_test_support.h"
#include "vma_test_support.h"

#include "catch2_compat.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <optional>

using engine::upstream::DiskCopy;
using engine::upstream::DiskSource;
using engine::upstream::RateLimit;
using namespace std::chrono_literals;

namespace {

constexpr std::uint64_t kMiB = 1 << 20;

// A sparse raw image with random data in the given runs, served read-only by
// qemu-nbd as export "disk".
struct ServedImage {
    std::string path;
    std::string socket;
    vma_test::Bytes content;
    std::uint64_t data_clusters = 0; // clusters holding any data
    std::optional<qmp_test::Child> server;

    ServedImage(const vma_test::TempDir &dir, const std::string &name, std::uint64_t size,
                std::vector<std::pair<std::uint64_t, std::size_t>> runs)
        : path(dir / (name + ".raw")), socket(dir / (name + ".sock")), content(size, 0)
    {
        engine::Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
        REQUIRE(fd);
        REQUIRE(::ftruncate(fd.get(), static_cast<off_t>(size)) == 0);
        std::uint32_t seed = 1;
        for (auto [offset, length] : runs) {
            vma_test::Bytes data = vma_test::random_bytes(length, seed++);
            std::memcpy(content.data() + offset, data.data(), length);
            engine::pwrite_all(fd.get(), data.data(), length, offset, "pwrite");
        }
        for (std::uint64_t c = 0; c * engine::vma::kClusterSize < size; c++) {
            std::uint64_t from = c * engine::vma::kClusterSize;
            std::uint64_t to = std::min<std::uint64_t>(from + engine::vma::kClusterSize, size);
            auto cluster = content.begin() + static_cast<long>(from);
            data_clusters += std::any_of(cluster, cluster + static_cast<long>(to - from),
                                         [](std::uint8_t b) { return b != 0; });
        }
        server.emplace(std::vector<std::string>{"qemu-nbd", "--read-only", "--persistent", "--format=raw",
                                                "--export-name=disk", "--socket=" + socket, path});
        REQUIRE(qmp_test::wait_for_socket(socket, 10s));
    }
};

struct Archive {
    vma_test::TempDir &dir;
    std::string path = dir / "archive.vma";
    engine::Fd fd{::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)};
    engine::vma::Writer writer{fd.get()};

    DiskSource source(const ServedImage &image, const std::string &device)
    {
        DiskSource source;
        source.connection = std::make_unique<engine::nbd::Connection>(image.socket, "disk");
        source.device = writer.add_device(device, source.connection->size());
        return source;
    }

    std::map<std::string, vma_test::Bytes> contents()
    {
        fd.close_checked("close");
        return vma_test::read_archive(vma_test::read_file(path));
    }
};

void copy_all(DiskCopy &copy)
{
    while (!copy.run_until(RateLimit::Clock::now() + 1s, nullptr)) {
    }
}

} // namespace

TEST_CASE("disk copy: every disk in the archive, zero clusters not read", "[upstream]")
{
    vma_test::TempDir dir;
    // a partial last cluster; a disk of only zeros
    ServedImage first(dir, "first", 6 * kMiB + 4096, {{0, kMiB}, {3 * kMiB + 4096, 8192}, {6 * kMiB, 4096}});
    ServedImage second(dir, "second", 2 * kMiB, {});
    Archive archive{dir};
    std::vector<DiskSource> sources;
    sources.push_back(archive.source(first, "drive-scsi0"));
    sources.push_back(archive.source(second, "drive-scsi1"));
    DiskCopy copy(archive.writer, archive.fd.get(), std::move(sources), 0);
    copy_all(copy);
    archive.writer.finish();

    CHECK(copy.bytes_read() == (first.data_clusters - 1) * engine::vma::kClusterSize + 4096);
    CHECK(archive.writer.total_transferred() == first.content.size() + second.content.size());
    auto restored = archive.contents();
    CHECK(vma_test::first_difference(restored.at("drive-scsi0"), first.content) == -1);
    CHECK(vma_test::first_difference(restored.at("drive-scsi1"), second.content) == -1);
}

TEST_CASE("disk copy: slices end at the deadline or an interruption", "[upstream]")
{
    vma_test::TempDir dir;
    ServedImage image(dir, "disk", 4 * kMiB, {{0, 4 * kMiB}});
    Archive archive{dir};
    std::vector<DiskSource> sources;
    sources.push_back(archive.source(image, "drive-scsi0"));
    // 4 MiB at 8 MiB/s: more than one slice of 100 ms
    DiskCopy copy(archive.writer, archive.fd.get(), std::move(sources), 8 * kMiB);

    CHECK_FALSE(copy.run_until(RateLimit::Clock::now() - 1s, nullptr));
    CHECK(archive.writer.total_transferred() == 0);
    CHECK_FALSE(copy.run_until(RateLimit::Clock::now() + 60s, [] { return true; }));
    CHECK(archive.writer.total_transferred() == 0);

    std::uint64_t last = 0;
    int slices = 0;
    while (!copy.run_until(RateLimit::Clock::now() + 100ms, nullptr)) {
        CHECK(archive.writer.total_transferred() >= last);
        last = archive.writer.total_transferred();
        slices++;
    }
    CHECK(slices >= 1);
    archive.writer.finish();
    CHECK(vma_test::first_difference(archive.contents().at("drive-scsi0"), image.content) == -1);
}

TEST_CASE("disk copy: an export of another size than the device is refused", "[upstream]")
{
    vma_test::TempDir dir;
    ServedImage image(dir, "disk", 2 * kMiB, {{0, 4096}});
    Archive archive{dir};
    DiskSource source;
    source.connection = std::make_unique<engine::nbd::Connection>(image.socket, "disk");
    source.device = archive.writer.add_device("drive-scsi0", 4 * kMiB);
    std::vector<DiskSource> sources;
    sources.push_back(std::move(source));
    CHECK_THROWS_WITH(DiskCopy(archive.writer, archive.fd.get(), std::move(sources), 0),
                      "export 'disk' has 2097152 bytes, the archive expects 4194304");
}
