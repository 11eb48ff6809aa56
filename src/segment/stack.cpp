#include "segment/stack.h"

#include "error.h"
#include "model/checkpoint.h"

namespace rsam::segment {

void Stack::add_adapter(const std::string& path) {
  if (enhancer) throw Error("load the adapter before the enhancer (its decoder replaces the model's)");
  if (adapted) throw Error("the model already has an adapter");
  adapted.emplace(adapt::AdaptedSam::load(base, path));
  sam = adapted->model();
}

void Stack::add_enhancer(const std::string& json_path) {
  if (enhancer) throw Error("the model already has an enhancer");
  // After the adapter: the adapter's fingerprint names the base decoder.
  enhancer = glesam::load_for(sam, json_path);
}

SamPredictor Stack::predictor(Precision precision, bool flip) const {
  SamPredictor p(sam, precision, flip);
  if (enhancer) glesam::attach(p, enhancer);
  return p;
}

void Stack::set_embedding(SamPredictor& pred, const SamPredictor& encoder) const {
  auto z = encoder.embedding();
  if (enhancer) z = enhancer->enhance(z, pred.precision() == Precision::BF16);
  pred.set_embedding(z, encoder.original_size());
}

nlohmann::json Stack::describe() const {
  nlohmann::json j{{"model", base->config.type_name()}};
  if (adapted) j["adapter"] = adapted->method();
  if (enhancer) j["enhancer"] = {{"method", "glesam"}, {"gamma", enhancer->gamma()}, {"timestep", enhancer->timestep()}};
  return j;
}

Stack load_stack(const std::string& checkpoint, const std::string& adapter, const std::string& enhancer,
                 const torch::Device& device) {
  Stack s(load_sam(checkpoint, device).model);
  if (!adapter.empty()) s.add_adapter(adapter);
  if (!enhancer.empty()) s.add_enhancer(enhancer);
  return s;
}

}  // namespace rsam::segment
