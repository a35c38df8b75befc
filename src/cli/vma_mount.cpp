// vma mount [-p PART] ARCHIVE DEVNAME MOUNTPOINT and vma umount MOUNTPOINT:
// one device of an archive mounted read-only without restoring it.
//
// mount runs nbdkit with the VMA plugin on a Unix socket, nbdfuse to make
// the export a file, a read-only loop device over that file (over one
// partition of it: the first by default, -p N for another, -p 0 for the
// whole disk), and mount -o ro. Its state lives in
// /run/vma-mount/<mountpoint with / as _>/; every step is undone, in
// reverse, when a later one fails, and umount undoes them all.
#include "cli/vma_commands.h"

#include "cli/partition_table.h"

#include "util/error.h"

#include <cerrno>
#include <chrono>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace vma_cli {

namespace {

using engine::Error;

const std::string kStateRoot = "/run/vma-mount";

std::string read_text(const std::string &path)
{
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    std::string text = s.str();
    while (!text.empty() && (text.back() == '\n' || text.back() == ' '))
        text.pop_back();
    return text;
}

void write_text(const std::string &path, const std::string &text)
{
    std::ofstream out(path);
    out << text << "\n";
    if (!out.flush())
        throw Error("can't write " + path);
}

// Starts argv (PATH lookup) with stdout to out_fd (-1: inherited) and stderr
// to err_fd (-1: inherited); in a new session when detach.
pid_t spawn(const std::vector<std::string> &argv, int out_fd, int err_fd, bool detach)
{
    std::vector<char *> args;
    for (const auto &a : argv)
        args.push_back(const_cast<char *>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = fork();
    if (pid < 0)
        engine::throw_errno("can't start " + argv[0]);
    if (pid == 0) {
        if (detach) {
            setsid();
            int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
            dup2(null, STDIN_FILENO);
        }
        if (out_fd >= 0)
            dup2(out_fd, STDOUT_FILENO);
        if (err_fd >= 0)
            dup2(err_fd, STDERR_FILENO);
        execvp(args[0], args.data());
        std::fprintf(stderr, "vma: can't run %s - %s\n", args[0], std::strerror(errno));
        _exit(127);
    }
    return pid;
}

std::string describe_status(const std::string &what, int status)
{
    if (WIFEXITED(status))
        return what + " failed (exit status " + std::to_string(WEXITSTATUS(status)) + ")";
    return what + " failed (signal " + std::to_string(WTERMSIG(status)) + ")";
}

int wait_for(pid_t pid)
{
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            engine::throw_errno("waitpid");
    return status;
}

// Runs argv to completion; its stdout is returned (trimmed). Throws naming
// the command when it fails (its own message went to stderr).
std::string run(const std::vector<std::string> &argv)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        engine::throw_errno("pipe");
    engine::Fd read_end(fds[0]), write_end(fds[1]);
    pid_t pid = spawn(argv, write_end.get(), -1, false);
    write_end = engine::Fd();
    std::string out;
    char buf[4096];
    for (ssize_t n; (n = read(read_end.get(), buf, sizeof buf)) != 0;) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        out.append(buf, static_cast<std::size_t>(n));
    }
    int status = wait_for(pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        throw Error(describe_status(argv[0], status));
    while (!out.empty() && out.back() == '\n')
        out.pop_back();
    return out;
}

// A child of ours that exited is reaped here: kill() would still find it.
bool process_alive(pid_t pid)
{
    if (pid <= 0)
        return false;
    if (waitpid(pid, nullptr, WNOHANG) == pid)
        return false;
    return kill(pid, 0) == 0;
}

// Waits up to seconds for pred; false on timeout.
template <typename Pred>
bool wait_until(Pred pred, int seconds)
{
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (!pred()) {
        if (std::chrono::steady_clock::now() > end)
            return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return true;
}

void stop_process(pid_t pid)
{
    if (!process_alive(pid))
        return;
    kill(pid, SIGTERM);
    if (!wait_until([&] { return !process_alive(pid); }, 10)) {
        kill(pid, SIGKILL);
        wait_until([&] { return !process_alive(pid); }, 5);
    }
}

bool is_mountpoint(const std::string &path)
{
    std::ifstream in("/proc/self/mountinfo");
    for (std::string line; std::getline(in, line);) {
        std::istringstream fields(line);
        std::string id, parent, dev, root, point;
        fields >> id >> parent >> dev >> root >> point;
        if (point == path)
            return true;
    }
    return false;
}

std::string absolute(const std::string &path)
{
    char buf[PATH_MAX];
    if (!realpath(path.c_str(), buf))
        engine::throw_errno("can't resolve " + path);
    return buf;
}

std::string state_dir_for(const std::string &mountpoint)
{
    std::string name = mountpoint;
    for (auto &ch : name)
        if (ch == '/')
            ch = '_';
    return kStateRoot + "/" + name;
}

// The plugin: next to this vma binary in a build tree, else by name from
// nbdkit's plugin directory.
std::string plugin_path()
{
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n > 0) {
        std::string exe(buf, static_cast<std::size_t>(n));
        std::string candidate = exe.substr(0, exe.rfind('/') + 1) + "nbdkit-vma-plugin.so";
        if (access(candidate.c_str(), R_OK) == 0)
            return candidate;
    }
    return "vma";
}

// Undo steps of a mount in progress, run in reverse unless dismissed.
class Undo {
public:
    ~Undo()
    {
        for (auto it = steps_.rbegin(); it != steps_.rend(); ++it) {
            try {
                (*it)();
            } catch (const std::exception &e) {
                std::fprintf(stderr, "vma: while undoing: %s\n", e.what());
            }
        }
    }
    void add(std::function<void()> step) { steps_.push_back(std::move(step)); }
    void dismiss() { steps_.clear(); }

private:
    std::vector<std::function<void()>> steps_;
};

void usage()
{
    std::fputs("usage: vma mount [-p PARTITION] <filename> <devname> <mountpoint>\n"
               "       vma umount <mountpoint>\n",
               stderr);
    std::exit(1);
}

// Undoes a mount from its state directory; each step only if it was made.
void teardown(const std::string &mountpoint, const std::string &state)
{
    if (is_mountpoint(mountpoint))
        run({"umount", mountpoint});
    std::string loop = read_text(state + "/loop");
    if (!loop.empty())
        run({"losetup", "--detach", loop});
    unlink((state + "/loop").c_str());
    std::string fuse = state + "/fuse";
    pid_t fuse_pid = static_cast<pid_t>(std::atol(read_text(state + "/nbdfuse.pid").c_str()));
    if (is_mountpoint(fuse))
        run({"fusermount3", "-u", fuse});
    // nbdfuse exits by itself once unmounted
    if (!wait_until([&] { return !process_alive(fuse_pid); }, 10))
        stop_process(fuse_pid);
    stop_process(static_cast<pid_t>(std::atol(read_text(state + "/nbdkit.pid").c_str())));
    for (const char *file : {"/nbdfuse.pid", "/nbdfuse.log", "/nbdkit.pid", "/nbdkit.sock"})
        unlink((state + file).c_str());
    rmdir(fuse.c_str());
    if (rmdir(state.c_str()) < 0 && errno != ENOENT)
        engine::throw_errno("can't remove " + state);
}

} // namespace

