#include "nbd/qemu_nbd_export.h"

#include "util/error.h"

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

extern char **environ;

namespace engine::nbd {

namespace {

constexpr const char *kProgram = "qemu-nbd";
// systemd's socket activation: the first passed fd is 3
constexpr int kListenFd = 3;
// how long a qemu-nbd that lost its client may take to close the image
// (a qcow2 writes its metadata) before finish() or stop() give up
constexpr int kExitTimeoutMs = 60 * 1000;
constexpr int kTermTimeoutMs = 10 * 1000;
constexpr int kSocketBuffer = 4 << 20;

std::string find_in_path(const std::string &program)
{
    const char *path = std::getenv("PATH");
    std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
    for (std::size_t start = 0; start <= dirs.size();) {
        std::size_t end = dirs.find(':', start);
        if (end == std::string::npos)
            end = dirs.size();
        std::string dir = dirs.substr(start, end - start);
        std::string candidate = (dir.empty() ? "." : dir) + "/" + program;
        if (access(candidate.c_str(), X_OK) == 0)
            return candidate;
        start = end + 1;
    }
    throw Error(std::string(kProgram) + " not found in PATH - install the package qemu-utils");
}

std::string make_private_dir()
{
    const char *tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/vma-qemu-nbd.XXXXXX";
    // mkdtemp creates the directory 0700: nobody else can reach the socket
    if (!mkdtemp(pattern.data()))
        throw_errno("can't create a temporary directory for qemu-nbd (" + pattern + ")");
    return pattern;
}

// An fd numbered above the ones the child rearranges (0-3), close-on-exec.
Fd high_fd(int fd, const char *what)
{
    Fd original(fd);
    if (!original)
        throw_errno(what);
    Fd moved(fcntl(original.get(), F_DUPFD_CLOEXEC, kListenFd + 1));
    if (!moved)
        throw_errno(what);
    return moved;
}

Fd listening_socket(const std::string &path)
{
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (path.size() >= sizeof(address.sun_path))
        throw Error("socket path " + path + " too long (set TMPDIR to a shorter directory)");
    std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
    Fd fd = high_fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), "can't create a unix socket");
    if (bind(fd.get(), reinterpret_cast<sockaddr *>(&address), sizeof(address)) < 0)
        throw_errno("can't bind " + path);
    // qemu-nbd's connection inherits the buffer size: replies of a few
    // MiB go out in one piece instead of 200 KiB at a time (best effort,
    // the kernel caps it at net.core.wmem_max)
    int buffer = kSocketBuffer;
    setsockopt(fd.get(), SOL_SOCKET, SO_SNDBUF, &buffer, sizeof(buffer));
    setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &buffer, sizeof(buffer));
    if (listen(fd.get(), 1) < 0)
        throw_errno("can't listen on " + path);
    return fd;
}

// Writes value in decimal into out (which has room for any pid).
void format_pid(char *out, pid_t value)
{
    char digits[16];
    int n = 0;
    do {
        digits[n++] = static_cast<char>('0' + value % 10);
        value /= 10;
    } while (value > 0);
    while (n > 0)
        *out++ = digits[--n];
    *out = '\0';
}

} // namespace

QemuNbdExport::QemuNbdExport(QemuNbdOptions options) : options_(std::move(options))
{
    std::string program = find_in_path(kProgram);
    dir_ = make_private_dir();
    socket_path_ = dir_ + "/nbd.sock";
    try {
        output_ = high_fd(memfd_create("qemu-nbd-output", MFD_CLOEXEC), "can't create a memfd");
        Fd listener = listening_socket(socket_path_);
        spawn(program, listener.get());
        // the listener now lives in the child only: when qemu-nbd exits the
        // socket closes and a pending connect fails instead of hanging
    } catch (...) {
        stop();
        throw;
    }
}

QemuNbdExport::~QemuNbdExport()
{
    stop();
}

void QemuNbdExport::spawn(const std::string &program, int listen_fd)
{
    std::vector<std::string> args = {kProgram};
    if (options_.read_only)
        args.push_back("--read-only");
    if (options_.format)
        args.push_back("--format=" + *options_.format);
    if (options_.cache)
        args.push_back("--cache=" + *options_.cache);
    if (options_.native_aio)
        args.push_back("--aio=native");
    args.push_back("--");
    args.push_back(options_.filename);
    std::vector<char *> argv;
    for (auto &arg : args)
        argv.push_back(arg.data());
    argv.push_back(nullptr);

    // the environment with LISTEN_FDS=1 and LISTEN_PID=<child pid>, the pid
    // filled in by the child (only async-signal-safe work after fork)
    std::vector<char *> envp;
    bool tuned = false;
    for (char **e = environ; *e; e++) {
        if (std::strncmp(*e, "LISTEN_", 7) != 0)
            envp.push_back(*e);
        tuned = tuned || std::strncmp(*e, "GLIBC_TUNABLES=", 15) == 0;
    }
    // qemu-nbd allocates a buffer per request: by default glibc maps each
    // 4 MiB buffer afresh (or trims it off the heap) and the kernel faults in
    // and clears its pages, a cost as large as the copy itself. Keeping them
    // on the heap bounds nothing less: the buffers in flight are what they are.
    char malloc_tunables[] = "GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:"
                             "glibc.malloc.trim_threshold=268435456";
    if (!tuned)
        envp.push_back(malloc_tunables);
    char listen_fds[] = "LISTEN_FDS=1";
    char listen_pid[32] = "LISTEN_PID=";
    envp.push_back(listen_fds);
    envp.push_back(listen_pid);
    envp.push_back(nullptr);

    Fd null_in = high_fd(open("/dev/null", O_RDONLY | O_CLOEXEC), "can't open /dev/null");
    const pid_t parent = getpid();
    // no signal handler of ours may run in the child before exec: signals
    // stay blocked across fork until the child has reset every disposition
    sigset_t all, saved;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    pid_t pid = fork();
    if (pid < 0) {
        int err = errno;
        pthread_sigmask(SIG_SETMASK, &saved, nullptr);
        throw Error("can't start qemu-nbd - " + errno_text(err));
    }
    if (pid == 0) {
        struct sigaction default_action = {};
        default_action.sa_handler = SIG_DFL;
        for (int sig = 1; sig < NSIG; sig++)
            sigaction(sig, &default_action, nullptr);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr);
        // the fds 0-3 get their final contents; everything else is closed
        if (dup2(null_in.get(), STDIN_FILENO) < 0 || dup2(output_.get(), STDOUT_FILENO) < 0 ||
            dup2(output_.get(), STDERR_FILENO) < 0 || dup2(listen_fd, kListenFd) < 0)
            _exit(127);
        close_range(kListenFd + 1, ~0U, 0);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) // vma died before the line above
            _exit(127);
        format_pid(listen_pid + std::strlen("LISTEN_PID="), getpid());
        execve(program.c_str(), argv.data(), envp.data());
        static const char message[] = "qemu-nbd: can't execute qemu-nbd\n";
        (void)!write(STDERR_FILENO, message, sizeof(message) - 1);
        _exit(127);
    }
    pthread_sigmask(SIG_SETMASK, &saved, nullptr);
    pid_ = pid;
}

