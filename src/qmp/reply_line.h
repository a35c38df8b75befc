// Parsing one line a QMP or guest-agent peer sent, shared by both clients.
#pragma once

#include "util/json.h"

#include <string_view>

namespace engine::qmp {

// Parses `line` as JSON. A line that even Perl's JSON cannot make sense of
// fails PVE's queue: throws Error(protocol, "malformed JSON string - <json-c's
// reason> (before \"<first 40 bytes of the line>\")\n").
Json parse_reply_line(std::string_view line);

} // namespace engine::qmp
