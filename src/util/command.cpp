#include "util/command.h"

#include "util/error.h"
#include "util/fd.h"

#include <cerrno>
#include <csignal>
#include <fcntl.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

namespace engine {

namespace {

// The child, reaped on every path; killed first unless it was waited for.
class Child {
public:
    explicit Child(pid_t pid) : pid_(pid) {}
    ~Child()
    {
        if (pid_ > 0) {
            kill(pid_, SIGKILL);
            wait();
        }
    }
    Child(const Child &) = delete;
    Child &operator=(const Child &) = delete;

    int wait()
    {
        int status = 0;
        while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
        }
        pid_ = -1;
        return status;
    }

private:
    pid_t pid_;
};

// RAII for the spawn attributes, so that every early return frees them.
struct SpawnSetup {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    SpawnSetup()
    {
        posix_spawn_file_actions_init(&actions);
        posix_spawnattr_init(&attributes);
    }
    ~SpawnSetup()
    {
        posix_spawn_file_actions_destroy(&actions);
        posix_spawnattr_destroy(&attributes);
    }
};

std::string read_back(int fd)
{
    std::string text;
    char buf[4096];
    for (off_t offset = 0; text.size() < 64 * 1024;) {
        ssize_t n = pread(fd, buf, sizeof(buf), offset);
        if (n <= 0)
            break;
        text.append(buf, static_cast<std::size_t>(n));
        offset += n;
    }
    while (!text.empty() && (text.back() == '\n' || text.back() == ' '))
        text.pop_back();
    return text;
}

} // namespace

void run_command(const std::vector<std::string> &argv,
                 const std::function<void(std::string_view line)> &on_line)
{
    const std::string &program = argv.at(0);
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC) < 0)
        throw_errno("can't run " + program + " - pipe");
    Fd out_read(pipe_fds[0]), out_write(pipe_fds[1]);
    Fd errors(memfd_create("command-stderr", MFD_CLOEXEC));
    if (!errors)
        throw_errno("can't run " + program + " - memfd_create");

    SpawnSetup setup;
    posix_spawn_file_actions_addopen(&setup.actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&setup.actions, out_write.get(), STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&setup.actions, errors.get(), STDERR_FILENO);
    sigset_t all, none;
    sigfillset(&all);
    sigemptyset(&none);
    posix_spawnattr_setsigdefault(&setup.attributes, &all);
    posix_spawnattr_setsigmask(&setup.attributes, &none);
    posix_spawnattr_setflags(&setup.attributes, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);

    std::vector<char *> args;
    for (const auto &arg : argv)
        args.push_back(const_cast<char *>(arg.c_str()));
    args.push_back(nullptr);
    pid_t pid;
    int err = posix_spawnp(&pid, program.c_str(), &setup.actions, &setup.attributes, args.data(), environ);
    if (err == ENOENT)
        throw Error(program + " not found in PATH");
    if (err != 0)
        throw Error("can't run " + program + " - " + errno_text(err));
    Child child(pid);
    out_write = Fd(); // the child's copy is the only writer: EOF when it exits

    std::string pending;
    char buf[64 * 1024];
    for (;;) {
        ssize_t n = read(out_read.get(), buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            throw_errno("can't read the output of " + program);
        if (n == 0)
            break;
        pending.append(buf, static_cast<std::size_t>(n));
        std::size_t start = 0;
        for (std::size_t end; (end = pending.find('\n', start)) != std::string::npos; start = end + 1)
            on_line(std::string_view(pending).substr(start, end - start));
        pending.erase(0, start);
    }
    if (!pending.empty())
        on_line(pending);

    int status = child.wait();
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return;
    std::string message = read_back(errors.get());
    if (message.empty())
        message = WIFSIGNALED(status) ? "killed by signal " + std::to_string(WTERMSIG(status))
                                      : "exit status " + std::to_string(WEXITSTATUS(status));
    throw Error(program + " failed - " + message);
}

} // namespace engine
