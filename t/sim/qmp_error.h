// A QMP error reply: {"error": {"class": <error_class>, "desc": <what()>}}.
#pragma once

#include <stdexcept>
#include <string>

namespace pve_sim {

class QmpError : public std::runtime_error {
  public:
    explicit QmpError(const std::string &desc, std::string error_class = "GenericError")
        : std::runtime_error(desc), class_(std::move(error_class))
    {
    }
    const std::string &error_class() const { return class_; }

  private:
    std::string class_;
};

} // namespace pve_sim
