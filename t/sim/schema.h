// QEMU's strict QMP argument checking, for the commands the simulator knows:
// unknown members, missing required ones and wrong JSON types are refused
// with QEMU's texts ("Parameter 'x' is unexpected", "Parameter 'x' is
// missing", "Invalid parameter type for 'x', expected: integer").
#pragma once

#include "util/json.h"

#include <string>
#include <vector>

namespace pve_sim {

enum class Type { string, integer, boolean, object, array, any };

struct Parameter {
    std::string name;
    Type type;
    bool required = false;
};

// Throws QmpError when `arguments` (an object, or null for none) does not fit.
void check_arguments(const engine::Json &arguments, const std::vector<Parameter> &parameters);

// Typed access after check_arguments: the member or the fallback.
std::string string_arg(const engine::Json &arguments, const char *name, const std::string &fallback = "");
int64_t integer_arg(const engine::Json &arguments, const char *name, int64_t fallback = 0);
bool boolean_arg(const engine::Json &arguments, const char *name, bool fallback = false);

} // namespace pve_sim
