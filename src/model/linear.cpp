#include "model/linear.h"

#include <cmath>

#include "model/gemm.h"

namespace rsam {

namespace {
thread_local bool t_skip_init = false;
}

SkipLinearInit::SkipLinearInit() : previous_(t_skip_init) { t_skip_init = true; }
SkipLinearInit::~SkipLinearInit() { t_skip_init = previous_; }

AdaptableLinearImpl::AdaptableLinearImpl(int64_t in, int64_t out, bool with_bias)
    : in_features(in), out_features(out) {
  // Same initialization as torch::nn::Linear (kaiming-uniform, a=sqrt(5)).
  weight = register_parameter("weight", torch::empty({out, in}));
  if (!t_skip_init) torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (with_bias) {
    const double bound = 1.0 / std::sqrt(double(in));
    bias = register_parameter("bias", t_skip_init ? torch::empty({out}) : torch::empty({out}).uniform_(-bound, bound));
  }
}

torch::Tensor AdaptableLinearImpl::forward(const torch::Tensor& x) {
  if (adapter) return adapter->forward(x, weight, bias, context);
  return gemm::linear(x, weight, bias);
}

void AdaptableLinearImpl::attach(std::shared_ptr<LinearAdapter> a) {
  if (adapter) unregister_module("adapter");
  adapter = register_module("adapter", std::move(a));
}

void AdaptableLinearImpl::detach() {
  if (!adapter) return;
  unregister_module("adapter");
  adapter = nullptr;
}

}  // namespace rsam
