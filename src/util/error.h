// The engine's one exception type: every failure the engine reports carries
// a message a user can act on (often Proxmox's own wording).
#pragma once

#include <stdexcept>
#include <string>

namespace engine {

class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// strerror(err) as text, thread-safe.
std::string errno_text(int err);

// Throws Error("<what> - <strerror(errno)>"), the form Proxmox's C code uses.
[[noreturn]] void throw_errno(const std::string &what);

} // namespace engine
