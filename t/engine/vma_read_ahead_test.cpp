// write_image reads the image on a read-ahead thread: the archive must be
// byte for byte the one the Writer makes from the same bytes in memory, a
// failing archive write must stop the thread, and the batches come in order.
#include "vma_test_support.h"

#include "util/error.h"
#include "util/fd.h"
#include "vma/image_read_ahead.h"
#include "vma/image_source.h"
#include "vma/writer.h"

#include "catch2_compat.h"

#include <csignal>
#include <fcntl.h>
#include <sys/mman.h>
#include <thread>
#include <unistd.h>

using namespace vma_test;
namespace vma = engine::vma;

namespace {

// An image of size bytes whose 4 KiB blocks cycle through the shapes a zero
// check can get wrong: all zero, random, and zero but for one byte at the
// start, in the middle or at the very end.
Bytes tricky_image(std::size_t size)
{
    Bytes data = random_bytes(size, 7);
    for (std::size_t block = 0; block * 4096 < size; block++) {
        std::size_t start = block * 4096, len = std::min<std::size_t>(4096, size - start);
        unsigned shape = block % 5;
        if (shape == 1)
            continue; // random
        std::fill_n(data.begin() + static_cast<long>(start), len, 0);
        std::size_t at = shape == 2 ? 0 : shape == 3 ? len / 2 : len - 1;
        if (shape != 0)
            data[start + at] = static_cast<std::uint8_t>(1 + block % 255);
    }
    return data;
}

Bytes archive_through_write_image(const std::string &path)
{
    engine::Fd mem(memfd_create("read-ahead", MFD_CLOEXEC));
    vma::Writer writer(mem.get(), {fixed_uuid(), 1700000000});
    vma::ImageSource source(path);
    auto dev = writer.add_device("drive-scsi0", source.size());
    vma::write_image(writer, dev, source);
    writer.finish();
    Bytes out(static_cast<std::size_t>(lseek(mem.get(), 0, SEEK_END)));
    engine::pread_full(mem.get(), out.data(), out.size(), 0, "read");
    return out;
}

} // namespace

TEST_CASE("write_image through the read-ahead thread writes the in-memory writer's archive", "[vma]")
{
    TempDir dir;
    // more batches than buffers, and a last cluster the image only half fills
    std::size_t size = (vma::ImageReadAhead::kDepth + 2) * vma::ImageReadAhead::kBatchClusters *
                           vma::kClusterSize + 3 * 4096 + 1000;
    Bytes image = tricky_image(size);
    std::string path = dir / "image.raw";
    write_file(path, image);
    Bytes archive = archive_through_write_image(path);
    CHECK(first_difference(archive, write_archive({{"drive-scsi0", image}})) == -1);
    image.resize((image.size() + 511) / 512 * 512, 0);
    CHECK(first_difference(read_archive(archive).at("drive-scsi0"), image) == -1);
}

TEST_CASE("write_image stops its read-ahead thread when the archive write fails", "[vma]")
{
    TempDir dir;
    std::string path = dir / "image.raw";
    write_file(path, random_bytes(40 << 20, 3));
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    engine::Fd read_end(fds[0]), write_end(fds[1]);
    signal(SIGPIPE, SIG_IGN);
    // the archive's reader goes away after 6 MiB, mid-image
    std::thread consumer([&] {
        std::vector<std::uint8_t> buf(1 << 20);
        for (int i = 0; i < 6; i++)
            engine::read_full(read_end.get(), buf.data(), buf.size(), "read");
        read_end = engine::Fd();
    });
    vma::Writer writer(write_end.get());
    vma::ImageSource source(path);
    auto dev = writer.add_device("drive-scsi0", source.size());
    CHECK_THROWS_WITH(vma::write_image(writer, dev, source), Catch::Contains("Broken pipe"));
    consumer.join();
    CHECK(writer.total_transferred() < source.size());
}

TEST_CASE("the read-ahead hands out every batch once, in order, and can be dropped early", "[vma]")
{
    TempDir dir;
    std::string path = dir / "image.raw";
    // more batches than buffers, so the thread has to wait for the consumer
    const std::uint64_t clusters = (vma::ImageReadAhead::kDepth + 3) * vma::ImageReadAhead::kBatchClusters + 5;
    Bytes image = random_bytes(clusters * vma::kClusterSize, 11);
    write_file(path, image);
    vma::ImageSource source(path);
    {
        vma::ImageReadAhead ahead(source, clusters);
        std::uint64_t expected_first = 0;
        while (auto batch = ahead.next()) {
            CHECK(batch->first == expected_first);
            CHECK(batch->count == std::min<std::uint64_t>(vma::ImageReadAhead::kBatchClusters,
                                                          clusters - expected_first));
            CHECK(std::equal(batch->data, batch->data + batch->count * vma::kClusterSize,
                             image.begin() + static_cast<long>(batch->first * vma::kClusterSize)));
            CHECK(std::none_of(batch->hole, batch->hole + batch->count, [](bool h) { return h; }));
            expected_first += batch->count;
        }
        CHECK(expected_first == clusters);
        CHECK_FALSE(ahead.next());
    }
    // dropped while its thread waits for a free buffer: must not hang
    vma::ImageReadAhead ahead(source, clusters);
    CHECK(ahead.next()->first == 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
}
