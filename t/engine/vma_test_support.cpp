#include "vma_test_support.h"

#include "util/error.h"
#include "util/fd.h"
#include "vma/writer.h"

#include <algorithm>
#include <cstdlib>
#include <fcntl.h>
#include <filesystem>
#include <sys/mman.h>
#include <unistd.h>

namespace vma_test {

TempDir::TempDir()
{
    std::string templ = (std::filesystem::temp_directory_path() / "vma-test.XXXXXX").string();
    if (!mkdtemp(templ.data()))
        engine::throw_errno("mkdtemp");
    path_ = templ;
}

TempDir::~TempDir()
{
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
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

} // namespace vma_test