std::unique_ptr<Connection> QemuNbdExport::connect()
{
    try {
        auto connection = std::make_unique<Connection>(socket_path_, "");
        // the only client is in: nothing is left to find, even if vma is
        // killed from here on
        remove_files();
        return connection;
    } catch (const Error &e) {
        // qemu-nbd exits at once when QEMU cannot open the image
        if (wait_exit(kTermTimeoutMs)) {
            std::string message = qemu_message();
            throw Error(message.empty() ? exit_text() : message);
        }
        throw;
    }
}

void QemuNbdExport::finish()
{
    if (!wait_exit(kExitTimeoutMs))
        throw Error("qemu-nbd failed closing '" + options_.filename + "' - still running after its client left");
    remove_files();
    if (!WIFEXITED(status_) || WEXITSTATUS(status_) != 0) {
        std::string message = qemu_message();
        throw Error("qemu-nbd failed closing '" + options_.filename + "' - " +
                    (message.empty() ? exit_text() : message));
    }
    // a successful run's warnings are the user's to see
    std::string message = qemu_message();
    if (!message.empty())
        std::fprintf(stderr, "%s\n", message.c_str());
}

std::string QemuNbdExport::failure_after_error()
{
    if (!wait_exit(1000))
        return {};
    std::string message = qemu_message();
    return exit_text() + (message.empty() ? "" : ": " + message);
}

bool QemuNbdExport::wait_exit(int timeout_ms)
{
    if (exited_ || pid_ < 0)
        return true;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
        pid_t done = waitpid(pid_, &status_, WNOHANG);
        if (done == pid_ || (done < 0 && errno != EINTR)) {
            exited_ = true;
            return true;
        }
        if (std::chrono::steady_clock::now() >= deadline)
            return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
}

void QemuNbdExport::stop() noexcept
{
    if (pid_ > 0 && !exited_) {
        kill(pid_, SIGTERM);
        if (!wait_exit(kTermTimeoutMs)) {
            kill(pid_, SIGKILL);
            while (waitpid(pid_, &status_, 0) < 0 && errno == EINTR) {
            }
            exited_ = true;
        }
    }
    remove_files();
}

void QemuNbdExport::remove_files() noexcept
{
    // qemu-nbd removes no socket it did not create itself
    if (!socket_path_.empty())
        unlink(socket_path_.c_str());
    if (!dir_.empty())
        rmdir(dir_.c_str());
    socket_path_.clear();
    dir_.clear();
}

std::string QemuNbdExport::exit_text() const
{
    if (WIFSIGNALED(status_))
        return "qemu-nbd was killed by signal " + std::to_string(WTERMSIG(status_));
    return "qemu-nbd exited with status " + std::to_string(WEXITSTATUS(status_));
}

std::string QemuNbdExport::qemu_message() const
{
    std::string text;
    char buf[4096];
    for (off_t offset = 0;;) {
        ssize_t n = pread(output_.get(), buf, sizeof(buf), offset);
        if (n <= 0)
            break;
        text.append(buf, static_cast<std::size_t>(n));
        offset += n;
        if (text.size() > 64 * 1024) // a runaway child's output is not a message
            break;
    }
    while (!text.empty() && (text.back() == '\n' || text.back() == ' '))
        text.pop_back();
    // qemu-nbd's own wrapping of QEMU's message carries nothing for the user:
    // "qemu-nbd: Failed to blk_new_open 'F': Could not open 'F': ..."
    const std::string prefix = std::string(kProgram) + ": ";
    const std::string open_prefix = "Failed to blk_new_open '" + options_.filename + "': ";
    std::string cleaned;
    for (std::size_t start = 0; start < text.size();) {
        std::size_t end = text.find('\n', start);
        if (end == std::string::npos)
            end = text.size();
        std::string line = text.substr(start, end - start);
        if (line.starts_with(prefix))
            line.erase(0, prefix.size());
        if (line.starts_with(open_prefix))
            line.erase(0, open_prefix.size());
        if (!cleaned.empty())
            cleaned += '\n';
        cleaned += line;
        start = end + 1;
    }
    return cleaned;
}

} // namespace engine::nbd
