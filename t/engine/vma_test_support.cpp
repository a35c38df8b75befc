#include "vma_test_support.h"

#include "util/error.h"
#include "util/fd.h"
#include "util/endian.h"
#include "util/md5.h"
#include "vma/reader.h"
#include "vma/writer.h"

#include <cstring>

#include <algorithm>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

namespace vma_test {

engine::Fd memory_file(const Bytes &data)
{
    engine::Fd mem(memfd_create("archive", MFD_CLOEXEC));
    if (!mem)
        engine::throw_errno("memfd_create");
    engine::write_all(mem.get(), data.data(), data.size(), "write memory file");
    lseek(mem.get(), 0, SEEK_SET);
    return mem;
}

Bytes read_file(const std::string &path)
{
    engine::Fd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd)
        engine::throw_errno("open " + path);
    Bytes data(static_cast<std::size_t>(lseek(fd.get(), 0, SEEK_END)));
    data.resize(engine::pread_full(fd.get(), data.data(), data.size(), 0, "read"));
    return data;
}

void write_file(const std::string &path, const Bytes &data)
{
    engine::Fd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd)
        engine::throw_errno("open " + path);
    engine::write_all(fd.get(), data.data(), data.size(), "write");
}

Bytes random_bytes(std::size_t len, std::uint32_t seed)
{
    Bytes out(len);
    std::uint64_t x = 0x9e3779b97f4a7c15ULL ^ seed;
    for (std::size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out[i] = static_cast<std::uint8_t>(x >> 24) | 1;
    }
    return out;
}

long first_difference(const Bytes &a, const Bytes &b)
{
    auto [ia, ib] = std::mismatch(a.begin(), a.end(), b.begin(), b.end());
    if (ia == a.end() && ib == b.end())
        return -1;
    return static_cast<long>(ia - a.begin());
}

engine::Uuid fixed_uuid()
{
    return {0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0x4d, 0xef, 0x80, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07};
}

Bytes write_archive(const std::vector<Image> &images, const std::vector<Config> &configs,
                    std::int64_t ctime)
{
    engine::Fd mem(memfd_create("vma-archive", MFD_CLOEXEC));
    if (!mem)
        engine::throw_errno("memfd_create");
    engine::vma::Writer writer(mem.get(), {fixed_uuid(), ctime});
    for (const auto &c : configs)
        writer.add_config(c.name, c.data);
    std::vector<engine::vma::DeviceId> ids;
    for (const auto &img : images)
        ids.push_back(writer.add_device(img.name, img.data.size()));
    for (std::size_t i = 0; i < images.size(); i++) {
        std::uint64_t size = writer.device_size(ids[i]);
        Bytes cluster(engine::vma::kClusterSize);
        for (std::uint64_t c = 0; c < engine::vma::clusters_for(size); c++) {
            std::fill(cluster.begin(), cluster.end(), 0);
            std::uint64_t off = c * engine::vma::kClusterSize;
            std::uint64_t n = std::min<std::uint64_t>(cluster.size(), images[i].data.size() > off ? images[i].data.size() - off : 0);
            std::copy_n(images[i].data.begin() + static_cast<std::ptrdiff_t>(off), n, cluster.begin());
            writer.write_cluster(ids[i], static_cast<std::uint32_t>(c), cluster.data());
        }
    }
    writer.finish();
    Bytes out(static_cast<std::size_t>(lseek(mem.get(), 0, SEEK_END)));
    engine::pread_full(mem.get(), out.data(), out.size(), 0, "read memfd");
    return out;
}

namespace {

engine::Fd memfd_with(const Bytes &data)
{
    engine::Fd mem(memfd_create("vma-archive", MFD_CLOEXEC));
    if (!mem)
        engine::throw_errno("memfd_create");
    engine::write_all(mem.get(), data.data(), data.size(), "write memfd");
    lseek(mem.get(), 0, SEEK_SET);
    return mem;
}

class ImageSink : public engine::vma::ClusterSink {
public:
    std::map<std::string, Bytes> images;

    void cluster(const engine::vma::DeviceInfo &dev, std::uint32_t cluster, std::uint16_t mask,
                 const std::uint8_t *blocks) override
    {
        using namespace engine::vma;
        Bytes &img = images[dev.name];
        std::uint64_t start = std::uint64_t(cluster) * kClusterSize;
        std::uint64_t limit = dev.vmstate ? start + kClusterSize : dev.size;
        std::uint64_t needed = std::min<std::uint64_t>(limit, start + kClusterSize);
        if (img.size() < needed)
            img.resize(static_cast<std::size_t>(needed), 0);
        for (unsigned j = 0; j < kBlocksPerCluster; j++) {
            std::uint64_t off = start + j * kBlockSize;
            if (!(mask & (1u << j)) || off >= limit)
                continue;
            std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(kBlockSize, limit - off));
            std::memcpy(img.data() + off, blocks, n);
            blocks += kBlockSize;
        }
    }
};

} // namespace

std::map<std::string, Bytes> read_archive(const Bytes &archive)
{
    engine::vma::Reader reader(memfd_with(archive));
    ImageSink sink;
    // a device claiming a huge size grows only as far as clusters arrive
    for (const auto &dev : reader.devices())
        if (!dev.vmstate && dev.size <= (std::uint64_t(1) << 28))
            sink.images[dev.name].resize(static_cast<std::size_t>(dev.size), 0);
    reader.read_extents(sink);
    return sink.images;
}

std::string rejection(const Bytes &archive)
{
    try {
        read_archive(archive);
        return "";
    } catch (const engine::vma::FormatError &e) {
        return e.reason();
    } catch (const std::exception &e) {
        return std::string("unexpected: ") + e.what();
    }
}

void fix_header_md5(Bytes &archive)
{
    std::size_t size = engine::load_be32(&archive[56]);
    std::memset(&archive[32], 0, 16);
    auto digest = engine::md5(archive.data(), size);
    std::memcpy(&archive[32], digest.data(), 16);
}

void fix_extent_md5(Bytes &archive, std::size_t at)
{
    std::memset(&archive[at + 24], 0, 16);
    auto digest = engine::md5(&archive[at], 512);
    std::memcpy(&archive[at + 24], digest.data(), 16);
}

std::vector<std::size_t> extent_offsets(const Bytes &archive)
{
    std::vector<std::size_t> out;
    std::size_t at = engine::load_be32(&archive[56]);
    while (at + 512 <= archive.size()) {
        out.push_back(at);
        at += 512 + std::size_t(engine::load_be16(&archive[at + 6])) * 4096;
    }
    return out;
}

} // namespace vma_test
