// Human-readable byte counts and durations, exactly as PVE::Format renders
// them, so the status loop's log lines read as vzdump's always did.
#pragma once

#include <string>

namespace engine {

// PVE::Format::render_bytes($value, $precision): the largest binary unit
// (B, KiB, ... PiB) whose integer exponent fits, printed with C printf
// rounding; precision 0 means the default of 2. Values of 1024^6 and more
// get an empty unit, as Perl indexes past the end of its unit list.
std::string render_bytes(double value, int precision = 2);

// PVE::Format::render_duration($seconds, $auto_limit): seconds rounded half
// away from zero, then "<n>w <n>d <n>h <n>m <n>s" without zero components.
// 0 renders as "0s", a negative duration as "". With auto_limit, minutes are
// dropped once there are weeks and seconds once there are days or weeks.
std::string render_duration(double seconds, bool auto_limit = false);

} // namespace engine
