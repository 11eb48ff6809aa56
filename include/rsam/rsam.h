// rsam's public C++ API: Segment Anything that keeps working on degraded
// images. One header, plain types in and out (8-bit RGB buffers, vectors of
// floats); LibTorch and OpenCV stay behind the library, so including this
// needs neither. Names follow the official segment_anything package
// (SamPredictor's set_image / predict / get_image_embedding / reset_image).
//
//   rsam::Model model = rsam::Model::load();          // bundled rsam-tiny + its GaRA adapter
//   rsam::Predictor predictor(model);
//   predictor.set_image(rgb, width, height);         // the expensive encoder pass
//   rsam::SegmentPrompt prompt;
//   prompt.points.push_back({120, 80});              // (x, y), label 1 = foreground
//   rsam::Masks m = predictor.predict(prompt);       // three candidates with scores
//
// Every failure (missing or corrupt file, prompt outside the image, wrong
// shape, NaN) is thrown as rsam::Error with a one-line message.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "auto_mask_options.h"

namespace rsam {

// The library's one exception type. Its definition is token for token the
// one the library throws internally (src/error.h), so what the library
// throws is what a caller catches; the library's sources define the macro.
#ifndef RSAM_ERROR_DEFINED
#define RSAM_ERROR_DEFINED
struct Error : std::runtime_error {
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};
#endif

// The library's version, "MAJOR.MINOR.PATCH" (the CMake project version).
std::string version();

// An interleaved 8-bit RGB image, row-major, width * height * 3 bytes.
struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> data;
};

// A click: (x, y) in the original image's pixels; label 1 foreground, 0 background.
struct Point {
  float x = 0, y = 0;
  int label = 1;
};

// x0, y0, x1, y1 in the original image's pixels.
struct Box {
  float x0 = 0, y0 = 0, x1 = 0, y1 = 0;
};

// One prompt: points, a box, a low-res mask, or any mix (at least one).
struct SegmentPrompt {
  std::vector<Point> points;
  std::optional<Box> box;
  // Low-res logits of a previous prediction (Masks::low_res_logits of one
  // mask): low_res_size() * low_res_size() floats, or empty for none.
  std::vector<float> mask_input;
};

// The answer to one prompt: `count` masks at the original image size.
struct Masks {
  int count = 0, height = 0, width = 0;
  std::vector<uint8_t> masks;   // [count, height, width], 0 or 1 (logits > 0)
  std::vector<float> logits;    // [count, height, width], only when return_logits was asked
  std::vector<float> scores;    // [count]: the decoder's predicted IoU (official iou_predictions)
  int low_res_size = 0;         // side of the low-res logits (256 for SAM's 1024 input)
  std::vector<float> low_res_logits;  // [count, low_res_size, low_res_size]

  const uint8_t* mask(int i) const { return masks.data() + size_t(i) * size_t(height) * size_t(width); }
  // The mask with the highest score (the first of equal ones).
  int best() const;
};

// The image embedding, [1, channels, height, width] (official get_image_embedding()).
struct Embedding {
  int channels = 0, height = 0, width = 0;
  std::vector<float> data;
};

struct ModelOptions {
  // A SAM checkpoint: official .pth (vit_b/l/h or any size), or .safetensors
  // written by rsam. Empty: the bundled rsam-tiny (found in $RSAM_MODELS,
  // <prefix>/share/rsam/models, or the source tree).
  std::string checkpoint;
  // An adapter file (rsam train --adapter). Empty with the bundled model:
  // its GaRA adapter, unless no_adapter.
  std::string adapter;
  bool no_adapter = false;
  // A GleSAM enhancer (docs/glesam.md): the JSON file describing it; its
  // U-Net restores each image embedding before the decoder. Empty: none.
  std::string enhancer;
  std::string device = "cpu";      // a torch device string: "cpu", "cuda", "cuda:1"
  // The image encoder's: "fp32", "bf16", or "auto" (the CLI's default: bf16
  // for the bundled model on a CPU with native bf16, else fp32).
  std::string precision = "fp32";
};

// A loaded SAM, with its adapter if any. Copies share the same weights.
class Model {
 public:
  // Reads the checkpoint (and adapter); rsam::Error if unreadable.
  static Model load(const ModelOptions& options = {});
  static Model load(const std::string& checkpoint);

