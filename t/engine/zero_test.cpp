// engine::is_zero: both length classes (the memcmp form and the short loop)
// must find a single set bit anywhere, and accept all zeros.
#include "util/zero.h"

#include "catch2_compat.h"

#include <cstdint>
#include <vector>

TEST_CASE("is_zero finds one set bit at any position of any length", "[vma]")
{
    // offset 1 makes the buffer unaligned for the vector loads
    for (std::size_t offset : {0, 1}) {
        for (std::size_t len : {0, 1, 15, 16, 17, 100, 127, 128, 129, 256, 1000, 4095, 4096, 8192}) {
            std::vector<std::uint8_t> buf(len + offset + 1, 0);
            std::uint8_t *p = buf.data() + offset;
            INFO("len " << len << " offset " << offset);
            CHECK(engine::is_zero(p, len));
            buf.back() = 0xff; // a byte just past the range does not count
            CHECK(engine::is_zero(p, len));
            bool all_found = true;
            for (std::size_t at = 0; at < len; at++) {
                for (std::uint8_t bit : {std::uint8_t(1), std::uint8_t(0x80)}) {
                    p[at] = bit;
                    all_found = all_found && !engine::is_zero(p, len);
                    p[at] = 0;
                }
            }
            CHECK(all_found);
        }
    }
}
