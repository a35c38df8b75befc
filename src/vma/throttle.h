// A byte-rate limit for restore writes (the -r map's throttling.bps), shared
// by the devices of one throttling.group.
#pragma once

#include <chrono>
#include <cstdint>

namespace engine::vma {

class Throttle {
public:
    // bytes_per_second 0 means unlimited (until set).
    explicit Throttle(std::uint64_t bytes_per_second = 0) : rate_(bytes_per_second) {}
    void set_rate(std::uint64_t bytes_per_second) { rate_ = bytes_per_second; }
    std::uint64_t rate() const { return rate_; }

    // Accounts bytes about to be written; sleeps as long as needed to keep
    // the average at the rate.
    void consume(std::uint64_t bytes);

private:
    std::uint64_t rate_;
    std::chrono::steady_clock::time_point next_free_{};
};

} // namespace engine::vma
