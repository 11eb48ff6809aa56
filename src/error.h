// rsam's single exception type. Every user-facing failure (bad file, bad
// prompt, bad shape) is thrown as rsam::Error with a one-line message; the CLI
// prints it and exits non-zero, so nothing reaches the user as a crash.
#pragma once

#include <stdexcept>
#include <string>

namespace rsam {

struct Error : std::runtime_error {
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace rsam
