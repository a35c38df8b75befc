#include "qmp/reply_line.h"

#include "qmp/error.h"

#include <string>

namespace engine::qmp {

Json parse_reply_line(std::string_view line)
{
    try {
        return Json::parse(line);
    } catch (const JsonError &e) {
        std::string start(line.substr(0, 40));
        throw Error(Error::Kind::protocol, "malformed JSON string - " + std::string(e.what()) + " (before \"" +
                                               start + "\")\n");
    }
}

} // namespace engine::qmp
