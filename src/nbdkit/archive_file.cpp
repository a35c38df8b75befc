#include "nbdkit/archive_file.h"

#include "util/error.h"
#include "util/temp_file.h"
#include "vma/format.h"
#include "vma/reader.h"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace engine::nbdkit_vma {

namespace {

struct Compressor {
    const char *name;
    std::vector<unsigned char> magic;
    std::vector<const char *> argv; // decompress stdin to stdout
};

const Compressor kCompressors[] = {
    {"zstd", {0x28, 0xb5, 0x2f, 0xfd}, {"zstd", "-q", "-d", "-c", nullptr}},
    {"gzip", {0x1f, 0x8b}, {"gzip", "-d", "-c", nullptr}},
    {"lzop", {0x89, 'L', 'Z', 'O', 0x00, 0x0d, 0x0a, 0x1a, 0x0a}, {"lzop", "-d", "-c", nullptr}},
};

const Compressor *compressor_of(int fd, const std::string &path)
{
    unsigned char head[16] = {};
    std::size_t got = pread_full(fd, head, sizeof head, 0, ("can't read file " + path).c_str());
    for (const auto &c : kCompressors)
        if (got >= c.magic.size() && !std::memcmp(head, c.magic.data(), c.magic.size()))
            return &c;
    return nullptr;
}

// A decompressor reading input_fd (from its start) and writing output_fd;
// killed and reaped if still running when destroyed, and killed by the
// kernel should nbdkit die first.
class Decompressor {
public:
    Decompressor(const Compressor &c, int input_fd, int output_fd) : name_(c.name)
    {
        pid_t parent = getpid();
        pid_ = fork();
        if (pid_ < 0)
            throw_errno(std::string("can't start ") + c.name);
        if (pid_ == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent)
                _exit(127);
            if (dup2(input_fd, STDIN_FILENO) < 0 || dup2(output_fd, STDOUT_FILENO) < 0 ||
                lseek(STDIN_FILENO, 0, SEEK_SET) < 0)
                _exit(127);
            execvp(c.argv[0], const_cast<char *const *>(c.argv.data()));
            _exit(127);
        }
    }
    ~Decompressor()
    {
        if (pid_ > 0) {
            kill(pid_, SIGKILL);
            waitpid(pid_, nullptr, 0);
        }
    }
    Decompressor(const Decompressor &) = delete;
    Decompressor &operator=(const Decompressor &) = delete;

    // Waits for it; throws unless it exited 0.
    void wait(const std::string &path)
    {
        int status = 0;
        while (waitpid(pid_, &status, 0) < 0)
            if (errno != EINTR)
                throw_errno("waitpid");
        pid_ = -1;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
            throw Error(name_ + " failed decompressing " + path + " (is " + name_ + " installed?)");
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            throw Error(name_ + " failed decompressing " + path + " (" +
                        (WIFEXITED(status) ? "exit status " + std::to_string(WEXITSTATUS(status))
                                           : "signal " + std::to_string(WTERMSIG(status))) +
                        ")");
    }

private:
    std::string name_;
    pid_t pid_ = -1;
};

// The most an archive with this header can hold uncompressed: every cluster
// stored whole, one extent header per 58 clusters (the writer's fill), the
// largest header.
std::uint64_t uncompressed_bound(const vma::Reader &reader)
{
    std::uint64_t clusters = 0;
    for (const auto &dev : reader.devices())
        clusters += vma::clusters_for(dev.size);
    std::uint64_t extents = clusters / vma::kWriterSlotsPerExtent + 1;
    return vma::kMaxHeaderSize + clusters * vma::kClusterSize + extents * vma::kExtentHeaderSize;
}

// Reads the header through a second decompressor run (it stops as soon as
// the header is in), so the space needed is known before decompressing.
std::uint64_t probe_uncompressed_bound(const Compressor &c, int archive_fd, const std::string &path)
{
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC) < 0)
        throw_errno("pipe");
    Fd read_end(pipe_fds[0]), write_end(pipe_fds[1]);
    Decompressor probe(c, archive_fd, write_end.get());
    write_end = Fd();
    try {
        vma::Reader reader(std::move(read_end));
        return uncompressed_bound(reader);
    } catch (const Error &) {
        // a damaged compressed stream ends the data early: say that, not
        // what the reader made of the part it got
        probe.wait(path);
        throw;
    }
}

std::string mib(std::uint64_t bytes)
{
    return std::to_string((bytes + (1 << 20) - 1) >> 20) + " MiB";
}

} // namespace

Fd open_archive_file(const std::string &path, const std::function<void(const std::string &)> &say)
{
    Fd archive(open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!archive)
        throw_errno("can't open file " + path);
    struct stat st;
    if (fstat(archive.get(), &st) < 0)
        throw_errno("can't stat file " + path);
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
        throw Error(path + " is not a file: the plugin reads the archive at random");
    const Compressor *c = compressor_of(archive.get(), path);
    if (!c)
        return archive;

    std::uint64_t bound = probe_uncompressed_bound(*c, archive.get(), path);
    std::string parent = large_temp_dir();
    Fd cache;
    std::string where;
    {
        PrivateDir dir(parent, "nbdkit-vma-");
        cache = unlinked_temp_file(dir.path());
        where = dir.path();
    }
    struct statvfs fs;
    std::uint64_t free_bytes = statvfs(parent.c_str(), &fs) == 0 ? fs.f_bavail * fs.f_frsize : 0;
    say(std::string("decompressing ") + path + " with " + c->name + " into an unnamed cache file in " +
        where + " (removed again); it needs up to " + mib(bound) +
        " (the uncompressed archive; less for sparse disks), " + mib(free_bytes) + " are free in " +
        parent);
    if (bound > free_bytes)
        say("warning: " + parent + " may be too small; set TMPDIR to a larger file system");
    Decompressor decompressor(*c, archive.get(), cache.get());
    decompressor.wait(path);
    // the reader reads sequentially from the start
    if (lseek(cache.get(), 0, SEEK_SET) < 0)
        throw_errno("can't rewind the cache file");
    struct stat cst;
    if (fstat(cache.get(), &cst) == 0)
        say("decompressed " + path + ": the cache file holds " + mib(std::uint64_t(cst.st_size)) +
            " until nbdkit exits");
    return cache;
}

} // namespace engine::nbdkit_vma
