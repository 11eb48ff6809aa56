// safetensors header and offset validation.
#include <cstddef>
#include <cstdint>

#include "error.h"
#include "io/tensor_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    rsam::io::load_safetensors_bytes(data, size);
  } catch (const rsam::Error&) {
  }
  return 0;
}
