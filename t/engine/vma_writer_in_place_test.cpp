// Writer::write_cluster_in_place points into the caller's memory instead of
// copying: the archive must be the one write_cluster makes, settle() must
// free the caller's memory, and the extents' writev must reach a pipe whole.
#include "vma_test_support.h"

#include "util/fd.h"
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

Bytes contents(int fd)
{
    Bytes out(static_cast<std::size_t>(lseek(fd, 0, SEEK_END)));
    engine::pread_full(fd, out.data(), out.size(), 0, "read");
    return out;
}

// Random clusters with every third 4 KiB block zero.
Bytes sample(std::size_t size, std::uint32_t seed)
{
    Bytes data = random_bytes(size, seed);
    for (std::size_t at = 0; at < size; at += 3 * 4096)
        std::fill_n(data.begin() + static_cast<long>(at), std::min<std::size_t>(4096, size - at), 0);
    return data;
}

// Writes disk (a size not a multiple of 4 KiB) and a vmstate stream through
// fd, in place or copied. In place, each cluster is first copied into a
// scratch ring: the kWriterSlotsPerExtent clusters the writer may still
// point into and the one being written, so a writer keeping older pointers
// writes wrong bytes.
void write_sample(int fd, const Bytes &disk, const Bytes &state, bool in_place)
{
    vma::Writer writer(fd, {fixed_uuid(), 1700000000});
    auto d = writer.add_device("drive-scsi0", disk.size());
    auto s = writer.add_device("vmstate", state.size());
    const std::size_t ring_slots = vma::kWriterSlotsPerExtent + 1;
    Bytes ring(ring_slots * vma::kClusterSize);
    std::size_t next_slot = 0;
    auto put = [&](vma::DeviceId dev, std::uint32_t cluster, const Bytes &image) {
        Bytes padded(vma::kClusterSize, 0xee); // past the device end: not stored
        std::size_t start = std::size_t(cluster) * vma::kClusterSize;
        std::copy_n(image.begin() + static_cast<long>(start),
                    std::min(vma::kClusterSize, image.size() - start), padded.begin());
        if (!in_place)
            return writer.write_cluster(dev, cluster, padded.data());
        std::uint8_t *slot = ring.data() + next_slot * vma::kClusterSize;
        next_slot = (next_slot + 1) % ring_slots;
        std::copy(padded.begin(), padded.end(), slot);
        writer.write_cluster_in_place(dev, cluster, slot);
    };
    for (std::uint32_t c = 0; c < vma::clusters_for(disk.size()); c++) {
        put(d, c, disk);
        if (c % 7 == 0 && c / 7 < vma::clusters_for(state.size())) // interleave the streams
            put(s, c / 7, state);
        if (c == 100) { // a known-zero cluster
            c++;
            in_place ? writer.write_cluster_in_place(d, c, nullptr) : writer.write_cluster(d, c, nullptr);
        }
    }
    if (in_place) {
        writer.settle();
        std::fill(ring.begin(), ring.end(), 0x55); // the writer copied what it still needed
    }
    writer.finish();
}

} // namespace

TEST_CASE("clusters written in place give the archive copied clusters give", "[vma]")
{
    Bytes disk = sample(200 * vma::kClusterSize + 4096 + 1024, 5); // whole sectors: 0xee padding is past the device
    Bytes state = sample(30 * vma::kClusterSize, 6);
    engine::Fd copied(memfd_create("copied", MFD_CLOEXEC)), in_place(memfd_create("in-place", MFD_CLOEXEC));
    write_sample(copied.get(), disk, state, false);
    write_sample(in_place.get(), disk, state, true);
    Bytes archive = contents(in_place.get());
    CHECK(first_difference(archive, contents(copied.get())) == -1);
    auto restored = read_archive(archive);
    Bytes expected = disk;
    std::fill_n(expected.begin() + 101 * static_cast<long>(vma::kClusterSize), vma::kClusterSize, 0);
    expected.resize((expected.size() + 511) / 512 * 512, 0);
    CHECK(first_difference(restored.at("drive-scsi0"), expected) == -1);
}

TEST_CASE("in-place extents reach a pipe read in small pieces intact", "[vma]")
{
    Bytes disk = sample(150 * vma::kClusterSize, 8);
    Bytes state = sample(5 * vma::kClusterSize, 9);
    engine::Fd expected(memfd_create("expected", MFD_CLOEXEC));
    write_sample(expected.get(), disk, state, false);
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    engine::Fd read_end(fds[0]), write_end(fds[1]);
    Bytes received;
    std::thread reader([&] {
        std::uint8_t buf[1000];
        for (ssize_t n; (n = read(read_end.get(), buf, sizeof buf)) > 0;)
            received.insert(received.end(), buf, buf + n);
    });
    write_sample(write_end.get(), disk, state, true);
    write_end = engine::Fd();
    reader.join();
    CHECK(first_difference(received, contents(expected.get())) == -1);
}
