// The PNG/JPEG completeness check runs on every user image before decoding.
#include <cstddef>
#include <cstdint>

#include "io/image_bytes.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  rsam::io::image_bytes_problem(data, size);
  return 0;
}
