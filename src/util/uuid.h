// 16-byte UUIDs through libuuid.
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace engine {

using Uuid = std::array<std::uint8_t, 16>;

// A new random (version 4) UUID.
Uuid generate_uuid();

// The lowercase text form, e.g. "0f2c...-...".
std::string uuid_to_string(const Uuid &uuid);

} // namespace engine
