// Training of adapters (or of the whole model, for pre-training small SAMs)
// on corrupted data, with checkpoints that survive a kill: a resumed run
// ends with the same weights as an uninterrupted one.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <string>

#include "data/prompts.h"
#include "model/predictor.h"
#include "model/sam.h"

namespace rsam::train {

struct TrainOptions {
  std::string checkpoint;        // base SAM
  std::string init;              // with full and no checkpoint: random weights of this config (JSON file or preset)
  std::string data;              // dataset spec (data/dataset.h)
  std::string val;               // optional validation spec
  std::string adapter = "gara";  // method name or JSON config file; ignored with full
  bool train_decoder = false;
  bool full = false;                     // train every weight (pre-training)
  std::string trainable;                 // with full: only parameters under these comma-separated name prefixes
  std::string corruption = "robustseg";  // loader corruption list, "none" for clean
  int severity = 3;                      // 1..5, 0 = random per item
  double clean_ratio = 0.0;
  std::string prompts = "points:3,box";  // one is drawn per sample (mix)
  int64_t steps = 0, epochs = 0;         // one of them
  int batch = 1, accum = 1;
  int masks_per_image = 1;   // objects decoded per image encoding (datasets with several per image)
  int iterative_points = 0;  // SAM's interactive rounds: corrective clicks + the previous mask, per object
  double rank_loss = 0;      // weight of train::iou_rank_loss over a single point's three candidates
  // Weight of an object whose mask is in several pieces (another object cuts
  // it) in the per-mask mean: the objects rsam-tiny fits worst (docs/rsam-tiny.md).
  double occluded_weight = 1;
  // Weight of RobustSAM's consistency term (adapters only): the mean squared
  // difference between the adapted model's embedding of the input (corrupted
  // or not) and the frozen base's embedding of the same image clean, so the
  // adapter learns to undo the corruption and to leave clean images alone.
  double consistency = 0;
  std::string iou_target = "input";  // where the IoU the scores learn is measured: input (as evaluated) | lowres
  std::string optimizer = "adam";    // adam | adamw
  double lr = 1e-4, wd = 1e-5, clip = 1.0;
  int64_t warmup = 0;  // linear warm-up steps, then cosine decay to lr * min_lr_ratio
  double min_lr_ratio = 0.0;
  Precision precision = Precision::FP32;
  bool grad_checkpoint = false;
  uint64_t seed = 0;
  std::string out = "runs/train";
  // A folder that holds another run is refused unless the run is resumed
  // (with the same options) or overwritten (its files removed first).
  bool resume = false;
  bool overwrite = false;
  int64_t save_every = 50;
  int threads = 0, workers = 2;
  int64_t val_samples = 64;
  bool quiet = false;
  // Join the data-parallel group torchrun's variables name, if any (false:
  // a process that runs its own, independent training, as a study's ranks do).
  bool distributed = true;
};

struct TrainResult {
  int64_t steps = 0;
  int64_t start_step = 0;  // above 0 when resumed from a checkpoint
  double last_loss = 0;
  std::string weights_path;  // adapter.safetensors or model.safetensors
  double val_iou = -1;
  bool wrote_outputs = true;  // false on data-parallel ranks above 0
};

// Under torchrun's environment variables (RANK, WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT) the call is one rank of a data-parallel run (train/distributed.h):
// the same options on every rank give the same weights as one process would
// with the same global batch; only rank 0 writes to `out`, and it holds the
// folder's lock (io::FolderLock) for the whole run, so a second run into the
// same folder is refused. Weights are checked finite before every save; a
// failed save leaves the last complete checkpoint and weights as they were.
TrainResult train(const TrainOptions& opts);
// The checks train() starts with: rsam::Error on inconsistent options.
void check_options(const TrainOptions& opts);
// The checks of the output folder train() makes (on rank 0) before any
// work, read-only: rsam::Error when a file the run writes is one of its
// inputs (the base checkpoint, the adapter or init config), or when `out`
// holds another run and neither resume (with the same options) nor
// overwrite is set. train() makes them again once it holds the folder's
// lock; a launcher calls this to fail before it starts any rank.
void check_output_folder(const TrainOptions& opts);

// The differentiable image-encoder pass, optionally recomputing each block
// in the backward pass instead of storing its activations.
torch::Tensor encode_for_training(Sam& model, const torch::Tensor& images, bool grad_checkpoint);

// Gradient checkpointing of one block (torch.utils.checkpoint): fn(inputs)
// runs without keeping its activations, and the backward pass runs it again
// (same generator state and autocast setting) to backpropagate through it.
// fn is kept until then: what it captures must outlive the backward pass.
using BlockFn = std::function<std::vector<torch::Tensor>(const std::vector<torch::Tensor>&)>;
std::vector<torch::Tensor> grad_checkpoint(const BlockFn& fn, const std::vector<torch::Tensor>& inputs);

// Lays a sample out as the predictor does (longest side resized with PIL's
// bilinear filter, normalized, padded) and returns the image [3,S,S], the
// soft target at low-res mask resolution [4g,4g], and the prompt converted
// into the resized frame; also the target at input resolution.
struct ModelSample {
  torch::Tensor image, target, points, labels, box;  // points [1,K,2], labels [1,K], box [1,4]; undefined if absent
  torch::Tensor input_target;                        // the mask at input resolution, padding cut [nh,nw], uint8 0/1
  bool ambiguous = false;                            // a single point: train the best of 3 masks
  bool pieces = false;                               // the mask has two or more 4-connected parts
};
// An RGB image as the model takes it: longest side resized with PIL's
// bilinear filter, normalized, padded; [3,S,S] on the model's device.
torch::Tensor model_input(const Sam& model, const cv::Mat& rgb);
// Whether a 0/1 (or 0/255) mask has two or more 4-connected parts.
bool in_pieces(const cv::Mat& mask);
// With with_image false, `image` is left undefined (another object of an
// image already laid out: only its target and prompt are needed).
ModelSample to_model_sample(const Sam& model, const cv::Mat& rgb, const cv::Mat& mask01,
                            const data::SampledPrompt& prompt, bool with_image = true);

// SAM's iterative training adds a click where the last mask is wrong: a pixel
// drawn uniformly (torch's default generator) from the error region of
// `logits` [H,W] against `target` [H,W] (soft, > 0.5 = object). Positive in a
// missed part, negative in a false one; (x, y) in the model's input frame
// (`img_size` pixels across the low-res grid). False when there is no error.
struct Click {
  float x = 0, y = 0;
  int label = 1;
};
bool corrective_click(const torch::Tensor& logits, const torch::Tensor& target, int img_size, Click* out);

}  // namespace rsam::train
