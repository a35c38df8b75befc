// Catch2 as the Debian release ships it: v2 (Debian 12) is one header, v3
// (Debian 13) a set of headers and a library. Every test includes this file
// instead of a Catch2 header, so the suite builds against either; engine.mk
// defines ENGINE_CATCH2_MAJOR from pkg-config and links v3's library.
#pragma once

#if !defined(ENGINE_CATCH2_MAJOR)
#error "ENGINE_CATCH2_MAJOR is not defined: build the tests through engine.mk"
#elif ENGINE_CATCH2_MAJOR >= 3

#include <catch2/catch_all.hpp>

#include <string>

// v2 brought its string matchers into namespace Catch, and the tests spell
// them that way; v3 keeps them in Catch::Matchers and renamed Contains.
namespace Catch {
inline Matchers::StringContainsMatcher Contains(const std::string& text,
                                                CaseSensitive sensitivity = CaseSensitive::Yes) {
    return Matchers::ContainsSubstring(text, sensitivity);
}
using Matchers::StartsWith;
} // namespace Catch

#else
#include <catch2/catch.hpp>
#endif
