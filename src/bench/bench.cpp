#include "bench/bench.h"

#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <filesystem>
#include <optional>

#include <sys/resource.h>

#include "adapt/adapter.h"
#include "bench/profile.h"
#include "diffusion/bench.h"
#include "error.h"
#include "glesam/bench.h"
#include "model/attention.h"
#include "model/checkpoint.h"
#include "model/gemm.h"
#include "model/runtime.h"

namespace rsam {

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

Sam bench_model(const BenchOptions& o) {
  if (!o.checkpoint.empty()) return load_sam(o.checkpoint).model;
  // Random weights of the official shapes: timing does not depend on values.
  torch::manual_seed(0);
  Sam model(SamConfig::preset(o.model));
  model->eval();
  return model;
}

// The adapter attached with trained-looking weights: non-zero updates, gates
// as initialized (a fresh adapter is the identity and may take shortcuts).
adapt::AdaptedSam trained_looking(const Sam& model, const std::string& adapter) {
  adapt::AdaptedSam adapted(model, adapt::load_config(adapter), 0);
  {
    torch::NoGradGuard ng;
    for (auto& [k, t] : adapted.trainable())
      if (k.find(".adapter.") != std::string::npos && k.find(".g_") == std::string::npos &&
          k.find("gate") == std::string::npos)
        t.add_(torch::randn_like(t) * 0.01);
  }
  adapted.model()->eval();
  return adapted;
}

// Plain and adapted encodes in pairs (time_pairs), so the overhead ratio
// holds even when the machine's speed drifts. Detaching and attaching swap a
// pointer per layer: microseconds in the timed calls, against milliseconds
// of encoding.
void time_adapted(Sam model, SamPredictor& pred, const Image8& img, int repeat, std::vector<double>& enc,
                  std::vector<double>& enc_adapted) {
  std::vector<std::pair<AdaptableLinear, std::shared_ptr<adapt::Adapter>>> hooks;
  for (auto& [name, lin] : adapt::adaptable_layers(*model))
    if (lin->has_adapter()) hooks.emplace_back(lin, std::dynamic_pointer_cast<adapt::Adapter>(lin->adapter));
  auto set_attached = [&](bool on) {
    for (auto& [lin, ad] : hooks) {
      if (on)
        lin->attach(ad);
      else
        lin->detach();
    }
  };
  const PairTimes t = time_pairs(
      repeat,
      [&] {
        set_attached(false);
        pred.set_image(img);
      },
      [&] {
        set_attached(true);
        pred.set_image(img);
      });
  for (double s : t.a) enc.push_back(1e3 * s);
  for (double s : t.b) enc_adapted.push_back(1e3 * s);
}

// Median seconds->ms of `runs` calls of the fast path and, when compared,
// of the reference decoder in alternating pairs; with a profile, per-op
// tables of both.
struct DecodeTimes {
  std::vector<double> fast, reference;
  nlohmann::json profile, profile_reference;
};

DecodeTimes time_decoder(const BenchOptions& o, int runs, double per, const std::function<void()>& f) {
  DecodeTimes t;
  auto as_ms = [per](const std::vector<double>& s) {
    std::vector<double> v;
    for (double x : s) v.push_back(1e3 * x / per);
    return v;
  };
  f();  // first call: one-time costs (allocations, kernels' set-up) stay out of the medians
  if (o.compare_decoder) {
    const PairTimes p = time_pairs(
        runs,
        [&] {
          set_reference_decoder(false);
          f();
        },
        [&] {
          set_reference_decoder(true);
          f();
        });
    set_reference_decoder(false);
    t.fast = as_ms(p.a);
    t.reference = as_ms(p.b);
  } else {
    for (int i = 0; i < runs; ++i) {
      const auto t0 = Clock::now();
      f();
      t.fast.push_back(ms_since(t0) / per);
    }
  }
  if (o.profile) {
    const int n = std::max(1, std::min(runs, 5));
    for (bool ref : {false, true}) {
      if (ref && !o.compare_decoder) break;
      set_reference_decoder(ref);
      OpProfile prof;
      for (int i = 0; i < n; ++i) f();
      prof.stop();
      (ref ? t.profile_reference : t.profile) = prof.table(n);
    }
    set_reference_decoder(false);
  }
  return t;
}

void put_times(nlohmann::json& j, const std::string& name, const DecodeTimes& t) {
  j[name + "_ms"] = t.fast;
  j[name + "_median_ms"] = median(t.fast);
  if (!t.reference.empty()) {
    std::vector<double> ratios;
    for (size_t i = 0; i < t.fast.size(); ++i) ratios.push_back(t.fast[i] / t.reference[i]);
    j[name + "_reference_ms"] = t.reference;
    j[name + "_reference_median_ms"] = median(t.reference);
    j[name + "_ratio_median"] = median(ratios);
  }
  if (!t.profile.is_null()) j["profile"][name] = t.profile;
  if (!t.profile_reference.is_null()) j["profile"][name + "_reference"] = t.profile_reference;
}

double peak_rss_mb() {
  struct rusage u {};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / 1024.0;  // KiB on Linux
}

}  // namespace

