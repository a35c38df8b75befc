#include "vma/output.h"

#include "util/error.h"

#include <cerrno>
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

namespace engine::vma {

namespace {

constexpr std::string_view kExecPrefix = "exec:";

} // namespace

ArchiveOutput::ArchiveOutput(const std::string &target) : target_(target)
{
    if (target.starts_with(kExecPrefix)) {
        std::string command = target.substr(kExecPrefix.size());
        int pipe_fds[2];
        if (pipe2(pipe_fds, O_CLOEXEC) < 0)
            throw_errno("can't popen command '" + command + "'");
        Fd read_end(pipe_fds[0]);
        fd_ = Fd(pipe_fds[1]);
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_adddup2(&actions, read_end.get(), STDIN_FILENO);
        const char *argv[] = {"sh", "-c", command.c_str(), nullptr};
        int err = posix_spawn(&child_, "/bin/sh", &actions, nullptr,
                              const_cast<char *const *>(argv), environ);
        posix_spawn_file_actions_destroy(&actions);
        if (err != 0) {
            child_ = -1;
            throw Error("can't popen command '" + command + "' - " + errno_text(err));
        }
        return;
    }
    struct stat st;
    if (stat(target.c_str(), &st) == 0 && S_ISFIFO(st.st_mode)) {
        fd_ = Fd(open(target.c_str(), O_WRONLY | O_CLOEXEC));
    } else {
        fd_ = Fd(open(target.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
        created_file_ = fd_.get() >= 0;
    }
    if (!fd_)
        throw_errno("can't open file " + target);
}

ArchiveOutput::~ArchiveOutput()
{
    abandon();
}

int ArchiveOutput::wait_child() noexcept
{
    int status = 0;
    while (waitpid(child_, &status, 0) < 0) {
        if (errno != EINTR) {
            status = -1;
            break;
        }
    }
    child_ = -1;
    return status;
}

void ArchiveOutput::abandon() noexcept
{
    fd_ = Fd();
    if (child_ > 0)
        wait_child();
    if (created_file_) {
        unlink(target_.c_str());
        created_file_ = false;
    }
}

void ArchiveOutput::commit()
{
    try {
        fd_.close_checked(("close of " + target_ + " failed").c_str());
    } catch (...) {
        abandon();
        throw;
    }
    if (child_ > 0) {
        std::string command = target_.substr(kExecPrefix.size());
        int status = wait_child();
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            abandon();
            if (WIFSIGNALED(status))
                throw Error("command '" + command + "' killed by signal " +
                            std::to_string(WTERMSIG(status)));
            throw Error("command '" + command + "' failed - exit code " +
                        std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1));
        }
    }
    created_file_ = false;
}

} // namespace engine::vma
