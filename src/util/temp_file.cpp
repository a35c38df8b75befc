#include "util/temp_file.h"

#include "util/error.h"

#include <cerrno>
#include <cstdlib>
#include <fcntl.h>
#include <unistd.h>
#include <vector>

namespace engine {

Fd unlinked_temp_file(const std::string &dir)
{
    Fd fd(open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
    if (fd)
        return fd;
    if (errno != EOPNOTSUPP && errno != EISDIR)
        throw_errno("can't create a temporary file in " + dir);
    std::string name = dir + "/.vma-tmp-XXXXXX";
    std::vector<char> path(name.begin(), name.end());
    path.push_back('\0');
    fd = Fd(mkostemp(path.data(), O_CLOEXEC));
    if (!fd)
        throw_errno("can't create a temporary file in " + dir);
    unlink(path.data());
    return fd;
}

std::string large_temp_dir()
{
    const char *dir = std::getenv("TMPDIR");
    return dir && *dir ? dir : "/var/tmp";
}

PrivateDir::PrivateDir(const std::string &parent, const std::string &prefix)
{
    std::string name = parent + "/" + prefix + "XXXXXX";
    std::vector<char> path(name.begin(), name.end());
    path.push_back('\0');
    if (!mkdtemp(path.data())) // mkdtemp creates it 0700
        throw_errno("can't create a private directory in " + parent);
    path_ = path.data();
}

PrivateDir::~PrivateDir() { rmdir(path_.c_str()); }

} // namespace engine