nlohmann::json run_bench(const BenchOptions& o) {
  set_attention_path(o.attention);
  gemm::set_reference(o.reference_gemm);
  const auto t_load = Clock::now();
  Sam model = bench_model(o);
  const double load_ms = ms_since(t_load);
  SamPredictor pred(model, o.precision);
  const int S = model->config.img_size;
  Image8 img(S, S, 3);
  for (size_t i = 0; i < img.data.size(); ++i) img.data[i] = uint8_t((i * 2654435761u) >> 24);
  std::vector<double> enc, enc_adapted;
  std::optional<adapt::AdaptedSam> adapted;
  if (!o.adapter.empty()) {
    adapted.emplace(trained_looking(model, o.adapter));
    time_adapted(model, pred, img, o.repeat, enc, enc_adapted);
  } else {
    for (int i = 0; i < o.repeat; ++i) {
      const auto t = Clock::now();
      pred.set_image(img);
      enc.push_back(ms_since(t));
    }
  }
  nlohmann::json encode_profile;
  if (o.profile) {  // one more encode, op by op
    OpProfile prof;
    pred.set_image(img);
    prof.stop();
    encode_profile = prof.table(1);
  }
  Prompt p;
  p.points = {{float(S / 2), float(S / 2)}};
  p.labels = {1};
  // A tensor of the dtype the encoder's attention sees, to name its path.
  const auto probe = torch::empty({1, 1, 1}, o.precision == Precision::BF16 ? torch::kBFloat16 : torch::kFloat32);
  nlohmann::json j{{"model", model->config.type_name()},
                   {"precision", o.precision == Precision::BF16 ? "bf16" : "fp32"},
                   {"threads", num_threads()},
                   {"blas_threads", blas_threads()},
                   {"omp_wait_policy", omp_waits_passively() ? "passive" : "default"},
                   {"image_size", S},
                   {"attention", attention_path_name(o.attention, probe)},
                   {"gemm", gemm::available() && !o.reference_gemm ? "onednn" : "torch"},
                   {"encode_ms", enc},
                   {"encode_median_ms", median(enc)}};
  if (!o.checkpoint.empty()) j["load_ms"] = load_ms;
  if (!encode_profile.is_null()) j["profile"]["encode"] = encode_profile;
  // One prompt, three masks at the model's input size (the official bench).
  put_times(j, "decode", time_decoder(o, o.decode_repeat, 1, [&] { pred.predict(p, true); }));
  if (o.batch > 0) {
    auto pts = torch::rand({o.batch, 1, 2}) * double(S - 1);
    auto labels = torch::ones({o.batch, 1}, torch::kInt32);
    put_times(j, "batch", time_decoder(o, std::max(1, o.decode_repeat / 4), o.batch, [&] {
                pred.predict_batch(pts, labels, {}, {}, true);
              }));
    j["batch"] = o.batch;
  }
  // What `rsam segment` decodes by default: one point, three masks, the
  // picked one at the original size (a 1024x768 photo), as bytes.
  pred.set_embedding(pred.embedding(), {768, 1024});
  Prompt sp;
  sp.points = {{512.f, 384.f}};
  sp.labels = {1};
  put_times(j, "segment", time_decoder(o, o.decode_repeat, 1, [&] {
              auto r = pred.predict_one(sp);
              auto bytes = r.masks.to(torch::kCPU).to(torch::kUInt8).contiguous();
            }));
  j["peak_rss_mb"] = peak_rss_mb();
  if (adapted) {
    std::vector<double> ratios;
    for (size_t i = 0; i < enc.size(); ++i) ratios.push_back(enc_adapted[i] / enc[i]);
    j["adapter"] = adapted->method();
    j["adapter_params"] = adapted->trainable_count();
    j["adapted_encode_ms"] = enc_adapted;
    j["adapted_encode_median_ms"] = median(enc_adapted);
    j["overhead_ratio_median"] = median(ratios);
  }
  return j;
}

