// Short forms for building QMP arguments.
#pragma once

#include "util/json.h"

#include <initializer_list>
#include <string>
#include <utility>

namespace engine::upstream {

inline Json object(std::initializer_list<std::pair<const char *, Json>> members)
{
    Json result = Json::object();
    for (const auto &[key, value] : members)
        result.set(key, value);
    return result;
}

inline Json str(const std::string &text)
{
    return Json::string(text);
}

} // namespace engine::upstream
