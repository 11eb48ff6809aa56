#include "bench/bench.h"

#include <algorithm>
#include <chrono>
#include <optional>

#include "adapt/adapter.h"
#include "error.h"
#include "model/attention.h"
#include "model/checkpoint.h"
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

}  // namespace

nlohmann::json run_bench(const BenchOptions& o) {
  set_reference_attention(o.reference_attention);
  Sam model = bench_model(o);
  SamPredictor pred(model, o.precision);
  const int S = model->config.img_size;
  Image8 img(S, S, 3);
  for (size_t i = 0; i < img.data.size(); ++i) img.data[i] = uint8_t((i * 2654435761u) >> 24);
  std::vector<double> enc, dec, enc_adapted;
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
  Prompt p;
  p.points = {{float(S / 2), float(S / 2)}};
  p.labels = {1};
  for (int i = 0; i < o.decode_repeat; ++i) {
    auto t = Clock::now();
    pred.predict(p, true);
    dec.push_back(ms_since(t));
  }
  nlohmann::json j{{"model", model->config.type_name()},
                   {"precision", o.precision == Precision::BF16 ? "bf16" : "fp32"},
                   {"threads", num_threads()},
                   {"blas_threads", blas_threads()},
                   {"omp_wait_policy", omp_waits_passively() ? "passive" : "default"},
                   {"image_size", S},
                   {"attention", o.reference_attention ? "reference" : "chunked"},
                   {"encode_ms", enc},
                   {"decode_ms", dec},
                   {"encode_median_ms", median(enc)},
                   {"decode_median_ms", median(dec)}};
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

}  // namespace rsam
