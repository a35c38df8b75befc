#include "backup/render.h"

#include "catch2_compat.h"

#include <cmath>

using engine::render_bytes;
using engine::render_duration;

TEST_CASE("render_bytes picks the unit and the default precision of PVE::Format")
{
    CHECK(render_bytes(0) == "0.00 B");
    CHECK(render_bytes(1) == "1.00 B");
    CHECK(render_bytes(1023) == "1023.00 B");
    CHECK(render_bytes(1024) == "1.00 KiB");
    CHECK(render_bytes(1536) == "1.50 KiB");
    CHECK(render_bytes(10.0 * (1 << 30) + 1) == "10.00 GiB");
    CHECK(render_bytes(4.0 * (1ULL << 40) + 16.0 * (1 << 30)) == "4.02 TiB");
    CHECK(render_bytes(1536, 0) == "1.50 KiB");
}

TEST_CASE("render_bytes honours the precision and C printf rounding")
{
    CHECK(render_bytes(512, 1) == "512.0 B");
    CHECK(render_bytes(1023, 4) == "1023.0000 B");
    CHECK(render_bytes(1536, 1) == "1.5 KiB");
    CHECK(render_bytes(1280, 1) == "1.2 KiB"); // 1.25: ties to even
    CHECK(render_bytes(123.0 * (1 << 20) + 300 * 1024, 1) == "123.3 MiB");
    CHECK(render_bytes(1 << 30, 1) == "1.0 GiB");
    CHECK(render_bytes(1048575, 1) == "1024.0 KiB"); // no clamping to the next unit
}

TEST_CASE("render_bytes past PiB has an empty unit, as Perl indexes past its list")
{
    CHECK(render_bytes(std::ldexp(1.0, 50)) == "1.00 PiB");
    CHECK(render_bytes(std::ldexp(1.0, 63)) == "8.00 ");
}

TEST_CASE("render_duration drops zero components")
{
    CHECK(render_duration(0) == "0s");
    CHECK(render_duration(3) == "3s");
    CHECK(render_duration(59) == "59s");
    CHECK(render_duration(60) == "1m");
    CHECK(render_duration(61) == "1m 1s");
    CHECK(render_duration(110) == "1m 50s");
    CHECK(render_duration(3599) == "59m 59s");
    CHECK(render_duration(3600) == "1h");
    CHECK(render_duration(3605) == "1h 5s");
    CHECK(render_duration(86399) == "23h 59m 59s");
    CHECK(render_duration(90061) == "1d 1h 1m 1s");
    CHECK(render_duration(3 * 86400 + 3600) == "3d 1h");
    CHECK(render_duration(1286544) == "2w 21h 22m 24s");
}

TEST_CASE("render_duration rounds half away from zero")
{
    CHECK(render_duration(0.4) == "0s");
    CHECK(render_duration(0.5) == "1s");
    CHECK(render_duration(2.5) == "3s");
    CHECK(render_duration(59.6) == "1m");
    CHECK(render_duration(-0.4) == "0s");
    CHECK(render_duration(-5).empty());
}

TEST_CASE("render_duration with auto_limit drops minutes after weeks, seconds after days")
{
    CHECK(render_duration(1286544, true) == "2w 21h");
    CHECK(render_duration(90061, true) == "1d 1h 1m");
    CHECK(render_duration(3605, true) == "1h 5s");
}
