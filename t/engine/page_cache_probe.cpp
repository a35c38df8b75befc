#include "page_cache_probe.h"

#include "util/error.h"

#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

namespace engine_test {

namespace {

// cachestat(2)'s ABI; Debian 12's headers predate it
constexpr long kSysCachestat = 451;
struct CachestatRange {
    std::uint64_t off, len;
};
struct Cachestat {
    std::uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};

// /proc/self/mounts writes space, tab, newline and backslash in a path as \ooo
std::string unescape_mount_field(const std::string &field)
{
    std::string out;
    for (std::size_t i = 0; i < field.size(); i++) {
        if (field[i] == '\\' && i + 3 < field.size()) {
            out += static_cast<char>(std::stoi(field.substr(i + 1, 3), nullptr, 8));
            i += 3;
        } else {
            out += field[i];
        }
    }
    return out;
}

bool mount_point_holds(const std::string &mount_point, const std::string &path)
{
    if (mount_point == "/")
        return true;
    return path.compare(0, mount_point.size(), mount_point) == 0 &&
           (path.size() == mount_point.size() || path[mount_point.size()] == '/');
}

} // namespace

std::size_t cached_pages(int fd, off_t offset, std::size_t length)
{
    void *map = ::mmap(nullptr, length, PROT_READ, MAP_SHARED, fd, offset);
    if (map == MAP_FAILED)
        engine::throw_errno("mmap");
    const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    std::vector<unsigned char> resident((length + page - 1) / page);
    const int rc = ::mincore(map, length, resident.data());
    const int err = errno;
    ::munmap(map, length);
    if (rc != 0) {
        errno = err;
        engine::throw_errno("mincore");
    }
    std::size_t cached = 0;
    for (unsigned char r : resident)
        cached += r & 1;
    return cached;
}

long dirty_pages(int fd)
{
    CachestatRange range{0, 0}; // the whole file
    Cachestat stat{};
    if (::syscall(kSysCachestat, fd, &range, &stat, 0) != 0)
        return -1;
    return static_cast<long>(stat.nr_dirty);
}

std::string fs_type(const std::string &path)
{
    const std::string canonical = std::filesystem::canonical(path).string();
    std::ifstream mounts("/proc/self/mounts");
    if (!mounts)
        engine::throw_errno("open /proc/self/mounts");
    std::string line, best_point, best_type;
    while (std::getline(mounts, line)) {
        std::istringstream fields(line);
        std::string device, point, type;
        if (!(fields >> device >> point >> type))
            continue;
        point = unescape_mount_field(point);
        // >=: of mounts stacked on one point, the last listed is the one seen
        if (mount_point_holds(point, canonical) && point.size() >= best_point.size()) {
            best_point = point;
            best_type = type;
        }
    }
    if (best_type.empty())
        throw engine::Error("no mount in /proc/self/mounts holds " + canonical);
    return best_type;
}

std::string not_applicable(const std::string &dir, const std::string &control_showed)
{
    return "not applicable on " + fs_type(dir) + ": a control file " + control_showed;
}

} // namespace engine_test
