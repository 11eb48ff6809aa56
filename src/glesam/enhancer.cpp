#include "glesam/enhancer.h"

#include <cmath>
#include <filesystem>

#include "diffusion/lora.h"
#include "diffusion/schedule.h"
#include "diffusion/sd.h"
#include "error.h"
#include "io/npy.h"
#include "log.h"
#include "model/autocast.h"
#include "model/checkpoint.h"

namespace rsam::glesam {

namespace fs = std::filesystem;
using nlohmann::json;
using torch::Tensor;

namespace {

const std::vector<std::string> kKeys = {"method", "sd",  "lora",   "decoder", "text_embedding",
                                        "gamma",  "timestep", "cre", "in_out", "prompt"};
// A prompt far beyond CLIP's 77 tokens is a mistake, not a condition.
constexpr size_t kMaxPromptBytes = 4096;

std::string allowed_keys() {
  std::string s;
  for (const auto& k : kKeys) s += (s.empty() ? "" : ", ") + k;
  return s;
}

std::string resolve(const std::string& base_dir, const std::string& p) {
  if (p.empty() || fs::path(p).is_absolute() || base_dir.empty()) return p;
  return (fs::path(base_dir) / p).lexically_normal().string();
}

std::string path_value(const json& j, const char* key, const std::string& origin) {
  if (!j.contains(key) || j[key].is_null()) return "";
  if (!j[key].is_string() || j[key].get<std::string>().empty())
    throw Error(origin + ": \"" + key + "\" must be a non-empty path string");
  return j[key].get<std::string>();
}

// A copy of `conv` with its weight (and bias) tiled `rep` times along `dim`.
diffusion::Conv2d tiled(const diffusion::Conv2d& conv, int64_t rep, int dim) {
  const int64_t in = dim == 1 ? conv->in_channels * rep : conv->in_channels;
  const int64_t out = dim == 0 ? conv->out_channels * rep : conv->out_channels;
  diffusion::Conv2d wide(in, out, conv->kernel, conv->stride, conv->padding, conv->bias.defined());
  torch::NoGradGuard ng;
  std::vector<int64_t> reps(4, 1);
  reps[size_t(dim)] = rep;
  wide->weight.set_data(conv->weight.detach().repeat(reps).contiguous());
  if (conv->bias.defined())
    wide->bias.set_data(dim == 0 ? conv->bias.detach().repeat({rep}) : conv->bias.detach().clone());
  wide->weight.set_requires_grad(false);
  if (wide->bias.defined()) wide->bias.set_requires_grad(false);
  return wide;
}

Tensor read_text_embedding(const std::string& path, const torch::Device& device) {
  auto arr = io::load_npy(path);
  auto t = torch::from_blob(arr.data.data(), arr.shape, torch::kFloat32).clone();
  if (t.dim() == 2) t = t.unsqueeze(0);
  if (t.dim() != 3 || t.size(0) != 1 || t.size(1) < 1 || t.size(2) < 1)
    throw Error(path + ": a text embedding must be [1, S, D] or [S, D], got " + std::to_string(arr.shape.size()) +
                " dimensions");
  if (!torch::isfinite(t).all().item<bool>()) throw Error(path + ": the text embedding holds NaN or infinity");
  return t.to(device);
}

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

void check_four_channels(const diffusion::UNet2DConditionModel& unet, int64_t channels, const char* what) {
  const auto& c = unet->config;
  if (c.in_channels != 4 || c.out_channels != 4)
    throw Error(std::string(what) + " widens a 4-channel U-Net; this one has " + std::to_string(c.in_channels) +
                " input and " + std::to_string(c.out_channels) + " output channels");
  if (channels < 4 || channels % 4 != 0)
    throw Error(std::string(what) + ": the embedding width " + std::to_string(channels) +
                " is not a positive multiple of 4");
  if (unet->conv_in->has_lora() || unet->conv_out->has_lora())
    throw Error(std::string(what) + " must come before LoRA is attached to conv_in / conv_out");
}

// A conv of the same geometry as `like` with `in` / `out` channels,
// initialised as torch.nn.Conv2d's reset_parameters does.
diffusion::Conv2d fresh_conv(const diffusion::Conv2d& like, int64_t in, int64_t out) {
  diffusion::Conv2d c(in, out, like->kernel, like->stride, like->padding, like->bias.defined());
  torch::NoGradGuard ng;
  torch::nn::init::kaiming_uniform_(c->weight, std::sqrt(5.0));
  if (c->bias.defined()) {
    const double bound = 1.0 / std::sqrt(double(in * like->kernel * like->kernel));
    c->bias.uniform_(-bound, bound);
  }
  c->to(like->weight.device());
  return c;
}

}  // namespace

// ---- CRE -------------------------------------------------------------------

void cre_widen(diffusion::UNet2DConditionModel& unet, int64_t channels) {
  auto& c = unet->config;
  check_four_channels(unet, channels, "CRE");
  const int64_t rep = channels / 4;
  unet->conv_in = unet->replace_module("conv_in", tiled(unet->conv_in, rep, 1));
  unet->conv_out = unet->replace_module("conv_out", tiled(unet->conv_out, rep, 0));
  c.in_channels = c.out_channels = channels;
}

void fresh_in_out(diffusion::UNet2DConditionModel& unet, int64_t channels) {
  check_four_channels(unet, channels, "the fresh in/out convolutions (cre false)");
  auto& c = unet->config;
  unet->conv_in = unet->replace_module("conv_in", fresh_conv(unet->conv_in, channels, unet->conv_in->out_channels));
  unet->conv_out =
      unet->replace_module("conv_out", fresh_conv(unet->conv_out, unet->conv_out->in_channels, channels));
  c.in_channels = c.out_channels = channels;
}

io::StateDict in_out_tensors(diffusion::UNet2DConditionModel& unet) {
  io::StateDict sd;
  for (auto* name : {"conv_in", "conv_out"}) {
    const auto& conv = std::string(name) == "conv_in" ? unet->conv_in : unet->conv_out;
    sd.emplace_back(std::string(name) + ".weight", from_torch(conv->weight.detach()));
    if (conv->bias.defined()) sd.emplace_back(std::string(name) + ".bias", from_torch(conv->bias.detach()));
  }
  return sd;
}

// ---- the JSON file ---------------------------------------------------------

EnhancerConfig EnhancerConfig::parse(const json& j, const std::string& base_dir, const std::string& origin) {
  if (!j.is_object()) throw Error(origin + ": an enhancer must be a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it)
    if (std::find(kKeys.begin(), kKeys.end(), it.key()) == kKeys.end())
      throw Error(origin + ": unknown key \"" + it.key() + "\" (allowed: " + allowed_keys() + ")");
  if (!j.contains("method") || !j["method"].is_string() || j["method"].get<std::string>() != "glesam")
    throw Error(origin + ": \"method\" must be \"glesam\"");
  EnhancerConfig c;
  c.origin = origin;
  c.sd = resolve(base_dir, path_value(j, "sd", origin));
  if (c.sd.empty()) throw Error(origin + ": \"sd\" (the Stable Diffusion folder) is required");
  c.lora = resolve(base_dir, path_value(j, "lora", origin));
  c.decoder = resolve(base_dir, path_value(j, "decoder", origin));
  c.text_embedding = resolve(base_dir, path_value(j, "text_embedding", origin));
  if (j.contains("prompt")) {
    if (!j["prompt"].is_string()) throw Error(origin + ": \"prompt\" must be a string");
    c.prompt = j["prompt"].get<std::string>();
    if (c.prompt.size() > kMaxPromptBytes) throw Error(origin + ": \"prompt\" is too long");
    if (!c.prompt.empty() && !c.text_embedding.empty())
      throw Error(origin + ": give \"prompt\" or \"text_embedding\", not both");
  }
  if (j.contains("gamma")) {
    if (!j["gamma"].is_number()) throw Error(origin + ": \"gamma\" must be a number");
    c.gamma = j["gamma"].get<double>();
    if (!std::isfinite(c.gamma) || c.gamma <= 0 || c.gamma > 1e6)
      throw Error(origin + ": \"gamma\" must be finite and > 0");
  }
  if (j.contains("timestep")) {
    if (!j["timestep"].is_number_integer()) throw Error(origin + ": \"timestep\" must be an integer");
    c.timestep = j["timestep"].get<int64_t>();
    if (c.timestep < 0) throw Error(origin + ": \"timestep\" must be >= 0");
  }
  if (j.contains("cre")) {
    if (!j["cre"].is_boolean()) throw Error(origin + ": \"cre\" must be true or false");
    c.cre = j["cre"].get<bool>();
  }
  c.in_out = resolve(base_dir, path_value(j, "in_out", origin));
  if (c.cre && !c.in_out.empty())
    throw Error(origin + ": \"in_out\" (trained in/out convolutions) needs \"cre\": false");
  return c;
}

EnhancerConfig EnhancerConfig::from_file(const std::string& path) {
  const std::string text = diffusion::read_text_file(path);
  const json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) throw Error(path + ": not valid JSON");
  return parse(j, fs::path(path).parent_path().string(), path);
}

json EnhancerConfig::to_json(const std::string& dir) const {
  // Inside `dir`: relative (the folder can move); elsewhere absolute, since
  // the file is read relative to its own folder, not the current one.
  auto rel = [&](const std::string& p) {
    if (dir.empty() || p.empty()) return p;
    const auto abs = fs::absolute(p).lexically_normal();
    const auto r = abs.lexically_relative(fs::absolute(dir).lexically_normal());
    return r.empty() || starts_with(r.string(), "..") ? abs.string() : r.string();
  };
  json j{{"method", "glesam"}, {"sd", rel(sd)}};
  if (!lora.empty()) j["lora"] = rel(lora);
  if (!decoder.empty()) j["decoder"] = rel(decoder);
  if (!text_embedding.empty()) j["text_embedding"] = rel(text_embedding);
  if (!prompt.empty()) j["prompt"] = prompt;
  j["gamma"] = gamma;
  j["timestep"] = timestep;
  if (!cre) j["cre"] = false;
  if (!in_out.empty()) j["in_out"] = rel(in_out);
  return j;
}

bool is_enhancer_path(const std::string& path) {
  const auto ext = fs::path(path).extension().string();
  return ext == ".json" || ext == ".JSON";
}

// ---- decoder files -----------------------------------------------------------

io::StateDict read_decoder(const std::string& path) {
  if (!fs::is_regular_file(path)) throw Error(path + ": no such decoder file");
  io::StateDict all = io::load_any(path);
  const std::string pre = "mask_decoder.";
  io::StateDict prefixed, bare;
  for (auto& [k, v] : all) {
    if (starts_with(k, pre))
      prefixed.emplace_back(k.substr(pre.size()), std::move(v));
    else
      bare.emplace_back(k, std::move(v));
  }
  // A whole SAM state dict (or a prefixed decoder): the mask_decoder. part;
  // the rest (encoder, prompt encoder) is SAM's own and not replaced.
  if (!prefixed.empty()) return prefixed;
  if (bare.empty()) throw Error(path + ": holds no tensors");
  return bare;
}

void load_decoder(Sam& model, const io::StateDict& decoder, const std::string& origin) {
  try {
    load_state_dict(*model->mask_decoder, decoder, origin);
  } catch (const Error& e) {
    throw Error(std::string(e.what()) + " (not a mask decoder for this SAM)");
  }
}

// ---- the enhancer ------------------------------------------------------------

Enhancer::Enhancer(diffusion::UNet2DConditionModel unet, Tensor alphas_cumprod, Tensor text_embedding, double gamma,
                   int64_t timestep)
    : unet_(std::move(unet)),
      alphas_cumprod_(std::move(alphas_cumprod)),
      text_(std::move(text_embedding)),
      gamma_(gamma),
      timestep_(timestep) {
  const int64_t T = alphas_cumprod_.defined() ? alphas_cumprod_.numel() : 0;
  if (timestep_ < 0 || timestep_ >= T)
    throw Error("GleSAM timestep " + std::to_string(timestep_) + " is out of range: the scheduler has timesteps 0.." +
                std::to_string(T - 1));
  if (!std::isfinite(gamma_) || gamma_ <= 0) throw Error("GleSAM gamma must be finite and > 0");
  const auto& c = unet_->config;
  if (!text_.defined() || text_.dim() != 3 || text_.size(0) != 1)
    throw Error("GleSAM text embedding must be [1, S, D]");
  for (size_t i = 0; i < c.cross_attention_dim.size(); ++i)
    if (c.cross_attention_dim[i] != text_.size(2))
      throw Error("the text embedding's width " + std::to_string(text_.size(2)) +
                  " does not fit the U-Net's cross_attention_dim " + std::to_string(c.cross_attention_dim[i]));
  unet_->eval();
  for (auto& p : unet_->parameters()) p.set_requires_grad(false);
  config_.gamma = gamma_;
  config_.timestep = timestep_;
}

Enhancer Enhancer::load(const EnhancerConfig& cfg, const EnhancerOptions& opts) {
  diffusion::SdLoadOptions so;
  so.device = opts.device;
  so.text_embedding = cfg.text_embedding.empty();
  so.prompt = cfg.prompt;
  auto sd = diffusion::load_stable_diffusion(cfg.sd, so);
  // GleSAM treats every U-Net output as epsilon, whatever the folder says
  // (its README links the v-prediction SD-2.1); rsam does the same.
  if (sd.scheduler.prediction_type != "epsilon")
    log_warning(cfg.sd + ": the scheduler declares " + sd.scheduler.prediction_type +
                "; GleSAM's step reads the U-Net output as epsilon regardless");
  if (cfg.cre) {
    cre_widen(sd.unet, opts.channels);
  } else {
    if (cfg.in_out.empty() && !opts.fresh_in_out)
      throw Error(cfg.origin + ": \"cre\": false needs its trained \"in_out\" file (stage 1 writes it)");
    fresh_in_out(sd.unet, opts.channels);
    if (!cfg.in_out.empty()) {
      if (!fs::is_regular_file(cfg.in_out)) throw Error(cfg.in_out + ": no such in/out convolution file");
      const io::StateDict sdict = io::load_any(cfg.in_out);
      torch::nn::Module holder;
      holder.register_module("conv_in", sd.unet->conv_in);
      holder.register_module("conv_out", sd.unet->conv_out);
      diffusion::load_weights(holder, sdict, cfg.in_out);
    }
  }
  if (!cfg.lora.empty()) diffusion::load_lora(*sd.unet, cfg.lora);
  Tensor text = cfg.text_embedding.empty() ? sd.text_embedding : read_text_embedding(cfg.text_embedding, opts.device);
  Enhancer e(sd.unet, sd.alphas_cumprod, text, cfg.gamma, cfg.timestep);
  e.config_ = cfg;
  if (!cfg.decoder.empty() && opts.read_decoder) {
    e.decoder_ = read_decoder(cfg.decoder);
    e.decoder_origin_ = cfg.decoder;
  }
  return e;
}

Enhancer Enhancer::load(const std::string& json_path, const EnhancerOptions& opts) {
  return load(EnhancerConfig::from_file(json_path), opts);
}

int64_t Enhancer::channels() const { return unet_->config.in_channels; }

void Enhancer::check_input(const Tensor& z) const {
  if (!z.defined() || z.dim() != 4 || z.size(1) != channels() || z.size(0) < 1)
    throw Error("GleSAM enhancer expects an embedding [B, " + std::to_string(channels()) + ", h, w]");
}

Tensor Enhancer::predict_x0(const Tensor& scaled, bool bf16) const {
  check_input(scaled);
  const auto dev = scaled.device();
  const auto t = torch::full({scaled.size(0)}, timestep_, torch::TensorOptions().dtype(torch::kLong).device(dev));
  Tensor eps;
  {
    Bf16Autocast ac(dev, bf16);
    eps = unet_->forward(scaled, t, text_.to(dev));
  }
  return diffusion::x0_from_eps(scaled.to(torch::kFloat32), eps.to(torch::kFloat32), alphas_cumprod_.to(dev), t);
}

Tensor Enhancer::enhance(const Tensor& z_low, bool bf16) const {
  torch::NoGradGuard ng;
  const Tensor z = z_low.to(torch::kFloat32);
  return predict_x0(z * gamma_, bf16) / gamma_;
}

void Enhancer::apply_decoder(Sam& model) const {
  if (has_decoder()) load_decoder(model, decoder_, decoder_origin_);
}

void attach(SamPredictor& predictor, std::shared_ptr<const Enhancer> enhancer) {
  if (!enhancer) {
    predictor.set_embedding_hook({});
    return;
  }
  const int64_t c = predictor.model()->config.prompt_embed_dim;
  if (enhancer->channels() != c)
    throw Error("the enhancer's U-Net is widened to " + std::to_string(enhancer->channels()) +
                " channels but the SAM embedding has " + std::to_string(c));
  const bool bf16 = predictor.precision() == Precision::BF16;
  predictor.set_embedding_hook([enhancer, bf16](const Tensor& z) { return enhancer->enhance(z, bf16); });
}

std::shared_ptr<const Enhancer> load_for(Sam& model, const std::string& json_path) {
  EnhancerOptions o;
  o.device = model->device();
  o.channels = model->config.prompt_embed_dim;
  auto e = std::make_shared<Enhancer>(Enhancer::load(json_path, o));
  e->apply_decoder(model);
  return e;
}

MethodParts split_method(const std::string& item) {
  MethodParts m;
  const auto plus = item.rfind('+');
  if (plus != std::string::npos && plus > 0 && is_enhancer_path(item.substr(plus + 1))) {
    m.adapter = item.substr(0, plus);
    m.enhancer = item.substr(plus + 1);
  } else if (is_enhancer_path(item)) {
    m.enhancer = item;
  } else {
    m.adapter = item;
  }
  return m;
}

}  // namespace rsam::glesam
