#include "backup/compressor.h"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <stdexcept>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace engine::backup {

namespace {

// Perl's exec(STRING) hands a command to the shell when it contains one of
// these (doio.c: PL_cshname / "$&*(){}[]'\";\\|?<>~`\n").
bool needs_shell(const std::string &command)
{
    return command.find_first_of("$&*(){}[]'\";\\|?<>~`\n") != std::string::npos;
}

std::vector<std::string> exec_words(const std::string &command)
{
    if (needs_shell(command))
        return {"/bin/sh", "-c", command};
    std::vector<std::string> words;
    size_t position = 0;
    while ((position = command.find_first_not_of(" \t\n\r\f", position)) != std::string::npos) {
        size_t end = command.find_first_of(" \t\n\r\f", position);
        words.push_back(command.substr(position, end - position));
        position = end;
    }
    return words;
}

// Runs in the forked child: only async-signal-safe calls from here on.
[[noreturn]] void exec_child(int read_fd, int output_fd, char *const argv[], const char *failure)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);

    // the output fd may sit on 0: move it out of the way before stdin lands
    if (output_fd == STDIN_FILENO) {
        output_fd = fcntl(output_fd, F_DUPFD_CLOEXEC, 3);
        if (output_fd < 0)
            _exit(1);
    }
    if (dup2(read_fd, STDIN_FILENO) < 0 || dup2(output_fd, STDOUT_FILENO) < 0)
        _exit(1);
    // the compressor sees stdin, stdout and stderr: nothing else of ours
    close_range(3, ~0U, 0);

    if (argv[0])
        execvp(argv[0], argv);
    ssize_t ignored = write(STDERR_FILENO, failure, strlen(failure));
    (void)ignored;
    _exit(1);
}

} // namespace

CompressorPipe start_compressor(const std::string &command, int output_fd)
{
    // everything the child needs is prepared before fork()
    std::vector<std::string> words = exec_words(command);
    std::vector<char *> argv;
    for (std::string &word : words)
        argv.push_back(word.data());
    argv.push_back(nullptr);
    const std::string failure = "ERROR: fork compressor '" + command + "' failed\n";

    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC) < 0)
        throw std::runtime_error(std::string("unable to fork worker - ") + strerror(errno) + "\n");

    pid_t pid = fork();
    if (pid < 0) {
        int err = errno;
        close(pipe_fds[0]);
        close(pipe_fds[1]);
        throw std::runtime_error(std::string("unable to fork worker - ") + strerror(err) + "\n");
    }
    if (pid == 0)
        exec_child(pipe_fds[0], output_fd, argv.data(), failure.c_str());

    close(pipe_fds[0]);
    return CompressorPipe{pid, pipe_fds[1]};
}

} // namespace engine::backup
