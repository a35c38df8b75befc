#include "vma/throttle.h"

#include <thread>

namespace engine::vma {

void Throttle::consume(std::uint64_t bytes)
{
    if (!rate_)
        return;
    auto now = std::chrono::steady_clock::now();
    if (next_free_ < now)
        next_free_ = now;
    else
        std::this_thread::sleep_until(next_free_);
    next_free_ += std::chrono::nanoseconds(
        static_cast<std::int64_t>(static_cast<long double>(bytes) * 1e9L / rate_));
}

} // namespace engine::vma
