// The encoder's attention on ViT-B shapes, each implementation in the same
// run (the windowed blocks' 25 windows x 12 heads of 14x14, a global block's
// 12 heads of 64x64), fp32 and under bf16 autocast. Compare the rows of one
// run; the machine's speed drifts between runs. Run it with
// OMP_WAIT_POLICY=PASSIVE, as rsam's commands run.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

#include "model/attention.h"
#include "model/autocast.h"
#include "model/runtime.h"
#include "model/sam.h"

namespace {

enum Path { kReference, kChunked, kFused };

void attention(benchmark::State& state) {
  const auto path = Path(state.range(0));
  const bool bf16 = state.range(1) != 0, global = state.range(2) != 0;
  const int64_t H = global ? 64 : 14, B = global ? 12 : 300, C = 64;
  torch::NoGradGuard ng;
  torch::manual_seed(0);
  auto q = torch::randn({B, H * H, C}), k = torch::randn({B, H * H, C}), v = torch::randn({B, H * H, C});
  if (bf16) {  // what qkv's linear gives under autocast
    q = q.to(torch::kBFloat16);
    k = k.to(torch::kBFloat16);
    v = v.to(torch::kBFloat16);
  }
  auto Rh = rsam::get_rel_pos(H, H, torch::randn({2 * H - 1, C}) * 0.1);
  auto Rw = rsam::get_rel_pos(H, H, torch::randn({2 * H - 1, C}) * 0.1);
  rsam::Bf16Autocast ac(torch::kCPU, bf16);
  for (auto _ : state) {
    torch::Tensor out;
    if (path == kReference)
      out = rsam::attention_with_rel_pos_reference(q, k, v, Rh, Rw, H, H, 0.125);
    else if (path == kChunked)
      out = global ? rsam::attention_with_rel_pos_chunked(q, k, v, Rh, Rw, H, H, 0.125)
                   : rsam::attention_with_rel_pos_reference(q, k, v, Rh, Rw, H, H, 0.125);
    else
      out = rsam::attention_with_rel_pos_fused(q, k, v, Rh, Rw, H, H, 0.125);
    benchmark::DoNotOptimize(out.data_ptr());
  }
  state.SetLabel(std::string(path == kReference ? "reference"
                             : path == kChunked ? "chunked"
                                                : "fused") +
                 (bf16 ? " bf16" : " fp32") + (global ? " global" : " windowed"));
}

}  // namespace

// Reference (unchunked) only for the windowed maps: a global map is 805 MB.
BENCHMARK(attention)
    ->ArgsProduct({{kChunked, kFused}, {0, 1}, {0, 1}})
    ->Args({kReference, 0, 0})
    ->Args({kReference, 1, 0})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

int main(int argc, char** argv) {
  // As every rsam command runs: without it each large map is fresh pages.
  rsam::use_caching_cpu_allocator();
  // Every core unless RSAM_BENCH_THREADS says otherwise (LibTorch's own
  // default may be fewer).
  const char* t = std::getenv("RSAM_BENCH_THREADS");
  at::set_num_threads(t ? std::max(1, std::atoi(t)) : int(std::thread::hardware_concurrency()));
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
