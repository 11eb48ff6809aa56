// The biased softmax kernel: vectorized against its scalar reference, both
// against torch; the fused attention built on it against the reference
// attention, in fp32 and under bf16 autocast, with the chunked one.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

#include "model/attention.h"
#include "model/autocast.h"
#include "model/gemm.h"
#include "model/sam.h"
#include "model/softmax.h"

namespace {

using torch::Tensor;

// What the kernel computes, in torch: softmax((x + bh) + bw) over kh*kw keys.
Tensor torch_softmax(const Tensor& x, const Tensor& bh, const Tensor& bw) {
  const int64_t R = x.size(0), kh = bh.size(1), kw = bw.size(1);
  return ((x.view({R, kh, kw}) + bh.unsqueeze(2)) + bw.unsqueeze(1)).view({R, kh * kw}).softmax(-1);
}

Tensor run_kernel(const Tensor& x, const Tensor& bh, const Tensor& bw, torch::ScalarType dtype, bool reference) {
  auto scratch = x.clone();
  auto y = torch::full(x.sizes(), 7.0, x.options().dtype(dtype));
  rsam::kernels::rel_pos_softmax(scratch, bh, bw, y, reference);
  return y;
}

struct Shape {
  int64_t rows, kh, kw;
};

const std::vector<Shape> kShapes = {{3, 14, 14}, {5, 1, 1},   {4, 3, 15}, {2, 2, 16},
                                    {7, 5, 17},  {9, 64, 64}, {1, 1, 33}};

TEST(RelPosSoftmax, ReferenceEqualsTorch) {
  torch::manual_seed(1);
  for (const auto& s : kShapes) {
    auto x = torch::randn({s.rows, s.kh * s.kw}) * 4, bh = torch::randn({s.rows, s.kh}),
         bw = torch::randn({s.rows, s.kw});
    auto want = torch_softmax(x, bh, bw);
    EXPECT_TRUE(torch::allclose(run_kernel(x, bh, bw, torch::kFloat32, true), want, 1e-5, 1e-7))
        << s.rows << "x" << s.kh << "x" << s.kw;
    EXPECT_TRUE(torch::equal(run_kernel(x, bh, bw, torch::kBFloat16, true),
                             run_kernel(x, bh, bw, torch::kFloat32, true).to(torch::kBFloat16)));
  }
}

TEST(RelPosSoftmax, VectorizedEqualsReference) {
  if (!rsam::kernels::vectorized_available()) GTEST_SKIP() << "no AVX-512 on this CPU";
  torch::manual_seed(2);
  for (const auto& s : kShapes) {
    // Wide logits reach exp's underflow, where a poor exp would show.
    auto x = torch::randn({s.rows, s.kh * s.kw}) * 30, bh = torch::randn({s.rows, s.kh}),
         bw = torch::randn({s.rows, s.kw});
    auto ref = run_kernel(x, bh, bw, torch::kFloat32, true);
    auto vec = run_kernel(x, bh, bw, torch::kFloat32, false);
    // About one ulp of expf, relative, plus a summation order.
    EXPECT_LE(((vec - ref).abs() / (ref.abs() + 1e-30)).max().item<double>(), 4e-6) << s.kh << "x" << s.kw;
    EXPECT_TRUE(torch::allclose(vec, torch_softmax(x, bh, bw), 1e-5, 1e-7));
    // bf16 output: the vectorized fp32 result rounded exactly as torch rounds.
    EXPECT_TRUE(torch::equal(run_kernel(x, bh, bw, torch::kBFloat16, false), vec.to(torch::kBFloat16)));
  }
}

TEST(RelPosSoftmax, NanRowsStayNanAndOtherRowsAreUntouched) {
  auto x = torch::randn({3, 4 * 20}), bh = torch::randn({3, 4}), bw = torch::randn({3, 20});
  x[1][37] = std::numeric_limits<float>::quiet_NaN();
  for (bool reference : {true, false})
    for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
      auto y = run_kernel(x, bh, bw, dtype, reference).to(torch::kFloat32);
      EXPECT_TRUE(y[1].isnan().all().item<bool>()) << reference;
      EXPECT_FALSE(y[0].isnan().any().item<bool>());
      EXPECT_NEAR(y[2].sum().item<double>(), 1.0, 1e-2);
    }
}

TEST(RelPosSoftmax, RejectsWrongShapes) {
  auto x = torch::randn({2, 12}), bh = torch::randn({2, 3}), bw = torch::randn({2, 4});
  auto y = torch::empty({2, 12});
  auto bad_bw = torch::randn({2, 5});
  EXPECT_THROW(rsam::kernels::rel_pos_softmax(x, bh, bad_bw, y), c10::Error);
  auto bad_y = torch::empty({2, 12}, torch::kFloat64);
  EXPECT_THROW(rsam::kernels::rel_pos_softmax(x, bh, bw, bad_y), c10::Error);
}

struct Maps {
  Tensor q, k, v, Rh, Rw;
};

