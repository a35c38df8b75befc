#include "upstream/rate_limit.h"

#include <algorithm>
#include <thread>

namespace engine::upstream {

bool RateLimit::wait(Clock::time_point deadline, const std::function<bool()> &interrupted)
{
    if (!rate_)
        return true;
    const auto due = start_ + std::chrono::duration_cast<Clock::duration>(
                                  std::chrono::duration<double>(static_cast<double>(bytes_) / static_cast<double>(rate_)));
    for (;;) {
        auto now = Clock::now();
        if (now >= due)
            return true;
        if (now >= deadline || (interrupted && interrupted()))
            return false;
        std::this_thread::sleep_until(std::min({due, deadline, now + std::chrono::milliseconds(100)}));
    }
}

} // namespace engine::upstream
