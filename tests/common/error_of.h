// error_of for tests of any subsystem, torch-free (test_diffusion_config
// builds without LibTorch).
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "error.h"

namespace rsam::testing {

// The message of the rsam::Error `f` throws (a test failure if it throws
// none, or a message of more than one line).
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    return m;
  }
  ADD_FAILURE() << "expected rsam::Error";
  return "";
}

}  // namespace rsam::testing

namespace rsam::diffusion::testing {
using rsam::testing::error_of;
}  // namespace rsam::diffusion::testing
