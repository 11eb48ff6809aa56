#include "diffusion/sd.h"

#include <sys/stat.h>

#include <fstream>
#include <map>

#include "diffusion/schedule.h"
#include "diffusion/tokenizer.h"
#include "error.h"
#include "model/checkpoint.h"

namespace rsam::diffusion {

using nlohmann::json;

namespace {

bool is_dir(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_file(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

void need_dir(const std::string& dir, const std::string& what) {
  if (!is_dir(dir)) throw Error(dir + ": no such folder (" + what + ")");
}

const std::vector<std::string> kUNetStems{"diffusion_pytorch_model"};
const std::vector<std::string> kTextStems{"model", "pytorch_model"};

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// Tensor names, dtypes and shapes of a safetensors file from its header
// alone (a U-Net is gigabytes; `rsam info` should not read it all).
struct HeaderEntry {
  std::string dtype;
  int64_t numel = 1;
};
std::map<std::string, HeaderEntry> safetensors_header(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot read " + path);
  uint8_t len_bytes[8];
  if (!f.read(reinterpret_cast<char*>(len_bytes), 8)) throw Error(path + ": safetensors: file too small for the header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len_bytes[i];
  f.seekg(0, std::ios::end);
  const uint64_t size = uint64_t(f.tellg());
  if (n > size - 8 || n > (uint64_t(100) << 20)) throw Error(path + ": safetensors: header length exceeds the file");
  std::string text(size_t(n), '\0');
  f.seekg(8);
  if (!f.read(text.data(), std::streamsize(n))) throw Error(path + ": safetensors: truncated header");
  const json h = json::parse(text, nullptr, false);
  if (h.is_discarded() || !h.is_object()) throw Error(path + ": safetensors: header is not a JSON object");
  std::map<std::string, HeaderEntry> out;
  for (const auto& [k, v] : h.items()) {
    if (k == "__metadata__") continue;
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v["dtype"].is_string() || !v["shape"].is_array())
      throw Error(path + ": safetensors: malformed entry for '" + k + "'");
    HeaderEntry e;
    e.dtype = v["dtype"].get<std::string>();
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) throw Error(path + ": safetensors: malformed shape for '" + k + "'");
      e.numel *= d.get<int64_t>();
    }
    out[k] = e;
  }
  return out;
}

// name -> (dtype, numel) of any weights file; .bin files are read whole.
std::map<std::string, HeaderEntry> tensor_table(const std::string& path) {
  if (ends_with(path, ".safetensors")) return safetensors_header(path);
  std::map<std::string, HeaderEntry> out;
  for (const auto& [k, t] : io::load_any(path)) out[k] = {io::dtype_name(t.dtype), t.numel()};
  return out;
}

json summarize(const std::map<std::string, HeaderEntry>& table, const std::string& skip_buffer) {
  int64_t params = 0;
  std::map<std::string, int64_t> dtypes;
  for (const auto& [k, e] : table) {
    if (!skip_buffer.empty() && ends_with(k, skip_buffer)) continue;  // a buffer, not a parameter
    params += e.numel;
    dtypes[e.dtype] += e.numel;
  }
  std::string dtype;
  for (const auto& [d, n] : dtypes) dtype += (dtype.empty() ? "" : "+") + d;
  return json{{"parameters", params}, {"tensors", table.size()}, {"dtype", dtype}};
}

json describe_component(const std::string& dir, const std::string& kind) {
  json out{{"path", dir}};
  if (kind == "unet") {
    out["config"] = json::parse(UNetConfig::from_file(dir + "/config.json").to_json());
    out["weights"] = find_weights(dir, kUNetStems);
    out.update(summarize(tensor_table(out["weights"].get<std::string>()), ""));
  } else {
    out["config"] = json::parse(ClipTextConfig::from_file(dir + "/config.json").to_json());
    out["weights"] = find_weights(dir, kTextStems);
    out.update(summarize(tensor_table(out["weights"].get<std::string>()), "position_ids"));
  }
  return out;
}

json describe_file(const std::string& path) {
  const auto table = tensor_table(path);
  auto has = [&](const std::string& k) { return table.count(k) > 0; };
  std::string kind;
  if (has("conv_in.weight") && has("time_embedding.linear_1.weight")) {
    kind = "unet";
  } else if (has("text_model.embeddings.token_embedding.weight")) {
    kind = "clip_text_encoder";
  } else {
    bool lora = !table.empty();
    for (const auto& [k, e] : table) lora = lora && k.find("lora") != std::string::npos;
    if (!lora) throw Error(path + ": not a U-Net, CLIP text encoder or U-Net LoRA weights file");
    kind = "unet_lora";
  }
  json out{{"path", path}, {"kind", kind}};
  out.update(summarize(table, kind == "clip_text_encoder" ? "position_ids" : ""));
  if (kind == "unet_lora") out["modules"] = table.size() / 2;
  return out;
}

}  // namespace

std::string find_weights(const std::string& dir, const std::vector<std::string>& stems) {
  std::vector<std::string> tried;
  for (const char* variant : {"", ".fp16"})
    for (const auto& stem : stems)
      for (const char* ext : {".safetensors", ".bin"}) {
        const std::string p = dir + "/" + stem + variant + ext;
        if (is_file(p)) return p;
        tried.push_back(stem + variant + ext);
      }
  for (const auto& stem : stems)
    for (const char* ext : {".safetensors.index.json", ".bin.index.json"})
      if (is_file(dir + "/" + stem + ext))
        throw Error(dir + ": sharded weights (" + stem + ext + ") are not supported; merge them into one file");
  throw Error(dir + ": no weights file (looked for " + tried[0] + ", " + tried[1] + " and fp16 variants)");
}

io::StateDict read_weights(const std::string& path) { return io::load_any(path); }

void load_weights(torch::nn::Module& model, const io::StateDict& sd, const std::string& origin) {
  load_state_dict(model, sd, origin);
}

UNet2DConditionModel load_unet(const std::string& dir, const torch::Device& device) {
  need_dir(dir, "the U-Net folder");
  const auto cfg = UNetConfig::from_file(dir + "/config.json");
  const auto path = find_weights(dir, kUNetStems);
  auto sd = read_weights(path);
  UNet2DConditionModel unet(cfg);
  load_weights(*unet, sd, path);
  sd.clear();
  unet->eval();
  unet->to(device);
  return unet;
}

ClipTextModel load_text_encoder(const std::string& dir, const torch::Device& device) {
  need_dir(dir, "the text encoder folder");
  const auto cfg = ClipTextConfig::from_file(dir + "/config.json");
  const auto path = find_weights(dir, kTextStems);
  auto sd = read_weights(path);
  // Files from transformers >= 4.31 no longer store position_ids; the
  // buffer is then arange, as those versions build it.
  const std::string pos = "text_model.embeddings.position_ids";
  bool has_pos = false;
  for (const auto& [k, t] : sd) has_pos = has_pos || k == pos;
  ClipTextModel model(cfg);
  if (!has_pos) sd.emplace_back(pos, from_torch(model->text_model->embeddings->position_ids));
  load_weights(*model, sd, path);
  const auto& ids = model->text_model->embeddings->position_ids;
  if (ids.min().item<int64_t>() < 0 || ids.max().item<int64_t>() >= cfg.max_position_embeddings)
    throw Error(path + ": position_ids hold values outside [0, " + std::to_string(cfg.max_position_embeddings) + ")");
  model->eval();
  model->to(device);
  return model;
}

torch::Tensor encode_prompt(const std::string& folder, const std::string& prompt, const torch::Device& device) {
  need_dir(folder, "the Stable Diffusion folder");
  // ids.size() is the tokenizer's model_max_length.
  const std::string dir = folder + "/tokenizer";
  const auto ids =
      prompt.empty() ? ClipTokens::from_folder(dir).encode(prompt) : ClipTokenizer::from_folder(dir).encode(prompt);
  auto encoder = load_text_encoder(folder + "/text_encoder", device);
  if (int64_t(ids.size()) > encoder->config.max_position_embeddings)
    throw Error(dir + ": model_max_length " + std::to_string(ids.size()) +
                " exceeds the text encoder's " + std::to_string(encoder->config.max_position_embeddings) + " positions");
  torch::NoGradGuard ng;
  auto t = torch::tensor(ids, torch::kLong).unsqueeze(0).to(device);
  return encoder(t).to(torch::kFloat32);
}

StableDiffusion load_stable_diffusion(const std::string& folder, const SdLoadOptions& opts) {
  need_dir(folder, "the Stable Diffusion folder");
  StableDiffusion sd;
  sd.folder = folder;
  sd.scheduler = SchedulerConfig::from_file(folder + "/scheduler/scheduler_config.json");
  sd.alphas_cumprod = alphas_cumprod(sd.scheduler).to(opts.device);
  // The text encoder is loaded, run once and freed before the U-Net is
  // read: the two are never in memory together.
  if (opts.text_embedding) sd.text_embedding = encode_prompt(folder, opts.prompt, opts.device);
  sd.unet = load_unet(folder + "/unet", opts.device);
  return sd;
}

bool is_sd_folder(const std::string& path) { return is_dir(path) && is_file(path + "/unet/config.json"); }

json describe_sd_path(const std::string& path) {
  if (is_file(path)) return describe_file(path);
  if (!is_dir(path)) throw Error(path + ": no such file or folder");
  if (is_sd_folder(path)) {
    json out{{"path", path}, {"kind", "stable_diffusion"}};
    out["unet"] = describe_component(path + "/unet", "unet");
    if (is_file(path + "/text_encoder/config.json"))
      out["text_encoder"] = describe_component(path + "/text_encoder", "text_encoder");
    if (is_file(path + "/scheduler/scheduler_config.json"))
      out["scheduler"] = json::parse(SchedulerConfig::from_file(path + "/scheduler/scheduler_config.json").to_json());
    if (is_file(path + "/tokenizer/tokenizer_config.json")) {
      const auto t = ClipTokens::from_folder(path + "/tokenizer");
      out["tokenizer"] = {{"bos", t.bos}, {"eos", t.eos}, {"pad", t.pad}, {"pad_token", t.pad_token},
                          {"max_length", t.max_length}};
    }
    return out;
  }
  if (is_file(path + "/config.json")) {
    const std::string text = read_text_file(path + "/config.json");
    const json j = json::parse(text, nullptr, false);
    const bool clip = j.is_object() && (j.contains("architectures") || j.value("model_type", "") == "clip_text_model");
    json out = describe_component(path, clip ? "text_encoder" : "unet");
    out["kind"] = clip ? "clip_text_encoder" : "unet";
    return out;
  }
  throw Error(path + ": not a Stable Diffusion folder (no unet/config.json)");
}

}  // namespace rsam::diffusion
