#include "backup/render.h"

#include <cmath>
#include <cstdio>
#include <iterator>

namespace engine {

std::string render_bytes(double value, int precision)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};

    if (precision == 0)
        precision = 2;

    // the same libm calls as Perl's log() and int(), so the exponent agrees
    // with PVE::Format even where log() is inexact near a power of 1024
    int exponent = 0;
    if (value > 1023) {
        exponent = static_cast<int>(std::log(value) / std::log(1024.0));
        value /= std::pow(1024.0, exponent);
    }
    const char *unit = exponent < static_cast<int>(std::size(units)) ? units[exponent] : "";

    int length = std::snprintf(nullptr, 0, "%.*f %s", precision, value, unit);
    std::string text(length, '\0');
    std::snprintf(text.data(), length + 1, "%.*f %s", precision, value, unit);
    return text;
}

std::string render_duration(double seconds, bool auto_limit)
{
    double rest = std::round(seconds);
    if (rest == 0 || std::isnan(rest))
        return "0s";

    std::string text;
    auto step = [&](const char *unit, double length) {
        double count = std::trunc(rest / length);
        if (!(count > 0))
            return false;
        char buf[400];
        std::snprintf(buf, sizeof(buf), "%s%.0f%s", text.empty() ? "" : " ", count, unit);
        text += buf;
        rest -= count * length;
        return true;
    };

    bool weeks = step("w", 7 * 24 * 3600);
    bool days = step("d", 24 * 3600) || weeks;
    step("h", 3600);
    if (!auto_limit || !weeks)
        step("m", 60);
    if (!auto_limit || !days)
        step("s", 1);
    return text;
}

} // namespace engine
