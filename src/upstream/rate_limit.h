// vzdump's bwlimit for the engine's own copy: an average byte rate since the
// copy started, kept by waiting before the next read. Waits are cut into
// short steps so a pending signal or the caller's deadline is noticed.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>

namespace engine::upstream {

class RateLimit {
public:
    using Clock = std::chrono::steady_clock;

    // bytes_per_second 0 means no limit.
    explicit RateLimit(std::uint64_t bytes_per_second) : rate_(bytes_per_second) {}

    // Records bytes as transferred.
    void account(std::uint64_t bytes) { bytes_ += bytes; }

    // Waits until the average is back at the rate, or until `deadline`, or
    // until interrupted() is true. Returns true when more may be read now.
    bool wait(Clock::time_point deadline, const std::function<bool()> &interrupted);

private:
    std::uint64_t rate_;
    std::uint64_t bytes_ = 0;
    Clock::time_point start_ = Clock::now();
};

} // namespace engine::upstream
