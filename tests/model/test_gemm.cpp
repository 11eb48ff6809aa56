// The oneDNN GEMM path (model/gemm) held to torch's matmul/linear: every
// layout sgemm can read directly, the ones it cannot, broadcasting, bias,
// gradients, and the cases that must stay on torch's path.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <array>
#include <string>
#include <vector>

#include "model/autocast.h"
#include "model/gemm.h"

namespace {

using torch::Tensor;

// Tolerance for fp32 sums of K products in another order.
void expect_close(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  ASSERT_EQ(got.scalar_type(), want.scalar_type()) << what;
  const double scale = want.abs().max().item<double>() + 1.0;
  EXPECT_LE((got - want).abs().max().item<double>(), 2e-5 * scale) << what;
}

// A random [rows, cols] matrix stored in one of four ways: contiguous,
// transposed, as a column slice of a wider matrix (ld > cols), or expanded
// from one row.
Tensor stored(int64_t rows, int64_t cols, int how) {
  switch (how) {
    case 1:
      return torch::randn({cols, rows}).t();
    case 2:
      return torch::randn({rows, cols + 5}).narrow(1, 2, cols);
    case 3:
      return torch::randn({1, cols}).expand({rows, cols});
    default:
      return torch::randn({rows, cols});
  }
}

}  // namespace

TEST(Gemm, TwoDimensionalEveryLayoutAndBias) {
  if (!rsam::gemm::available()) GTEST_SKIP() << "oneDNN's sgemm is not in this LibTorch";
  torch::NoGradGuard ng;
  torch::manual_seed(1);
  for (auto [M, K, N] :
       std::vector<std::array<int64_t, 3>>{{1, 1, 1}, {1, 7, 9}, {9, 7, 1}, {5, 1, 6}, {64, 33, 17}, {300, 64, 130}})
    for (int ha = 0; ha < 4; ++ha)
      for (int hb = 0; hb < 4; ++hb) {
        auto a = stored(M, K, ha), b = stored(K, N, hb), bias = torch::randn({N});
        const std::string what = std::to_string(M) + "x" + std::to_string(K) + "x" + std::to_string(N) + " layouts " +
                                 std::to_string(ha) + "," + std::to_string(hb);
        expect_close(rsam::gemm::matmul(a, b), torch::matmul(a, b), what);
        expect_close(rsam::gemm::matmul(a, b, bias), torch::matmul(a, b) + bias, what + " bias");
      }
}

TEST(Gemm, BatchedAndBroadcastLikeTorch) {
  if (!rsam::gemm::available()) GTEST_SKIP() << "oneDNN's sgemm is not in this LibTorch";
  torch::NoGradGuard ng;
  torch::manual_seed(2);
  const std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>> cases = {
      {{3, 5, 7}, {3, 7, 4}},        // batched, small: one product per thread
      {{2, 3, 5, 7}, {7, 4}},        // batch dimensions folded into rows
      {{2, 1, 5, 7}, {1, 3, 7, 4}},  // broadcast both ways
      {{5, 7}, {4, 7, 6}},           // a broadcast over b's batch
      {{2, 300, 40}, {2, 40, 260}},  // large enough to run one after another
      {{12, 1, 64}, {12, 64, 1}},
  };
  for (const auto& [sa, sb] : cases) {
    auto a = torch::randn(sa), b = torch::randn(sb);
    const std::string what = c10::str(sa, " x ", sb);
    expect_close(rsam::gemm::matmul(a, b), torch::matmul(a, b), what);
    // The same through transposed views.
    auto at_ = a.transpose(-2, -1).contiguous().transpose(-2, -1);
    auto bt = b.transpose(-2, -1).contiguous().transpose(-2, -1);
    expect_close(rsam::gemm::matmul(at_, bt), torch::matmul(a, b), what + " transposed");
    auto bias = torch::randn({sb.back()});
    expect_close(rsam::gemm::matmul(a, b, bias), torch::matmul(a, b) + bias, what + " bias");
  }
  // A permuted operand whose last two dimensions are neither layout is copied.
  auto p = torch::randn({4, 6, 3}).permute({2, 0, 1}).transpose(0, 1);  // [4, 3, 6] strides not unit in last two
  auto q = torch::randn({4, 6, 5});
  expect_close(rsam::gemm::matmul(p, q), torch::matmul(p, q), "non-unit strides");
}

