// The PNG/JPEG completeness check and the header size reader run on every
// user image before decoding.
#include <cstddef>
#include <cstdint>

#include "io/image_bytes.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  rsam::io::image_bytes_problem(data, size);
  rsam::io::image_header(data, size);
  return 0;
}
