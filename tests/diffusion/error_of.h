// error_of for the diffusion tests, torch-free (test_diffusion_config
// builds without LibTorch).
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "error.h"

namespace rsam::diffusion::testing {

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

}  // namespace rsam::diffusion::testing