namespace {

// GleSAM's U-Net: forwards of one built from a diffusers config with random
// weights of its real shapes, or of a unet folder with its own weights.
nlohmann::json run_unet(const BenchRequest& r) {
  diffusion::UNetBenchOptions o;
  o.channels = r.unet_channels;
  o.bf16 = r.precision == "bf16";
  o.repeat = r.repeat;
  // A unet folder: its own weights (bench/unet_compare.sh gives diffusers the same).
  const bool folder = std::filesystem::is_directory(r.unet);
  const auto cfg = diffusion::UNetConfig::from_file(folder ? r.unet + "/config.json" : r.unet);
  if (folder) {
    o.unet_dir = r.unet;
    o.channels = cfg.in_channels;
  }
  const auto u = diffusion::bench_unet(cfg, o);
  return {{"unet", r.unet},
          {"parameters", u.parameters},
          {"channels", o.channels},
          {"precision", r.precision},
          {"threads", num_threads()},
          {"forward_ms", u.forward_ms},
          {"peak_rss_gb", u.peak_rss_gb}};
}

// GleSAM (glesam/bench.h): SAM (model, default vit_b) + the CRE-widened U-Net.
nlohmann::json run_enhancer(const BenchRequest& r) {
  glesam::EnhancerBenchOptions o;
  if (!r.model.empty()) o.sam = r.model;
  o.unet_config = r.enhancer_unet;
  o.bf16 = r.precision == "bf16";
  o.repeat = r.repeat;
  o.decode_repeat = r.decode_repeat;
  o.train_steps = r.train_steps;
  return glesam::bench_enhancer(o);
}

std::string printf_string(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string printf_string(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

}  // namespace

nlohmann::json run_bench_request(const BenchRequest& r) {
  if (r.repeat < 1) throw Error("bench: repeat must be >= 1");
  if (!r.unet.empty()) return run_unet(r);
  if (!r.enhancer_unet.empty()) return run_enhancer(r);
  if (r.checkpoint.empty() == r.model.empty()) throw Error("bench: give exactly one of a checkpoint or a model preset");
  if (r.decode_repeat < 1) throw Error("bench: decode repeat must be >= 1");
  if (!r.model.empty() && !SamConfig::find_preset(r.model))
    throw Error("unknown model preset '" + r.model + "' (vit_b, vit_l, vit_h)");
  BenchOptions o;
  o.checkpoint = r.checkpoint;
  o.model = r.model;
  o.precision = parse_precision(r.precision);
  o.adapter = r.adapter;
  o.repeat = r.repeat;
  o.decode_repeat = r.decode_repeat;
  o.attention = parse_attention_path(r.attention);
  o.reference_gemm = r.reference_gemm;
  o.profile = r.profile;
  o.compare_decoder = r.compare_decoder;
  o.batch = r.batch;
  return run_bench(o);
}

std::string format_bench(const nlohmann::json& j) {
  if (j.contains("sam")) return j.dump(1) + "\n";  // GleSAM's enhancer: its JSON, indented
  if (j.contains("unet"))
    return printf_string(
        "U-Net %s (%lld parameters, %lld channels) %s, %d threads: last forward %.0f ms, peak RSS "
        "%.2f GB\n",
        j["unet"].get<std::string>().c_str(), (long long)j["parameters"].get<int64_t>(),
        (long long)j["channels"].get<int64_t>(), j["precision"].get<std::string>().c_str(), j["threads"].get<int>(),
        j["forward_ms"].back().get<double>(), j["peak_rss_gb"].get<double>());
  std::string s = printf_string(
      "%s %s, %d threads, %s GEMMs, %s attention: encode median %.0f ms, decode median "
      "%.1f ms\n",
      j["model"].get<std::string>().c_str(), j["precision"].get<std::string>().c_str(), j["threads"].get<int>(),
      j["gemm"].get<std::string>().c_str(), j["attention"].get<std::string>().c_str(),
      j["encode_median_ms"].get<double>(), j["decode_median_ms"].get<double>());
  if (j.contains("load_ms")) s += printf_string("load %.0f ms\n", j["load_ms"].get<double>());
  for (const std::string n : {"decode", "batch", "segment"}) {
    if (!j.contains(n + "_median_ms")) continue;
    s += printf_string("%-8s median %.1f ms%s", n.c_str(), j[n + "_median_ms"].get<double>(),
                       n == "batch" ? " per prompt" : "");
    if (j.contains(n + "_reference_median_ms"))
      s += printf_string(", reference decoder %.1f ms, ratio (pairwise median) %.3f",
                         j[n + "_reference_median_ms"].get<double>(), j[n + "_ratio_median"].get<double>());
    s += "\n";
  }
  s += printf_string("peak RSS %.0f MB\n", j["peak_rss_mb"].get<double>());
  if (j.contains("profile"))
    for (const auto& [name, table] : j["profile"].items())
      s += "per-op profile, " + name + " (ms per call):\n" + format_profile(table);
  if (j.contains("adapter"))
    s += printf_string("with %s: encode median %.0f ms, overhead ratio (pairwise median) %.3f\n",
                       j["adapter"].get<std::string>().c_str(), j["adapted_encode_median_ms"].get<double>(),
                       j["overhead_ratio_median"].get<double>());
  return s;
}

}  // namespace rsam