int mount_device(int argc, char **argv)
{
    int partition = -1; // the first there is, or the whole disk
    for (int c; (c = getopt(argc, argv, "hp:")) != -1;) {
        if (c == 'p')
            partition = std::atoi(optarg);
        else
            usage();
    }
    if (optind + 3 != argc)
        usage();
    std::string archive = absolute(argv[optind]), devname = argv[optind + 1];
    std::string mountpoint = absolute(argv[optind + 2]);
    struct stat st;
    if (stat(mountpoint.c_str(), &st) < 0 || !S_ISDIR(st.st_mode))
        throw Error("mount point " + mountpoint + " is not a directory");
    if (is_mountpoint(mountpoint))
        throw Error(mountpoint + " is already a mount point");
    std::string state = state_dir_for(mountpoint);
    mkdir(kStateRoot.c_str(), 0700);
    if (mkdir(state.c_str(), 0700) < 0)
        engine::throw_errno("can't create " + state + " (is " + mountpoint + " in use by vma mount?)");

    Undo undo;
    undo.add([&] { teardown(mountpoint, state); });

    std::string sock = state + "/nbdkit.sock";
    // nbdkit reads the archive and forks into the background once it serves;
    // it fails here, with the plugin's message, for a damaged archive
    run({"nbdkit", "--unix", sock, "--pidfile", state + "/nbdkit.pid", "--readonly", plugin_path(),
         archive, "dev=" + devname});
    if (!wait_until([&] { return access((state + "/nbdkit.pid").c_str(), F_OK) == 0; }, 30))
        throw Error("nbdkit did not write its pid file");

    std::string fuse = state + "/fuse";
    if (mkdir(fuse.c_str(), 0700) < 0)
        engine::throw_errno("can't create " + fuse);
    engine::Fd log(open((state + "/nbdfuse.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    pid_t fuse_pid = spawn({"nbdfuse", "--readonly", "--pidfile", state + "/nbdfuse.pid",
                            fuse + "/disk", "--unix", sock},
                           log.get(), log.get(), true);
    bool exited = false;
    if (!wait_until([&] {
            if (waitpid(fuse_pid, nullptr, WNOHANG) == fuse_pid)
                exited = true;
            return exited || access((state + "/nbdfuse.pid").c_str(), F_OK) == 0;
        }, 30) || exited)
        throw Error("nbdfuse failed: " + read_text(state + "/nbdfuse.log"));

    std::string disk = fuse + "/disk";
    std::vector<std::string> losetup = {"losetup", "--find", "--show", "--read-only"};
    if (partition != 0) {
        engine::Fd disk_fd(open(disk.c_str(), O_RDONLY | O_CLOEXEC));
        if (!disk_fd)
            engine::throw_errno("can't open " + disk);
        auto parts = read_partition_table(disk_fd.get());
        const Partition *chosen = nullptr;
        for (const auto &p : parts)
            if (partition < 0 || p.number == partition) {
                chosen = &p;
                break;
            }
        if (!chosen && partition > 0)
            throw Error(devname + " has no partition " + std::to_string(partition));
        if (chosen) {
            losetup.push_back("--offset=" + std::to_string(chosen->offset));
            losetup.push_back("--sizelimit=" + std::to_string(chosen->size));
        }
    }
    losetup.push_back(disk);
    std::string loop = run(losetup);
    write_text(state + "/loop", loop);

    try {
        run({"mount", "-o", "ro", loop, mountpoint});
    } catch (const Error &) {
        // a backup of a running ext3/4 has a journal to replay, which a
        // read-only device cannot take: mount it without replaying
        run({"mount", "-o", "ro,noload", loop, mountpoint});
    }
    undo.dismiss();
    std::printf("mounted %s of %s read-only on %s (%s)\n", devname.c_str(), archive.c_str(),
                mountpoint.c_str(), loop.c_str());
    return 0;
}

int umount_device(int argc, char **argv)
{
    if (argc != 2)
        usage();
    std::string mountpoint = absolute(argv[1]);
    std::string state = state_dir_for(mountpoint);
    if (access(state.c_str(), F_OK) != 0)
        throw Error(mountpoint + " is not mounted by vma mount");
    teardown(mountpoint, state);
    return 0;
}

} // namespace vma_cli
