// MD5 digests through OpenSSL EVP (VMA checksums its header and extent
// headers with MD5).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace engine {

using Md5Digest = std::array<std::uint8_t, 16>;

// The MD5 of len bytes at data. Throws Error if OpenSSL fails.
Md5Digest md5(const void *data, std::size_t len);

} // namespace engine
