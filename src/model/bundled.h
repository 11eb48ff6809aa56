// Where the bundled models (rsam-tiny and its GaRA adapter) are found, one
// lookup for the CLI, the C++ API and the Python bindings.
#pragma once

#include <string>
#include <utility>

namespace rsam {

// A file of the bundled models: $RSAM_MODELS, then share/rsam/models beside
// the installed binary, then models/ in the source tree rsam was built from.
// Its path, or "" if absent.
std::string bundled_model(const std::string& file);

// The checkpoint and adapter to run: the given ones, or without a checkpoint
// the bundled rsam-tiny with its GaRA adapter (unless no_adapter).
// rsam::Error if nothing is given and the bundle is missing.
std::pair<std::string, std::string> resolve_model(const std::string& checkpoint, const std::string& adapter,
                                                  bool no_adapter);

// The GleSAM enhancer trained on the bundled rsam-tiny (an E.json), or "" if
// absent. It belongs to the bundled base only.
std::string bundled_enhancer();

}  // namespace rsam
