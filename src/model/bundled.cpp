#include "model/bundled.h"

#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <vector>

#include "error.h"

namespace rsam {

std::string bundled_model(const std::string& file) {
  std::vector<std::string> dirs;
  if (const char* env = std::getenv("RSAM_MODELS")) dirs.emplace_back(env);
  // Installed layout (bin/rsam beside share/rsam/models), then the source
  // tree this binary was built from.
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) dirs.push_back((exe.parent_path().parent_path() / "share" / "rsam" / "models").string());
  // Through the installed library (a C++ program or the Python module using
  // librsam): share/rsam/models beside its lib/ or lib/<multiarch>/ folder.
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&bundled_model), &info) != 0 && info.dli_fname) {
    // Canonical: the loader's name for it may hold "..".
    const auto lib = std::filesystem::canonical(info.dli_fname, ec).parent_path();
    if (!ec)
      for (const auto& up : {lib.parent_path(), lib.parent_path().parent_path()})
        dirs.push_back((up / "share" / "rsam" / "models").string());
  }
  dirs.emplace_back(RSAM_SOURCE_DIR "/models");
  for (const auto& d : dirs) {
    const auto p = std::filesystem::path(d) / file;
    if (std::filesystem::exists(p)) return p.string();
  }
  return {};
}

std::pair<std::string, std::string> resolve_model(const std::string& checkpoint, const std::string& adapter,
                                                  bool no_adapter) {
  if (!checkpoint.empty()) return {checkpoint, no_adapter ? "" : adapter};
  const std::string base = bundled_model("rsam-tiny.safetensors");
  if (base.empty())
    throw Error("no checkpoint given and the bundled rsam-tiny.safetensors was not found (set RSAM_MODELS)");
  std::string ad = adapter;
  // The bundled adapter belongs to the bundled base only.
  if (ad.empty() && !no_adapter) ad = bundled_model("rsam-tiny-gara.safetensors");
  return {base, no_adapter ? "" : ad};
}

std::string bundled_enhancer() { return bundled_model("rsam-tiny-glesam.json"); }

}  // namespace rsam
