#include "model/attention.h"

#include <ATen/autocast_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <atomic>
#include <cstdlib>

#include "error.h"
#include "model/gemm.h"
#include "model/softmax.h"

namespace rsam {

using torch::Tensor;
using torch::indexing::None;
using torch::indexing::Slice;

namespace {
// RSAM_ATTENTION=chunked|reference picks another path for every command
// (to compare); unset or unknown, the fastest.
AttentionPath initial_path() {
  const char* e = std::getenv("RSAM_ATTENTION");
  try {
    return e ? parse_attention_path(e) : AttentionPath::Fastest;
  } catch (const Error&) {
    return AttentionPath::Fastest;
  }
}
std::atomic<AttentionPath> g_path{initial_path()};

bool cpu_bf16_compute(const Tensor& x) {
  if (!x.device().is_cpu()) return false;
  if (x.scalar_type() == torch::kBFloat16) return true;
  return at::autocast::is_cpu_enabled() && at::autocast::get_autocast_cpu_dtype() == at::kBFloat16;
}
}  // namespace

Tensor bf16_safe_rhs(const Tensor& b) {
  if (!cpu_bf16_compute(b) || b.dim() < 2) return b;
  // Autocast would cast a fp32 operand to bf16 inside matmul, contiguously;
  // cast first so the transposed layout is what the gemm sees.
  return b.to(torch::kBFloat16).transpose(-2, -1).contiguous().transpose(-2, -1);
}

Tensor conv_fp32_on_cpu(torch::nn::Conv2dImpl& conv, const Tensor& x) {
  if (!cpu_bf16_compute(x)) return conv.forward(x);
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCPU);
  return conv.forward(x.to(torch::kFloat32));
}

void set_attention_path(AttentionPath path) { g_path = path; }
AttentionPath attention_path() { return g_path; }

AttentionPath parse_attention_path(const std::string& name) {
  if (name == "fastest") return AttentionPath::Fastest;
  if (name == "chunked") return AttentionPath::Chunked;
  if (name == "reference") return AttentionPath::Reference;
  throw Error("unknown attention path '" + name + "' (fastest, chunked, reference)");
}

Tensor attention_with_rel_pos_reference(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& Rh,
                                        const Tensor& Rw, int64_t H, int64_t W, double scale) {
  // Inference under bf16 autocast upcasts the map so bias add and softmax
  // run in fp32 (where bf16 loses the most). With autograd on (training)
  // the map stays in its compute dtype, as the official code keeps it:
  // fp32 copies of a 12x4096x4096 map would be saved for backward.
  const bool keep_dtype = torch::GradMode::is_enabled();
  auto attn = gemm::matmul(q * scale, k.transpose(-2, -1));
  if (!keep_dtype) attn = attn.to(torch::kFloat32);
  const int64_t B = q.size(0), dim = q.size(2);
  auto r_q = q.reshape({B, H, W, dim});
  auto rel_h = torch::einsum("bhwc,hkc->bhwk", {r_q, Rh});
  auto rel_w = torch::einsum("bhwc,wkc->bhwk", {r_q, Rw});
  attn = (attn.view({B, H, W, H, W}) + rel_h.index({Slice(), Slice(), Slice(), Slice(), None}) +
          rel_w.index({Slice(), Slice(), Slice(), None, Slice()}))
             .view({B, H * W, H * W});
  attn = keep_dtype ? attn.softmax(-1) : attn.softmax(-1, torch::kFloat32);
  return gemm::matmul(attn, bf16_safe_rhs(v));
}

Tensor attention_with_rel_pos_chunked(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& Rh,
                                      const Tensor& Rw, int64_t H, int64_t W, double scale, int64_t max_chunk_elems) {
  const int64_t B = q.size(0), N = H * W, C = q.size(2);
  // Query rows per chunk: the [rows*W, N] slice of one head's map fits the
  // budget. At least one row so any size works.
  const int64_t rows = std::max<int64_t>(1, std::min<int64_t>(H, max_chunk_elems / (W * N)));
  Tensor out;  // allocated from the first chunk: autocast decides its dtype
  // The q·kᵀ products run on bf16 operands where autocast would cast them.
  const bool bf16 = cpu_bf16_compute(q);
  auto kt = (bf16 ? k.to(torch::kBFloat16) : k).transpose(-2, -1);
  auto qc = bf16 ? q.to(torch::kBFloat16) : q;
  auto r_q_all = q.reshape({B, H, W, C});
  for (int64_t b = 0; b < B; ++b) {
    auto kt_b = kt[b];
    auto v_b = bf16_safe_rhs(v[b]);
    // The decomposed bias of every query of this map, in fp32.
    auto rel_h = torch::einsum("hwc,hkc->hwk", {r_q_all[b], Rh}).to(torch::kFloat32);  // [H, W, H]
    auto rel_w = torch::einsum("hwc,wkc->hwk", {r_q_all[b], Rw}).to(torch::kFloat32);  // [H, W, W]
    for (int64_t r0 = 0; r0 < H; r0 += rows) {
      const int64_t r1 = std::min(H, r0 + rows), nr = r1 - r0;
      // The bias written once, the product added onto it in the same GEMM:
      // no bf16 -> fp32 copy of the map and no separate bias passes.
      auto attn = torch::empty({nr, W, H, W}, q.options().dtype(torch::kFloat32));
      torch::add_out(attn, rel_h.narrow(0, r0, nr).unsqueeze(-1), rel_w.narrow(0, r0, nr).unsqueeze(-2));
      attn = attn.view({nr * W, N});
      gemm::add_product(attn, qc[b].narrow(0, r0 * W, nr * W), kt_b, scale);
      attn = attn.softmax(-1);
      auto res = gemm::matmul(attn, v_b);
      if (!out.defined()) out = torch::empty({B, N, C}, res.options());
      out[b].narrow(0, r0 * W, nr * W).copy_(res);
    }
  }
  return out;
}