  // Attaches an adapter file trained on this model's weights; rsam::Error
  // if it belongs to another base or an adapter is already attached.
  // Predictors made before see it from their next set_image.
  void load_adapter(const std::string& path);
  // Attaches a GleSAM enhancer (its JSON file), after any adapter: its
  // fine-tuned decoder, if it has one, replaces the model's.
  void load_enhancer(const std::string& json_path);
  // Moves the weights to a torch device ("cpu", "cuda", "cuda:1"); as
  // above, for predictors from their next set_image.
  void to(const std::string& device);

  std::string type() const;     // "vit_b", "vit_l", "vit_h", or "custom" (rsam-tiny)
  int image_size() const;       // the encoder's input side (1024 for SAM)
  std::string adapter() const;  // the adapter's method ("gara"), or "" without one
  std::string enhancer() const;  // the enhancer's JSON file, or "" without one
  std::string checkpoint() const;
  std::string device() const;
  std::string precision() const;

 private:
  friend class Predictor;
  friend class AutomaticMaskGenerator;
  struct Impl;
  explicit Model(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<Impl> impl_;
};

// The official SamPredictor: set_image once (the encoder, the expensive
// part), then any number of cheap predictions against its embedding.
class Predictor {
 public:
  explicit Predictor(const Model& model);
  ~Predictor();
  Predictor(Predictor&&) noexcept;
  Predictor& operator=(Predictor&&) noexcept;

  // Interleaved 8-bit RGB rows; stride in bytes between rows (0: width * 3).
  void set_image(const uint8_t* rgb, int width, int height, size_t stride = 0);
  void set_image(const Image& rgb);
  void reset_image();
  bool is_image_set() const;

  // multimask_output: three candidates (the official default, best for a
  // single click) instead of one. return_logits: also fill Masks::logits.
  Masks predict(const SegmentPrompt& prompt, bool multimask_output = true, bool return_logits = false) const;
  // Many prompts against the same image (official predict_torch). Prompts
  // of one shape (same point count, all or none with a box, all or none
  // with a mask input) go through the decoder together; others one by one.
  std::vector<Masks> predict_batch(const std::vector<SegmentPrompt>& prompts, bool multimask_output = true,
                                   bool return_logits = false) const;

  Embedding get_image_embedding() const;
  int original_width() const;
  int original_height() const;
  int low_res_size() const;  // side of Masks::low_res_logits and SegmentPrompt::mask_input

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// "Segment everything": the official SamAutomaticMaskGenerator's arguments
// and defaults (automatic_mask_generator.py; auto_mask_options.h).
struct AutoMaskOptions : AutoMaskArguments {
  std::string output_mode = "binary_mask";  // or "uncompressed_rle", "coco_rle"
};

// One generated mask, the official record's fields.
struct AutoMask {
  int height = 0, width = 0;
  std::vector<uint8_t> segmentation;  // binary_mask: [height, width], 0 or 1
  std::vector<uint32_t> rle_counts;   // uncompressed_rle: COCO's counts (column-major runs)
  std::string coco_counts;            // coco_rle: COCO's compressed string
  int64_t area = 0;
  std::array<int64_t, 4> bbox{};      // x, y, w, h
  double predicted_iou = 0;
  std::array<double, 2> point_coords{};
  double stability_score = 0;
  std::array<int64_t, 4> crop_box{};  // x, y, w, h
};

class AutomaticMaskGenerator {
 public:
  // rsam::Error for options the official class would refuse or misuse.
  explicit AutomaticMaskGenerator(const Model& model, const AutoMaskOptions& options = {});
  ~AutomaticMaskGenerator();
  AutomaticMaskGenerator(AutomaticMaskGenerator&&) noexcept;
  AutomaticMaskGenerator& operator=(AutomaticMaskGenerator&&) noexcept;
  // The masks in the official order.
  std::vector<AutoMask> generate(const Image& rgb) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Degradations (the Robust-Seg corruptions, LQSeg's LQ-1..3, extras).
struct CorruptionInfo {
  std::string name;     // "fog", "gauss_noise", "lq2", ...
  std::string group;    // "robustseg", "lqseg" or "extra"
  std::string summary;  // one line
  bool geometric = false;
  bool stochastic = true;  // false: the seed does not matter
};
std::vector<CorruptionInfo> list_corruptions();

// The image corrupted by `corruption` at severity 1..5 (3 is the reference
// strength); the same (image, corruption, severity, seed) gives the same bytes.
Image degrade_image(const Image& rgb, const std::string& corruption, int severity = 3, uint64_t seed = 0);

}  // namespace rsam
