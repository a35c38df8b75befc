#include "util/error.h"

#include <cerrno>
#include <cstring>

namespace engine {

std::string errno_text(int err)
{
    char buf[256];
    // the GNU strerror_r returns the message, not always in buf
    return strerror_r(err, buf, sizeof buf);
}

void throw_errno(const std::string &what)
{
    throw Error(what + " - " + errno_text(errno));
}

} // namespace engine