Tensor attention_with_rel_pos_fused(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& Rh,
                                    const Tensor& Rw, int64_t H, int64_t W, double scale, int64_t max_chunk_elems,
                                    bool reference_kernel) {
  const int64_t B = q.size(0), N = H * W, C = q.size(2);
  // The products run on bf16 operands where autocast would cast them; the
  // logits and the output stay in fp32, the probabilities are written in the
  // products' dtype.
  const bool bf16 = cpu_bf16_compute(q);
  const auto compute = bf16 ? torch::kBFloat16 : torch::kFloat32;
  const auto qc = q.to(compute).contiguous(), kc = k.to(compute).contiguous(), vc = v.to(compute).contiguous();
  const auto f32 = q.options().dtype(torch::kFloat32);
  // The decomposed bias of every query, in fp32: [B, N, H] and [B, N, W].
  auto r_q = q.reshape({B, H, W, C});
  auto rel_h = torch::einsum("bhwc,hkc->bhwk", {r_q, Rh}).to(torch::kFloat32).contiguous().view({B, N, H});
  auto rel_w = torch::einsum("bhwc,wkc->bhwk", {r_q, Rw}).to(torch::kFloat32).contiguous().view({B, N, W});
  auto out = torch::empty({B, N, C}, f32);
  // Query rows [r0, r0 + nr) of map b: logits, biased softmax, product with
  // v, each written once into buffers sized for one step.
  auto step = [&](int64_t b, int64_t r0, int64_t nr, Tensor& logits, Tensor& probs) {
    auto l = logits.narrow(0, 0, nr), p = probs.narrow(0, 0, nr);
    gemm::add_product(l, qc[b].narrow(0, r0, nr), kc[b].transpose(0, 1), scale, 0.0);
    kernels::rel_pos_softmax(l, rel_h[b].narrow(0, r0, nr), rel_w[b].narrow(0, r0, nr), p, reference_kernel);
    auto o = out[b].narrow(0, r0, nr);
    gemm::add_product(o, p, vc[b], 1.0, 0.0);
  };
  if (N * N <= max_chunk_elems) {
    // Small maps (windowed blocks): one map per task, everything in cache.
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      auto logits = torch::empty({N, N}, f32), probs = torch::empty({N, N}, f32.dtype(compute));
      for (int64_t b = b0; b < b1; ++b) step(b, 0, N, logits, probs);
    });
  } else {
    // Large maps (global blocks): blocks of query rows, each step on every
    // thread, so the whole map never exists at once.
    const int64_t rows = std::max<int64_t>(1, std::min<int64_t>(N, max_chunk_elems / N));
    auto logits = torch::empty({rows, N}, f32), probs = torch::empty({rows, N}, f32.dtype(compute));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t r0 = 0; r0 < N; r0 += rows) step(b, r0, std::min(rows, N - r0), logits, probs);
  }
  // The dtype the reference returns (bf16 under autocast).
  return bf16 ? out.to(torch::kBFloat16) : out.to(q.scalar_type());
}

bool fused_attention_runs(const Tensor& q) {
  return q.device().is_cpu() && kernels::vectorized_available() && gemm::available() && !gemm::reference() &&
         (q.scalar_type() == torch::kFloat32 || q.scalar_type() == torch::kBFloat16);
}

std::string attention_path_name(AttentionPath path, const Tensor& q) {
  if (path == AttentionPath::Reference) return "reference";
  return path == AttentionPath::Fastest && fused_attention_runs(q) ? "fused" : "chunked";
}

Tensor attention_with_rel_pos(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& Rh, const Tensor& Rw,
                              int64_t H, int64_t W, double scale, bool training) {
  const AttentionPath path = g_path;
  // Training takes the reference even without grad (a checkpointed block's
  // first pass), so that the pass and its recomputation agree exactly.
  if (path == AttentionPath::Reference || training || torch::GradMode::is_enabled())
    return attention_with_rel_pos_reference(q, k, v, Rh, Rw, H, W, scale);
  if (path == AttentionPath::Fastest && fused_attention_runs(q))
    return attention_with_rel_pos_fused(q, k, v, Rh, Rw, H, W, scale);
  // Without the vectorized kernel: small maps (windowed blocks: 14x14) are
  // cheap and batched across windows; only global maps are worth chunking.
  if (H * W <= 1024) return attention_with_rel_pos_reference(q, k, v, Rh, Rw, H, W, scale);
  return attention_with_rel_pos_chunked(q, k, v, Rh, Rw, H, W, scale);
}

}  // namespace rsam
