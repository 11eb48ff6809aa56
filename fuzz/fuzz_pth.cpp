// torch.save checkpoints (zip and legacy) are the most attacker-reachable
// input: users download them. Any outcome but a value or rsam::Error is a bug.
#include <cstddef>
#include <cstdint>

#include "error.h"
#include "io/tensor_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    rsam::io::load_pth_bytes(data, size);
  } catch (const rsam::Error&) {
  }
  return 0;
}
