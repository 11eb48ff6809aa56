// .npy header parsing (the CLI reads --mask-input from user files).
#include <cstddef>
#include <cstdint>

#include "error.h"
#include "io/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    rsam::io::load_npy_bytes(data, size);
  } catch (const rsam::Error&) {
  }
  return 0;
}
