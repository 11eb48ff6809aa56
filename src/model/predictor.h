// The library's main entry point, mirroring the official SamPredictor:
// set_image once (the expensive encoder pass), then any number of cheap
// prompt decodes against the cached embedding.
#pragma once

#include <torch/torch.h>

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "model/image.h"
#include "model/sam.h"

namespace rsam {

enum class Precision { FP32, BF16 };
Precision parse_precision(const std::string& s);  // "fp32" | "bf16"

struct Prompt {
  std::vector<std::array<float, 2>> points;  // (x, y) in original-image pixels
  std::vector<int> labels;                   // 1 foreground, 0 background
  std::optional<std::array<float, 4>> box;   // x0, y0, x1, y1
  torch::Tensor mask_input;                  // optional low-res logits [1, 4h, 4w]
};

struct Prediction {
  torch::Tensor masks;            // [M, H, W] bool (or float logits) at the original size
  torch::Tensor iou_predictions;  // [M]
  torch::Tensor low_res_logits;   // [M, 4h, 4w]
};

// More points than this in one prompt are refused: the decoder's memory grows
// with them, and SAM was trained with a handful.
constexpr size_t kMaxPromptPoints = 256;
// The prompt's own checks against the image size, for callers that want to
// refuse a bad prompt before the model is loaded and the image encoded:
// labels, finite values, points and box inside, the point count. The mask
// input's shape is checked when `mask_side` is known (> 0).
void check_prompt(const Prompt& p, int width, int height, int64_t mask_side = 0);

// One point alone, without a box or a mask input: the prompt SAM answers
// with three candidate masks.
bool is_ambiguous(const Prompt& p);

// How one mask is picked from several. Score: the decoder's predicted IoU,
// as SAM's demo does. Stability: SAM's stability score (below), which the
// automatic mask generator filters with; it needs no trained head. On
// rsam-tiny it picked better on some held-out sets and not on the whole of
// another (docs/rsam-tiny.md, One-point ranking), so Score is the default.
enum class Pick { Score, Stability };
Pick parse_pick(const std::string& s);  // "score" | "stability"
// SAM's stability score per mask (calculate_stability_score): the pixels
// with logit > +offset over those with logit > -offset, i.e. the IoU of the
// mask thresholded on either side of 0. 0 for a mask with no such pixels.
// logits [M, h, w] -> [M] float.
torch::Tensor stability_scores(const torch::Tensor& logits, float offset = 1.0f);
// The index of the picked mask (the first of equal values), and that mask
// as a one-mask prediction: SAM's pick among the three candidates. The
// stability is measured on the low-res logits.
int64_t best_index(const Prediction& r, Pick pick = Pick::Score);
Prediction best_of(const Prediction& r, Pick pick = Pick::Score);

class SamPredictor {
 public:
  // flip: test-time augmentation. set_image also encodes the mirrored image;
  // every decode runs on both views (the prompts mirrored) and averages the
  // logits and predicted IoUs, the mirrored view's flipped back. Twice the
  // encode, twice the decode; off by default, as in SAM.
  explicit SamPredictor(Sam model, Precision precision = Precision::FP32, bool flip = false);

  // RGB, any size. Resizes the longest side to the model size exactly as the
  // reference (PIL bilinear), normalizes, pads, encodes.
  void set_image(const Image8& rgb);
  // Embedding computed elsewhere (e.g. a GleSAM enhancer); original_size is
  // the image's (h, w). There is no mirrored view of it, so decodes against
  // it are single-view even with flip on.
  void set_embedding(const torch::Tensor& embedding, std::pair<int64_t, int64_t> original_size);

  // One prompt set. Throws rsam::Error on prompts outside the image, NaNs,
  // wrong mask-input shape or an unset image.
  Prediction predict(const Prompt& prompt, bool multimask_output = true, bool return_logits = false) const;
  // One mask for the prompt. An ambiguous prompt (is_ambiguous) is decoded
  // as SAM's authors advise even when one mask is wanted: three masks, the
  // picked kept (best_of); any other prompt gets the single-mask output.
  Prediction predict_one(const Prompt& prompt, bool return_logits = false, Pick pick = Pick::Score) const;

  // Cascaded post-refinement (PerSAM's): the prompt decoded again with the
  // mask of `picked` (a one-mask prediction, e.g. predict_one's) as the mask
  // input, `rounds` times, single-mask output each time. Costs a decode per
  // round and no encode; it helps models trained with mask inputs (SAM's
  // interactive rounds, rsam-tiny), so it is a choice, not a default.
  // rsam::Error if `picked` holds more than one mask or rounds < 0.
  Prediction refine(const Prompt& prompt, const Prediction& picked, int rounds = 1, bool return_logits = false) const;

  // Many prompt sets at once (official predict_torch): coordinates already
  // in the original image's pixel space; any argument may be undefined.
  // points [N,K,2], labels [N,K], boxes [N,4], mask_input [N,1,4h,4w].
  // Returns masks [N,M,H,W], iou [N,M], low-res [N,M,4h,4w].
  Prediction predict_batch(const torch::Tensor& points, const torch::Tensor& labels, const torch::Tensor& boxes,
                           const torch::Tensor& mask_input, bool multimask_output = true,
                           bool return_logits = false) const;

  const torch::Tensor& embedding() const;  // [1, C, h, w]
  bool has_image() const { return features_.defined(); }
  std::pair<int64_t, int64_t> original_size() const { return original_size_; }
  std::pair<int64_t, int64_t> input_size() const { return input_size_; }
  const Sam& model() const { return model_; }
  Precision precision() const { return precision_; }
  bool flip() const { return flip_; }

  // Encoder alone (preprocessed [B,3,S,S] in, embedding out) under the
  // predictor's precision; used by bench and training code.
  torch::Tensor encode(const torch::Tensor& preprocessed) const;
  // uint8 RGB -> resized [1,3,h,w] float tensor, as set_image feeds it.
  torch::Tensor prepare_image(const Image8& rgb) const;

 private:
  void check_prompt(const Prompt& p) const;
  // Coordinates already in the resized input frame (official predict_torch).
  Prediction predict_batch_scaled(const torch::Tensor& pts, const torch::Tensor& labels, const torch::Tensor& boxes,
                                  const torch::Tensor& masks, bool multimask_output, bool return_logits) const;
  // Mirrors a low-res [.., 4h, 4w] map's columns inside the image's part of
  // the padded frame (exact when the resized width is a multiple of 4).
  torch::Tensor flip_low_res(const torch::Tensor& t) const;
  // Forward passes are logically const (eval mode, no state), but torch's
  // module API is not const-qualified.
  mutable Sam model_;
  Precision precision_;
  bool flip_ = false;
  torch::Tensor features_, features_flipped_;
  std::pair<int64_t, int64_t> original_size_{0, 0}, input_size_{0, 0};
};

}  // namespace rsam