TEST(Gemm, LinearAndItsGradientsEqualTorch) {
  if (!rsam::gemm::available()) GTEST_SKIP() << "oneDNN's sgemm is not in this LibTorch";
  torch::manual_seed(3);
  for (bool with_bias : {true, false})
    for (auto shape : std::vector<std::vector<int64_t>>{{7}, {5, 7}, {2, 3, 7}}) {
      SCOPED_TRACE(c10::str(shape, with_bias ? " bias" : ""));
      auto x = torch::randn(shape, torch::requires_grad());
      auto w = torch::randn({4, 7}, torch::requires_grad());
      auto b = with_bias ? torch::randn({4}, torch::requires_grad()) : Tensor();
      auto y = rsam::gemm::linear(x, w, b);
      auto y_ref = torch::nn::functional::linear(x, w, b);
      const std::string what = c10::str(shape, with_bias ? " bias" : "");
      expect_close(y.detach(), y_ref.detach(), what);
      ASSERT_TRUE(y.requires_grad());
      auto g = torch::randn(y.sizes());
      auto grads =
          torch::autograd::grad({(y * g).sum()}, with_bias ? std::vector<Tensor>{x, w, b} : std::vector<Tensor>{x, w});
      auto grads_ref = torch::autograd::grad({(y_ref * g).sum()},
                                             with_bias ? std::vector<Tensor>{x, w, b} : std::vector<Tensor>{x, w});
      for (size_t i = 0; i < grads.size(); ++i)
        expect_close(grads[i], grads_ref[i], what + " grad " + std::to_string(i));
    }
  // Batched products, as attention's, differentiate on the same kernels.
  {
    auto a = torch::randn({3, 5, 8}, torch::requires_grad());
    auto b = torch::randn({3, 8, 6}, torch::requires_grad());
    auto g = torch::randn({3, 5, 6});
    auto ga = torch::autograd::grad({(rsam::gemm::matmul(a, b) * g).sum()}, {a, b});
    auto ga_ref = torch::autograd::grad({(torch::matmul(a, b) * g).sum()}, {a, b});
    expect_close(ga[0], ga_ref[0], "batched grad a");
    expect_close(ga[1], ga_ref[1], "batched grad b");
  }
  // Gradient for the weight alone (a frozen input, as in adapter training).
  auto x = torch::randn({6, 7});
  auto w = torch::randn({3, 7}, torch::requires_grad());
  auto gw = torch::autograd::grad({rsam::gemm::linear(x, w).pow(2).sum()}, {w})[0];
  auto gw_ref = torch::autograd::grad({torch::nn::functional::linear(x, w, {}).pow(2).sum()}, {w})[0];
  expect_close(gw, gw_ref, "weight only");
}

TEST(Gemm, OtherCasesTakeTorchsPath) {
  torch::NoGradGuard ng;
  torch::manual_seed(4);
  // Other dtypes, empty products, bf16 autocast: torch's own results.
  auto ad = torch::randn({5, 6}, torch::kFloat64), bd = torch::randn({6, 3}, torch::kFloat64);
  EXPECT_TRUE(torch::equal(rsam::gemm::matmul(ad, bd), torch::matmul(ad, bd)));
  auto ae = torch::randn({5, 0}), be = torch::randn({0, 3});
  EXPECT_TRUE(torch::equal(rsam::gemm::matmul(ae, be), torch::zeros({5, 3})));
  auto a = torch::randn({8, 16}), b = torch::randn({16, 4});
  {
    rsam::Bf16Autocast ac(torch::kCPU);
    auto y = rsam::gemm::matmul(a, b);
    EXPECT_EQ(y.scalar_type(), torch::kBFloat16);  // what autocast makes of torch::matmul
  }
  // Shape errors are torch's.
  EXPECT_THROW(rsam::gemm::matmul(a, torch::randn({5, 4})), c10::Error);
  EXPECT_THROW(rsam::gemm::linear(a, torch::randn({4, 5})), c10::Error);
  // Reference mode: torch's path, bit for bit.
  rsam::gemm::set_reference(true);
  auto r = rsam::gemm::matmul(a, b);
  rsam::gemm::set_reference(false);
  EXPECT_TRUE(torch::equal(r, torch::matmul(a, b)));
}

TEST(Gemm, AddProductSumsOntoFp32InEitherDtype) {
  torch::NoGradGuard ng;
  torch::manual_seed(5);
  auto a = torch::randn({3, 20, 16}), b = torch::randn({16, 24}), base = torch::randn({3, 20, 24});
  auto out = base.clone();
  rsam::gemm::add_product(out, a, b, 0.5);
  expect_close(out, base + 0.5 * torch::matmul(a, b), "fp32");
  // bf16 operands: the products of the rounded inputs, summed in fp32.
  auto ab = a.to(torch::kBFloat16), bb = b.to(torch::kBFloat16);
  auto outb = base.clone();
  rsam::gemm::add_product(outb, ab, bb, 0.5);
  expect_close(outb, base + 0.5 * torch::matmul(ab.to(torch::kFloat32), bb.to(torch::kFloat32)), "bf16");
  // A strided output (a column block of a wider buffer) and broadcast batch.
  auto wide = torch::zeros({3, 20, 30});
  auto view = wide.narrow(2, 3, 24);
  rsam::gemm::add_product(view, a.narrow(0, 0, 1), b.unsqueeze(0));
  expect_close(view, torch::matmul(a.narrow(0, 0, 1), b).expand({3, 20, 24}), "strided out");
  EXPECT_EQ(wide.narrow(2, 0, 3).abs().max().item<float>(), 0.f);
  EXPECT_EQ(wide.narrow(2, 27, 3).abs().max().item<float>(), 0.f);
}
