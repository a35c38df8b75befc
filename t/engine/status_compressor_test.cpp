#include "backup/compressor.h"

#include "catch2_compat.h"

#include <cstdio>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

using engine::backup::start_compressor;

namespace {

std::string temp_path(const char *name)
{
    return std::string("/tmp/engine-compressor-") + std::to_string(getpid()) + "-" + name;
}

std::string slurp(const std::string &path)
{
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

int wait_status(pid_t pid)
{
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    return status;
}

} // namespace

TEST_CASE("the compressor turns the pipe's bytes into the output file", "[status]")
{
    const std::string output = temp_path("out.gz");
    int output_fd = open(output.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    REQUIRE(output_fd >= 0);

    auto pipe = start_compressor("gzip --rsyncable", output_fd);
    close(output_fd);
    CHECK((fcntl(pipe.write_fd, F_GETFD) & FD_CLOEXEC) != 0);

    std::string data;
    for (int i = 0; i < 100000; ++i)
        data += "block " + std::to_string(i) + "\n";
    REQUIRE(write(pipe.write_fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()));
    close(pipe.write_fd);
    int status = wait_status(pipe.pid);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);

    const std::string plain = temp_path("plain");
    REQUIRE(std::system(("gzip -dc " + output + " > " + plain).c_str()) == 0);
    CHECK(slurp(plain) == data);
    unlink(output.c_str());
    unlink(plain.c_str());
}

TEST_CASE("the compressor inherits no descriptor but stdin, stdout and stderr", "[status]")
{
    const std::string output = temp_path("fds");
    int output_fd = open(output.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    REQUIRE(output_fd >= 0);
    int inheritable = dup2(output_fd, 77); // no close-on-exec, like POSIX::pipe() fds
    REQUIRE(inheritable == 77);

    // a shell command (metacharacters) that lists its own descriptors
    auto pipe = start_compressor("for fd in /proc/$$/fd/*; do echo ${fd##*/}; done", output_fd);
    close(output_fd);
    close(inheritable);
    close(pipe.write_fd);
    CHECK(WEXITSTATUS(wait_status(pipe.pid)) == 0);

    std::string fds = slurp(output);
    std::string without_std = fds;
    for (const char *standard : {"0\n", "1\n", "2\n"}) {
        CHECK(fds.find(standard) != std::string::npos);
        without_std.erase(without_std.find(standard), 2);
    }
    // all that may remain is the descriptor the glob itself opened
    CHECK(without_std.find("77\n") == std::string::npos);
    CHECK(without_std.size() <= 3);
    unlink(output.c_str());
}

TEST_CASE("a compressor that cannot run exits 1 like the original's child", "[status]")
{
    // the child reports on the stderr it inherits: catch it in a file
    const std::string errors = temp_path("stderr");
    int saved_stderr = dup(STDERR_FILENO);
    int errors_fd = open(errors.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    REQUIRE(errors_fd >= 0);
    dup2(errors_fd, STDERR_FILENO);
    close(errors_fd);

    int output_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    auto pipe = start_compressor("/nonexistent/zstd --threads=1", output_fd);
    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    close(output_fd);
    close(pipe.write_fd);
    int status = wait_status(pipe.pid);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 1);
    CHECK(slurp(errors) == "ERROR: fork compressor '/nonexistent/zstd --threads=1' failed\n");
    unlink(errors.c_str());
}
