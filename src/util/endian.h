// Big-endian integer loads and stores on byte buffers (no alignment needed).
#pragma once

#include <cstdint>

namespace engine {

inline std::uint16_t load_be16(const std::uint8_t *p)
{
    return static_cast<std::uint16_t>(p[0] << 8 | p[1]);
}

inline std::uint32_t load_be32(const std::uint8_t *p)
{
    return std::uint32_t(p[0]) << 24 | std::uint32_t(p[1]) << 16 | std::uint32_t(p[2]) << 8 | p[3];
}

inline std::uint64_t load_be64(const std::uint8_t *p)
{
    return std::uint64_t(load_be32(p)) << 32 | load_be32(p + 4);
}

inline void store_be16(std::uint8_t *p, std::uint16_t v)
{
    p[0] = static_cast<std::uint8_t>(v >> 8);
    p[1] = static_cast<std::uint8_t>(v);
}

inline void store_be32(std::uint8_t *p, std::uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = static_cast<std::uint8_t>(v);
}

inline void store_be64(std::uint8_t *p, std::uint64_t v)
{
    store_be32(p, static_cast<std::uint32_t>(v >> 32));
    store_be32(p + 4, static_cast<std::uint32_t>(v));
}

} // namespace engine
