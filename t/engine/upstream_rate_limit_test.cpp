// vzdump's bwlimit for the engine's own copy: an average rate since the copy
// started, kept by waiting; deadlines and interruptions cut the wait short.
#include "upstream/rate_limit.h"

#include "catch2_compat.h"

#include <chrono>

using engine::upstream::RateLimit;
using namespace std::chrono_literals;

TEST_CASE("rate limit: no limit never waits", "[upstream]")
{
    RateLimit limit(0);
    limit.account(1ull << 40);
    CHECK(limit.wait(RateLimit::Clock::now() - 1s, nullptr));
}

TEST_CASE("rate limit: bytes within the rate may go at once", "[upstream]")
{
    RateLimit limit(1 << 20);
    CHECK(limit.wait(RateLimit::Clock::now() - 1s, nullptr));
    limit.account(0);
    CHECK(limit.wait(RateLimit::Clock::now() - 1s, nullptr));
}

TEST_CASE("rate limit: waits until the average is back at the rate", "[upstream]")
{
    const auto start = RateLimit::Clock::now();
    RateLimit limit(1 << 20);
    limit.account(100 << 10); // due about 98 ms after the start

    // a deadline before the bytes are due: no, not yet
    CHECK_FALSE(limit.wait(RateLimit::Clock::now(), nullptr));
    // a generous deadline: yes, but never before they are due
    CHECK(limit.wait(RateLimit::Clock::now() + 60s, nullptr));
    CHECK(RateLimit::Clock::now() - start >= 97ms);
}

TEST_CASE("rate limit: an interruption ends the wait", "[upstream]")
{
    RateLimit limit(1024);
    limit.account(1 << 30); // due in twelve days
    int asked = 0;
    CHECK_FALSE(limit.wait(RateLimit::Clock::now() + 60s, [&] { return ++asked == 3; }));
    CHECK(asked == 3);
}
