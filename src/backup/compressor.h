// The compressor between QEMU and the archive file: a child process reading
// a pipe on stdin and writing the output file on stdout, started the way the
// original plugin's $fork_compressor_pipe starts it, but leaking no other
// file descriptor into the child.
#pragma once

#include <string>
#include <sys/types.h>

namespace engine::backup {

struct CompressorPipe {
    pid_t pid;    // the compressor; the caller reaps it (waitpid)
    int write_fd; // the pipe's write end, owned by the caller (close-on-exec)
};

// Starts `command` (e.g. "zstd --threads=1") with stdin = a new pipe's read
// end and stdout = `output_fd`; every other descriptor is closed in the
// child. Like Perl's exec with one string, a command without shell
// metacharacters is split on whitespace and run directly (PATH lookup),
// anything else runs through /bin/sh -c. When the exec fails, the child
// prints "ERROR: fork compressor '<command>' failed" to stderr and exits 1,
// as the original's child does. Throws "unable to fork worker - <strerror>"
// when no child can be created.
CompressorPipe start_compressor(const std::string &command, int output_fd);

} // namespace engine::backup
