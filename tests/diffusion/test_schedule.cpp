// The noise schedule against diffusers' DDIMScheduler and GleSAM's x0 step.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "diffusion/schedule.h"
#include "diffusion_test_util.h"
#include "error.h"

namespace rsam::diffusion {
namespace {

using testing::data;
using testing::npy;

class ScheduleParity : public ::testing::TestWithParam<std::string> {};

// sd2: scaled_linear 0.00085..0.012 (SD's own); sd1: linear 0.0001..0.02.
TEST_P(ScheduleParity, AlphasCumprodBitExactAsFloat32) {
  const std::string c = GetParam();
  const auto cfg = SchedulerConfig::from_file(data(c + "/scheduler/scheduler_config.json"));
  const auto ac = alphas_cumprod(cfg);
  EXPECT_EQ(ac.scalar_type(), torch::kFloat64);
  ASSERT_EQ(ac.size(0), 1000);
  EXPECT_TRUE(torch::equal(ac.to(torch::kFloat32), npy(c + "/io/sched_alphas_cumprod.npy")));
}

TEST_P(ScheduleParity, X0FromEpsInFloat64) {
  const std::string c = GetParam();
  const auto ac = alphas_cumprod(SchedulerConfig::from_file(data(c + "/scheduler/scheduler_config.json")));
  const auto t = npy(c + "/io/sched_timesteps.npy").to(torch::kLong);
  const auto x0 = x0_from_eps(npy(c + "/io/sched_x.npy"), npy(c + "/io/sched_eps.npy"), ac, t);
  EXPECT_EQ(x0.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::equal(x0, npy(c + "/io/sched_x0.npy")));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ScheduleParity, ::testing::Values("sd2", "sd1"));

TEST(Schedule, StableDiffusionValuesGleSamUses) {
  // glesam-code.md: a_1 = 0.998296, a_999 = 0.004660 for SD's schedule.
  const auto ac = alphas_cumprod(SchedulerConfig::from_file(data("configs/sd21_base_scheduler.json")));
  EXPECT_NEAR(ac[1].item<double>(), 0.998296, 5e-7);
  EXPECT_NEAR(ac[999].item<double>(), 0.004660, 5e-7);
  // z_H = 1.000853 z_L - 0.041314 eps at t = 1 (x0 of gamma z_L over gamma).
  auto one = torch::ones({1, 1, 1, 1}), zero = torch::zeros({1, 1, 1, 1});
  const auto t = torch::tensor(1, torch::kLong);
  EXPECT_NEAR(x0_from_eps(one, zero, ac, t).item<double>(), 1.000853, 1e-6);
  EXPECT_NEAR(x0_from_eps(zero, one, ac, t).item<double>(), -0.041314, 1e-6);
}

TEST(Schedule, VPredictionAndRangeChecks) {
  const auto ac = alphas_cumprod(SchedulerConfig::from_file(data("configs/sd21_base_scheduler.json")));
  auto x = torch::randn({2, 3, 2, 2}), v = torch::randn({2, 3, 2, 2});
  const auto t = torch::tensor({10, 900}, torch::kLong);
  auto a = ac.index_select(0, t).reshape({2, 1, 1, 1});
  auto ref = (a.sqrt() * x.to(torch::kFloat64) - (1 - a).sqrt() * v.to(torch::kFloat64)).to(torch::kFloat32);
  EXPECT_TRUE(torch::allclose(x0_from_output(x, v, ac, t, "v_prediction"), ref));
  EXPECT_THROW(x0_from_eps(x, v, ac, torch::tensor({0, 1000}, torch::kLong)), Error);
  EXPECT_THROW(x0_from_eps(x, v, ac.to(torch::kFloat32), t), Error);
}

TEST(Schedule, CosineAndTrainedBetas) {
  SchedulerConfig c;
  c.beta_schedule = "squaredcos_cap_v2";
  const auto cos = alphas_cumprod(c);
  EXPECT_GT(cos[0].item<double>(), 0.9999);
  EXPECT_LT(cos[999].item<double>(), 1e-3);
  SchedulerConfig tb;
  tb.num_train_timesteps = 4;
  tb.trained_betas = {0.1, 0.2, 0.3, 0.4};
  const auto ac = alphas_cumprod(tb);
  EXPECT_NEAR(ac[3].item<double>(), 0.9 * 0.8 * 0.7 * 0.6, 1e-6);
}

}  // namespace
}  // namespace rsam::diffusion
