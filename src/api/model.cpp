// rsam::Model and rsam::version: loading a checkpoint (or the bundled
// rsam-tiny) and its adapter behind the public header.
#include "api/impl.h"
#include "model/bundled.h"

namespace rsam {

std::string version() { return RSAM_VERSION_STRING; }

namespace {

torch::Device parse_device(const std::string& device) {
  try {
    return torch::Device(device);
  } catch (const c10::Error&) {
    throw Error("unknown device '" + device + "' (expected cpu, cuda or cuda:N)");
  }
}

LoadedSam load_checkpoint(const std::string& path, const std::string& device) {
  return load_sam(path, parse_device(device));
}

}  // namespace

Model Model::load(const std::string& checkpoint) {
  ModelOptions o;
  o.checkpoint = checkpoint;
  return load(o);
}

Model Model::load(const ModelOptions& o) {
  return api::guarded([&] {
    if (o.no_adapter && !o.adapter.empty()) throw Error("give an adapter or no_adapter, not both");
    auto impl = std::make_shared<Impl>();
    // "auto" as the CLI's: bf16 only for the bundled model on a CPU with native bf16.
    impl->precision = resolve_precision(o.precision, o.checkpoint.empty());
    const auto [checkpoint, adapter] = resolve_model(o.checkpoint, o.adapter, o.no_adapter);
    impl->checkpoint = checkpoint;
    impl->device = o.device;
    impl->stack = segment::Stack(load_checkpoint(checkpoint, o.device).model);
    Model m(impl);
    if (!adapter.empty()) m.load_adapter(adapter);
    if (!o.enhancer.empty()) m.load_enhancer(o.enhancer);
    return m;
  });
}

void Model::load_adapter(const std::string& path) {
  api::guarded([&] {
    if (impl_->stack.adapted) throw Error("model already has an adapter ('" + impl_->adapter_path + "')");
    if (impl_->stack.enhancer) throw Error("load the adapter before the enhancer (its decoder replaces the model's)");
    // Attached to a fresh copy of the base: a file that turns out to belong
    // to another base must leave this model as it was.
    segment::Stack fresh(load_checkpoint(impl_->checkpoint, impl_->device).model);
    fresh.add_adapter(path);
    fresh.sam->eval();
    impl_->stack = std::move(fresh);
    impl_->adapter_path = path;
  });
}

void Model::load_enhancer(const std::string& json_path) {
  api::guarded([&] {
    if (impl_->stack.enhancer) throw Error("model already has an enhancer ('" + impl_->enhancer_path + "')");
    impl_->stack.add_enhancer(json_path);
    impl_->enhancer_path = json_path;
  });
}

void Model::to(const std::string& device) {
  api::guarded([&] {
    if (impl_->stack.enhancer)
      throw Error("move the model before loading the enhancer (it is made on the model's device)");
    impl_->stack.sam->to(parse_device(device));
    impl_->device = device;
  });
}

std::string Model::type() const { return impl_->stack.sam->config.type_name(); }
int Model::image_size() const { return int(impl_->stack.sam->config.img_size); }
std::string Model::adapter() const { return impl_->stack.adapted ? impl_->stack.adapted->method() : ""; }
std::string Model::enhancer() const { return impl_->enhancer_path; }
std::string Model::checkpoint() const { return impl_->checkpoint; }
std::string Model::device() const { return impl_->stack.sam->device().str(); }
std::string Model::precision() const { return precision_name(impl_->precision); }

}  // namespace rsam
