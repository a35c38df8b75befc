// A VMA archive the reader rejects: what is wrong and where.
#pragma once

#include "util/error.h"

#include <cstdint>
#include <string>

namespace engine::vma {

// what() is "<reason> (archive offset <offset>)"; reason() is the bare text,
// worded as Proxmox's vma words it where it has a message for the case.
class FormatError : public Error {
public:
    FormatError(std::uint64_t offset, const std::string &reason)
        : Error(reason + " (archive offset " + std::to_string(offset) + ")"), offset_(offset),
          reason_(reason)
    {
    }
    std::uint64_t offset() const { return offset_; }
    const std::string &reason() const { return reason_; }

private:
    std::uint64_t offset_;
    std::string reason_;
};

} // namespace engine::vma
