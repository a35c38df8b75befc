// Fast all-zero test for data buffers (VMA omits zero 4 KiB blocks).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace engine {

// True when all len bytes at p are zero. Compares the buffer with itself
// shifted by 16 bytes, which lets glibc's vectorised memcmp do the work.
inline bool is_zero(const void *p, std::size_t len)
{
    const auto *b = static_cast<const std::uint8_t *>(p);
    if (len <= 16) {
        for (std::size_t i = 0; i < len; i++)
            if (b[i])
                return false;
        return true;
    }
    static constexpr std::uint8_t zeros[16] = {};
    return std::memcmp(b, zeros, 16) == 0 && std::memcmp(b, b + 16, len - 16) == 0;
}

} // namespace engine
