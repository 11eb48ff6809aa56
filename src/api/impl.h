// What the public API's opaque handles hold, shared by src/api's files (the
// predictor, the automatic mask generator, the bindings' helpers).
#pragma once

// The library's own rsam::Error first; the public header then skips its
// identical copy (include/rsam/rsam.h).
#include "error.h"
#define RSAM_ERROR_DEFINED
#include "rsam/rsam.h"

#include <c10/util/Exception.h>

#include <new>
#include <optional>
#include <string>

#include "model/checkpoint.h"
#include "model/predictor.h"
#include "segment/stack.h"

namespace rsam {

struct Model::Impl {
  segment::Stack stack;  // the model, its adapter and enhancer, as `rsam segment` assembles them
  std::string checkpoint, adapter_path, device;
  Precision precision = Precision::FP32;
  std::string enhancer_path;

  // A predictor over the model as it is now, the enhancer attached.
  SamPredictor predictor() const { return stack.predictor(precision); }
};

namespace api {

// First line of a message: torch's carry a C++ backtrace after it.
inline std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

// Runs f, turning whatever the internals throw (torch's c10::Error, an
// allocation failure) into rsam::Error with a one-line message, so a caller
// of the public API has one exception type to catch.
template <class F>
auto guarded(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error&) {
    throw;
  } catch (const c10::Error& e) {
    throw Error(first_line(e.what_without_backtrace()));
  } catch (const std::bad_alloc&) {
    throw Error("out of memory");
  } catch (const std::exception& e) {
    throw Error(first_line(e.what()));
  }
}

}  // namespace api
}  // namespace rsam
