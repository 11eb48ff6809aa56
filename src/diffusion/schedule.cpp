#include "diffusion/schedule.h"

#include <cmath>

#include "error.h"

namespace rsam::diffusion {

using torch::Tensor;

namespace {

// diffusers' betas_for_alpha_bar (cosine): computed in double, stored float32.
Tensor cosine_betas(int64_t n) {
  auto alpha_bar = [](double t) { return std::pow(std::cos((t + 0.008) / 1.008 * M_PI / 2), 2); };
  std::vector<float> betas(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const double t1 = double(i) / double(n), t2 = double(i + 1) / double(n);
    betas[size_t(i)] = float(std::min(1 - alpha_bar(t2) / alpha_bar(t1), 0.999));
  }
  return torch::tensor(betas, torch::kFloat32);
}

Tensor alpha_at(const Tensor& alphas_cumprod, const Tensor& t_in, int64_t batch, int64_t dims) {
  if (alphas_cumprod.scalar_type() != torch::kFloat64) throw Error("alphas_cumprod must be float64");
  auto t = t_in.dim() == 0 ? t_in.reshape({1}) : t_in;
  if (t.dim() != 1 || (t.size(0) != batch && t.size(0) != 1)) throw Error("timesteps must be a scalar or [B]");
  t = t.to(torch::kLong).to(alphas_cumprod.device());
  const int64_t n = alphas_cumprod.size(0);
  if (t.numel() && (t.min().item<int64_t>() < 0 || t.max().item<int64_t>() >= n))
    throw Error("timestep out of the schedule's range [0, " + std::to_string(n - 1) + "]");
  std::vector<int64_t> shape(size_t(dims), 1);
  shape[0] = t.size(0);
  return alphas_cumprod.index_select(0, t).reshape(shape);
}

}  // namespace

Tensor alphas_cumprod(const SchedulerConfig& c) {
  c.validate();
  const int64_t n = c.num_train_timesteps;
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat32);
  Tensor betas;
  if (!c.trained_betas.empty()) {
    betas = torch::tensor(c.trained_betas, torch::kFloat64).to(torch::kFloat32);
  } else if (c.beta_schedule == "linear") {
    betas = torch::linspace(c.beta_start, c.beta_end, n, f32);
  } else if (c.beta_schedule == "scaled_linear") {
    // Square roots taken in double (Python floats), the ramp in float32.
    betas = torch::linspace(std::sqrt(c.beta_start), std::sqrt(c.beta_end), n, f32).pow(2);
  } else {
    betas = cosine_betas(n);
  }
  auto alphas = 1.0 - betas;
  return torch::cumprod(alphas, 0).to(torch::kFloat64);
}

Tensor x0_from_eps(const Tensor& x, const Tensor& eps, const Tensor& ac, const Tensor& t) {
  if (x.sizes() != eps.sizes()) throw Error("x0_from_eps: x and eps differ in shape");
  const auto a = alpha_at(ac, t, x.size(0), x.dim()).to(x.device());
  const auto beta = 1 - a;
  return ((x.to(torch::kFloat64) - beta.pow(0.5) * eps.to(torch::kFloat64)) / a.pow(0.5)).to(torch::kFloat32);
}

Tensor x0_from_output(const Tensor& x, const Tensor& out, const Tensor& ac, const Tensor& t, const std::string& type) {
  if (type == "epsilon") return x0_from_eps(x, out, ac, t);
  if (x.sizes() != out.sizes()) throw Error("x0_from_output: x and the model output differ in shape");
  if (type == "sample") return out.to(torch::kFloat32);
  if (type != "v_prediction") throw Error("unknown prediction_type '" + type + "'");
  const auto a = alpha_at(ac, t, x.size(0), x.dim()).to(x.device());
  return (a.pow(0.5) * x.to(torch::kFloat64) - (1 - a).pow(0.5) * out.to(torch::kFloat64)).to(torch::kFloat32);
}

}  // namespace rsam::diffusion
