// `rsam train`: flag parsing over train::train; with --nproc, the copies
// of the program are started by train::launch_local.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>

#include "app/commands.h"
#include "app/enum_flags.h"
#include "app/flags.h"
#include "data/dataset.h"
#include "error.h"
#include "glesam/train.h"
#include "train/distributed.h"
#include "train/trainer.h"

namespace rsam::app {

void add_train_command(CLI::App& app) {
  auto o = std::make_shared<train::TrainOptions>();
  auto* c = app.add_subcommand("train", "Train an adapter (or, with --full, every weight) on corrupted data");
  c->add_option("--checkpoint", o->checkpoint, "Base SAM checkpoint");
  c->add_option("--init", o->init,
                "With --full: start from random weights of this config (JSON file or vit_b|vit_l|vit_h)");
  c->add_option("--data", o->data, "Dataset spec: folder:IMAGES,MASKS | coco:ANN.json,IMAGES | sa1b:DIR | ...")
      ->required();
  c->add_option("--val", o->val, "Validation dataset spec (box-prompt IoU at the end)");
  c->add_option("--adapter", o->adapter,
                "Method name (gara, lora, moe_lora, conv_lora, ssf, adapter, bitfit, "
                "decoder_only) or a JSON config file");
  c->add_flag("--train-decoder", o->train_decoder, "Also fine-tune the mask decoder");
  c->add_flag("--full", o->full, "Train every weight (pre-training small models)");
  c->add_option("--trainable", o->trainable,
                "With --full: train only weights under these name prefixes, e.g. mask_decoder.iou_prediction_head");
  c->add_option("--corruption", o->corruption, "robustseg | lq | none | NAME,... (drawn per sample)");
  c->add_option("--severity", o->severity, "1..5 or random")->transform(severity_names());
  c->add_option("--clean-ratio", o->clean_ratio, "Share of samples left clean");
  c->add_option("--prompts", o->prompts, "Prompt kinds drawn per sample, e.g. points:3,box");
  c->add_option("--steps", o->steps, "Optimizer steps");
  c->add_option("--epochs", o->epochs, "Epochs (instead of --steps)");
  c->add_option("--batch", o->batch, "Images per micro-batch");
  c->add_option("--masks-per-image", o->masks_per_image,
                "Objects of the same image decoded per encoding (COCO, instances)");
  c->add_option("--iterative-points", o->iterative_points,
                "Interactive rounds per object: a corrective click from the last mask's error, plus that mask");
  c->add_option("--rank-loss", o->rank_loss,
                "Weight of a pairwise ranking loss on the predicted IoUs of a single point's three masks");
  c->add_option("--occluded-weight", o->occluded_weight,
                "Loss weight of an object whose mask is in several pieces (cut by another object)");
  c->add_option("--consistency", o->consistency,
                "Weight of the MSE between the adapted embedding and the frozen base's embedding of the clean image");
  c->add_option(
       "--iou-target", o->iou_target,
       "Where the IoU that the scores learn is measured: input (resolution, as evaluated) or lowres (mask grid)")
      ->check(CLI::IsMember({"input", "lowres"}));
  c->add_option("--accum", o->accum, "Micro-batches per optimizer step");
  c->add_option("--optimizer", o->optimizer, "adam or adamw");
  c->add_option("--lr", o->lr, "Peak learning rate");
  c->add_option("--wd", o->wd, "Weight decay");
  c->add_option("--clip", o->clip, "Gradient-norm clip (0 = off)");
  c->add_option("--warmup", o->warmup, "Linear warm-up steps before cosine decay");
  c->add_option("--precision", o->precision, "fp32 or bf16 (autocast)")->transform(precision_names());
  c->add_flag("--grad-checkpoint", o->grad_checkpoint,
              "Recompute encoder blocks (GleSAM: U-Net blocks) in backward (less memory)");
  c->add_option("--seed", o->seed, "Seed for data order, corruptions, prompts and init")->check(kSeed);
  c->add_option("--out", o->out, "Output directory");
  c->add_flag("--resume", o->resume, "Continue the run in OUT (from OUT/checkpoint.pt), with the same options");
  c->add_flag("--overwrite", o->overwrite, "Replace the run in OUT: its files are removed first");
  c->add_option("--save-every", o->save_every, "Checkpoint every N steps");
  c->add_option("--threads", o->threads, "Intra-op threads per process (default: all cores, shared by --nproc)");
  c->add_option("--workers", o->workers, "Data loading threads");
  // GleSAM (issue 40): with --enhancer, one of its two stages instead of an adapter.
  auto g = std::make_shared<glesam::GlesamTrainOptions>();
  c->add_option("--enhancer", g->enhancer,
                "GleSAM: train a stage of this enhancer (E.json: SD folder, gamma, timestep; stage 2: its LoRA)");
  c->add_option("--glesam-stage", g->stage,
                "GleSAM stage: unet (1, the U-Net LoRA), decoder (2), or prior (a small U-Net pre-trained "
                "from random weights, --init TEMPLATE_FOLDER; docs/glesam.md)")
      ->check(CLI::IsMember({"prior", "unet", "decoder"}));
  c->add_option("--prior-crop", g->prior_crop, "GleSAM prior: random square latent crops of this side (0 = whole)");
  c->add_option("--embedding-cache", g->embedding_cache,
                "GleSAM: cache the frozen encoder's clean-image embeddings in this folder");
  c->add_option("--lora-rank", g->lora_rank, "GleSAM stage 1: LoRA rank (8)");
  c->add_option("--lora-alpha", g->lora_alpha, "GleSAM stage 1: LoRA alpha (8)");
  c->add_flag("--decoder-iou", g->decoder_iou, "GleSAM stage 2: also train the IoU token and head");
  auto nproc = std::make_shared<int>(1);
  c->add_option("--nproc", *nproc,
                "Data-parallel processes on this machine (c10d Gloo); each takes its share of every batch");
  c->add_flag("--quiet", o->quiet, "No progress output");
  c->callback([o, g, nproc, c] {
    // With --nproc (and not yet a rank): bad options fail here, once, rather
    // than in every rank; then this command runs as the ranks.
    const auto launch = [&](const std::function<void()>& check) {
      if (*nproc == 1 || train::started_as_rank()) return;
      check();
      if (*nproc < 1) throw Error("--nproc must be >= 1");
      if (!train::distributed_available())
        throw Error("this rsam was built without c10d's Gloo backend (install libgloo-dev and rebuild)");
      if (!o->checkpoint.empty() && !std::ifstream(o->checkpoint).good())
        throw Error("cannot read checkpoint '" + o->checkpoint + "'");
      data::open_dataset(o->data);
      std::fflush(stdout);
      std::exit(train::launch_local(*nproc, program_argv()));
    };
    if (!g->enhancer.empty() || g->stage == "prior") {
      g->base = *o;
      if (g->stage == "prior") std::swap(g->prior_init, g->base.init);  // the prior's template folder
      // GleSAM's stage 2 trains with 3 random points (its released code);
      // boxes only when asked for.
      if (c->count("--prompts") == 0) g->base.prompts = "points:3";
      launch([&] { glesam::check_train_options(*g); });
      const auto r = glesam::train_glesam(*g);
      if (!r.wrote_outputs) return;  // a rank above 0: rank 0 reports
      std::printf("trained %lld steps, last loss %.4f -> %s (%s)\n", (long long)r.steps, r.last_loss,
                  r.weights_path.c_str(), r.enhancer_path.c_str());
      return;
    }
    launch([&] {
      train::check_options(*o);
      train::check_output_folder(*o);
    });
    auto r = train::train(*o);
    if (!r.wrote_outputs) return;  // a rank above 0: rank 0 reports
    std::printf("trained %lld steps, last loss %.4f -> %s\n", (long long)r.steps, r.last_loss, r.weights_path.c_str());
    if (r.val_iou >= 0) std::printf("validation box IoU %.4f\n", r.val_iou);
  });
}


}  // namespace rsam::app
