// The library's main entry point, mirroring the official SamPredictor:
// set_image once (the expensive encoder pass), then any number of cheap
// prompt decodes against the cached embedding.
#pragma once

#include <torch/torch.h>

#include <array>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "model/image.h"
#include "model/sam.h"

namespace rsam {

enum class Precision { FP32, BF16 };
Precision parse_precision(const std::string& s);  // "fp32" | "bf16"
// A precision flag's value, "auto" included: auto is bf16 where the CPU
// runs bf16 natively (AVX512-BF16 or AMX) and `bf16_agrees` (the model's
// bf16 masks were measured to agree with its fp32 ones: the bundled
// rsam-tiny, docs/performance.md), fp32 otherwise.
Precision resolve_precision(const std::string& s, bool bf16_agrees);
const char* precision_name(Precision p);            // the inverse

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
const char* pick_name(Pick p);           // the inverse
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
  // A transform set_image applies to every embedding it computes (both
  // views with flip) before any decode: a GleSAM enhancer (src/glesam).
  // An empty function removes it.
  void set_embedding_hook(std::function<torch::Tensor(const torch::Tensor&)> hook) { hook_ = std::move(hook); }

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
  // The decoder's image-only terms for the embedding (made by set_image /
  // set_embedding from the decoder's weights at that moment): callers that
  // run model()->mask_decoder->forward themselves on prompts without a mask
  // input pass &decoder_cache() as its last argument.
  const DecoderImageCache& decoder_cache() const { return cache_; }
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
  // A decode before the full-resolution step: each view's low-res logits
  // and scores (the mirrored view's undefined without flip).
  struct LowRes {
    torch::Tensor low_res, iou, flow, fiou;
    LowRes narrow(int64_t dim, int64_t start, int64_t length) const;
  };
  LowRes decode_scaled(const torch::Tensor& pts, const torch::Tensor& labels, const torch::Tensor& boxes,
                       const torch::Tensor& masks, bool multimask_output) const;
  LowRes decode_prompt(const Prompt& p, bool multimask_output) const;
  // The views averaged and upsampled to the original size.
  Prediction finish(const LowRes& d, bool return_logits) const;
  // Low-res logits and scores of the views averaged (what picking reads).
  std::pair<torch::Tensor, torch::Tensor> combined(const LowRes& d) const;
  void prepare_decoder();
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
  torch::Tensor dense_pe_;
  DecoderImageCache cache_, cache_flipped_;
  std::function<torch::Tensor(const torch::Tensor&)> hook_;
  std::pair<int64_t, int64_t> original_size_{0, 0}, input_size_{0, 0};
};

}  // namespace rsam
