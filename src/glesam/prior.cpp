#include "glesam/prior.h"

#include <cmath>
#include <filesystem>

#include "diffusion/config.h"
#include "error.h"
#include "io/fs.h"
#include "io/tensor_file.h"
#include "model/autocast.h"
#include "model/checkpoint.h"

namespace rsam::glesam {

namespace fs = std::filesystem;
using torch::Tensor;

Tensor latents_from_embedding(const Tensor& z, double scale) {
  if (!z.defined() || z.dim() != 4 || z.size(1) < 4 || z.size(1) % 4 != 0)
    throw Error("a prior latent is made from an embedding [B, C, h, w] with C a positive multiple of 4");
  if (!std::isfinite(scale) || scale <= 0) throw Error("the latent scale must be finite and > 0");
  // Channel c = 4 k + j lands in group j: CRE's tiling order.
  const auto s = z.sizes();
  return z.to(torch::kFloat32).reshape({s[0], s[1] / 4, 4, s[2], s[3]}).mean(1) / scale;
}

void init_unet(diffusion::UNet2DConditionModel& unet) {
  torch::NoGradGuard ng;
  for (const auto& m : unet->modules(true)) {
    auto params = m->named_parameters(false);
    const Tensor* w = params.find("weight");
    const Tensor* b = params.find("bias");
    if (w == nullptr) continue;
    if (w->dim() >= 2) {
      torch::nn::init::kaiming_uniform_(*w, std::sqrt(5.0));
      if (b != nullptr) {
        const double bound = 1.0 / std::sqrt(double(w->numel() / w->size(0)));
        b->uniform_(-bound, bound);
      }
    } else {
      w->fill_(1.0);
      if (b != nullptr) b->zero_();
    }
  }
}

Tensor prior_loss(diffusion::UNet2DConditionModel& unet, const Tensor& alphas_cumprod, const Tensor& text_embedding,
                  const Tensor& x0, const Tensor& t, const Tensor& noise, bool bf16) {
  const auto shape = std::vector<int64_t>{x0.size(0), 1, 1, 1};
  const Tensor a = alphas_cumprod.to(x0.device()).index_select(0, t).to(torch::kFloat32).view(shape);
  const Tensor xt = a.sqrt() * x0 + (1 - a).sqrt() * noise;
  Tensor eps;
  {
    Bf16Autocast ac(x0.device(), bf16);
    eps = unet->forward(xt, t, text_embedding.to(x0.device()));
  }
  return torch::mse_loss(eps.to(torch::kFloat32), noise);
}

PriorTemplate read_prior_template(const std::string& folder) {
  PriorTemplate p;
  p.folder = folder;
  const std::string unet = folder + "/unet/config.json", sched = folder + "/scheduler/scheduler_config.json";
  p.text_embedding_path = folder + "/text_embedding.npy";
  for (const auto& f : {unet, sched, p.text_embedding_path})
    if (!fs::is_regular_file(f)) throw Error("the prior's template " + folder + " has no " + f);
  p.unet_config_text = diffusion::read_text_file(unet);
  p.scheduler_text = diffusion::read_text_file(sched);
  diffusion::UNetConfig::from_json(p.unet_config_text, unet).validate();
  diffusion::SchedulerConfig::from_json(p.scheduler_text, sched).validate();
  return p;
}

void write_sd_folder(const std::string& out, diffusion::UNet2DConditionModel& unet, const PriorTemplate& tpl) {
  fs::create_directories(fs::path(out) / "unet");
  fs::create_directories(fs::path(out) / "scheduler");
  io::save_safetensors(out + "/unet/diffusion_pytorch_model.safetensors", state_dict_of(*unet), {{"format", "pt"}});
  io::write_text(out + "/unet/config.json", tpl.unet_config_text);
  io::write_text(out + "/scheduler/scheduler_config.json", tpl.scheduler_text);
  const std::string text = diffusion::read_text_file(tpl.text_embedding_path);
  io::write_atomic(out + "/text_embedding.npy", text.data(), text.size());
}

}  // namespace rsam::glesam
