// `rsam bench`: encoder and decoder timings (model/bench.h), printed.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>

#include "app/commands.h"
#include "error.h"
#include "bench/bench.h"
#include "model/config.h"

namespace rsam::app {

namespace {

struct BenchArgs {
  std::string checkpoint, model, precision = "fp32", adapter;
  int threads = 0, repeat = 3, decode_repeat = 20;
  bool json = false, reference_attention = false;
};

void run_bench(const BenchArgs& a) {
  configure_runtime(a.threads, a.precision);
  if (a.checkpoint.empty() == a.model.empty()) throw Error("give exactly one of --checkpoint or --model");
  if (a.repeat < 1) throw Error("--repeat must be >= 1");
  if (a.decode_repeat < 1) throw Error("--decode-repeat must be >= 1");
  if (!a.model.empty() && !SamConfig::find_preset(a.model))
    throw Error("unknown --model '" + a.model + "' (vit_b, vit_l, vit_h)");
  BenchOptions o;
  o.checkpoint = a.checkpoint;
  o.model = a.model;
  o.precision = parse_precision(a.precision);
  o.adapter = a.adapter;
  o.repeat = a.repeat;
  o.decode_repeat = a.decode_repeat;
  o.reference_attention = a.reference_attention;
  const nlohmann::json j = run_bench(o);
  if (a.json) {
    std::cout << j.dump() << "\n";
    return;
  }
  std::printf("%s %s, %d threads: encode median %.0f ms, decode median %.1f ms\n",
              j["model"].get<std::string>().c_str(), a.precision.c_str(), j["threads"].get<int>(),
              j["encode_median_ms"].get<double>(), j["decode_median_ms"].get<double>());
  if (j.contains("adapter"))
    std::printf("with %s: encode median %.0f ms, overhead ratio (pairwise median) %.3f\n",
                j["adapter"].get<std::string>().c_str(), j["adapted_encode_median_ms"].get<double>(),
                j["overhead_ratio_median"].get<double>());
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  auto* c = app.add_subcommand("bench", "Time the image encoder and the mask decoder");
  c->add_option("--checkpoint", a->checkpoint, "Checkpoint to time");
  c->add_option("--model", a->model, "Random weights of an official shape instead: vit_b, vit_l, vit_h");
  c->add_option("--precision", a->precision, "fp32 or bf16")->check(CLI::IsMember({"fp32", "bf16"}));
  c->add_option("--threads", a->threads, "Intra-op threads (default: all cores)");
  c->add_option("--repeat", a->repeat, "Encoder runs");
  c->add_option("--decode-repeat", a->decode_repeat, "Decoder runs");
  c->add_flag("--reference-attention", a->reference_attention, "Use the unchunked reference attention");
  c->add_option("--adapter", a->adapter, "Also time the encoder with this adapter method/config attached (ratio)");
  c->add_flag("--json", a->json, "JSON output");
  c->callback([a] { run_bench(*a); });
}

}  // namespace rsam::app