Maps maps(int64_t B, int64_t H, int64_t W, int64_t C, double rel) {
  Maps m;
  m.q = torch::randn({B, H * W, C});
  m.k = torch::randn({B, H * W, C});
  m.v = torch::randn({B, H * W, C});
  m.Rh = rsam::get_rel_pos(H, H, torch::randn({2 * H - 1, C}) * rel);
  m.Rw = rsam::get_rel_pos(W, W, torch::randn({2 * W - 1, C}) * rel);
  return m;
}

TEST(FusedAttention, EqualsReference) {
  torch::NoGradGuard ng;
  torch::manual_seed(5);
  // Small maps (one per task) and large ones in row blocks (a budget below
  // the map's size), with ragged last blocks.
  for (auto [H, W, budget] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {14, 14, 1 << 21}, {8, 8, 64 * 10}, {6, 10, 60 * 7}, {5, 7, 1}}) {
    auto m = maps(3, H, W, 16, 1.0);
    auto ref = rsam::attention_with_rel_pos_reference(m.q, m.k, m.v, m.Rh, m.Rw, H, W, 0.25);
    for (bool reference_kernel : {true, false}) {
      auto fused = rsam::attention_with_rel_pos_fused(m.q, m.k, m.v, m.Rh, m.Rw, H, W, 0.25, budget, reference_kernel);
      EXPECT_EQ(fused.scalar_type(), torch::kFloat32);
      EXPECT_LE((ref - fused).abs().max().item<double>(), 1e-5) << H << "x" << W << " budget " << budget;
    }
  }
}

// Under bf16 autocast, `impl` against fp32 is at least as close as the
// reference is (mean and max |error|), and returns the reference's dtype.
// Both run the products on bf16 operands and bias + softmax in fp32; the
// chunked and fused paths also keep the logits in fp32 (the reference rounds
// them to bf16).
template <class Impl>
void expect_bf16_as_close_as_reference(const char* name, const Maps& m, int64_t H, int64_t W, double scale, Impl impl) {
  torch::NoGradGuard ng;
  const auto fp32 = rsam::attention_with_rel_pos_reference(m.q, m.k, m.v, m.Rh, m.Rw, H, W, scale);
  Tensor ref, got;
  {
    rsam::Bf16Autocast ac(torch::kCPU);
    ref = rsam::attention_with_rel_pos_reference(m.q, m.k, m.v, m.Rh, m.Rw, H, W, scale);
    got = impl();
  }
  EXPECT_EQ(got.scalar_type(), ref.scalar_type()) << name;
  ref = ref.to(torch::kFloat32);
  got = got.to(torch::kFloat32);
  const double ref_err = (ref - fp32).abs().mean().item<double>(), err = (got - fp32).abs().mean().item<double>();
  std::printf("%ldx%ld bf16 attention, mean |error| against fp32: reference %.3g, %s %.3g (max %.3g, %.3g)\n", long(H),
              long(W), ref_err, name, err, (ref - fp32).abs().max().item<double>(),
              (got - fp32).abs().max().item<double>());
  EXPECT_GT(ref_err, 0.0) << name;  // bf16 really ran
  EXPECT_LE(err, 1.1 * ref_err) << name;
  EXPECT_LE((got - fp32).abs().max().item<double>(), 1.1 * (ref - fp32).abs().max().item<double>()) << name;
}

TEST(Attention, ChunkedEqualsReferenceUnderBf16Autocast) {
  torch::manual_seed(4);
  const int64_t B = 6, H = 14, W = 14;
  const auto m = maps(B, H, W, 32, 0.1);
  expect_bf16_as_close_as_reference("chunked", m, H, W, 0.2, [&] {
    return rsam::attention_with_rel_pos_chunked(m.q, m.k, m.v, m.Rh, m.Rw, H, W, 0.2, 3 * B * W * H * W);
  });
}

TEST(FusedAttention, UnderBf16AutocastIsAsCloseToFp32AsTheReference) {
  torch::manual_seed(6);
  for (auto [H, W, budget] :
       std::vector<std::tuple<int64_t, int64_t, int64_t>>{{14, 14, 1 << 21}, {16, 16, 256 * 40}}) {
    const auto m = maps(6, H, W, 32, 0.1);
    expect_bf16_as_close_as_reference("fused", m, H, W, 0.2, [&, H = H, W = W, budget = budget] {
      return rsam::attention_with_rel_pos_fused(m.q, m.k, m.v, m.Rh, m.Rw, H, W, 0.2, budget);
    });
  }
}

TEST(FusedAttention, IsWhatTheEncoderRunsWhereTheKernelIs) {
  torch::NoGradGuard ng;
  auto q = torch::randn({2, 16, 8});
  EXPECT_EQ(rsam::fused_attention_runs(q), rsam::kernels::vectorized_available() && rsam::gemm::available());
  EXPECT_FALSE(rsam::fused_attention_runs(q.to(torch::kFloat64)));
}

}  // namespace
