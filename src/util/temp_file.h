// Temporary files that leave nothing behind, whatever ends the process.
#pragma once

#include "util/fd.h"

#include <string>

namespace engine {

// A new read-write file in dir that has no name (O_TMPFILE, or mkstemp and
// an immediate unlink where the file system lacks it): its space is freed
// when the last fd closes, even after SIGKILL. Throws Error("can't create a
// temporary file in DIR - ...").
Fd unlinked_temp_file(const std::string &dir);

// The directory for large temporary files: $TMPDIR if set, else /var/tmp
// (not /tmp, often a small tmpfs).
std::string large_temp_dir();

// A fresh directory (mode 0700) under parent, removed (it must be empty by
// then) when this object goes. Throws Error on failure to create it.
class PrivateDir {
public:
    explicit PrivateDir(const std::string &parent, const std::string &prefix);
    ~PrivateDir();
    PrivateDir(const PrivateDir &) = delete;
    PrivateDir &operator=(const PrivateDir &) = delete;
    const std::string &path() const { return path_; }

private:
    std::string path_;
};

} // namespace engine
