// Runs a helper program (qemu-img, say) to completion for what it prints:
// its stdout is handed over line by line as it arrives, so a long output
// costs no memory, and its stderr is kept for the error message.
//
// Contract:
// - argv[0] is looked up in PATH. stdin is /dev/null; the child starts with
//   every signal at its default and none blocked, whatever the caller's
//   handlers and mask.
// - on_line gets each line of stdout without its newline (a last line
//   without one included).
// - Throws Error("<argv[0]> not found in PATH") when there is no such
//   program, and Error("<argv[0]> failed - <its stderr, or its exit
//   status>") when it does not exit with status 0.
// - If on_line throws, the child is killed and reaped before the exception
//   leaves: no child is left behind on any path.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace engine {

void run_command(const std::vector<std::string> &argv,
                 const std::function<void(std::string_view line)> &on_line);

} // namespace engine
