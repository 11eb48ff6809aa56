// Prompt specifications and deterministic prompt sampling from a GT mask.
//
// Grammar of a prompt list (parse_prompts), comma-separated:
//   point:K | points:K        K positive points (K >= 1) drawn uniformly among
//                             the mask's pixels, distinct while the mask has K
//   points:K+neg:J            ... plus J negative points from outside the mask
//   center | point:center     one positive point at the mask's "center": the
//                             pixel deepest inside it (maximal interior
//                             distance), the single-point protocol of the SAM
//                             paper and RITM; deterministic, no draw
//   box                       the tight GT box
//   noisy-box[:S]             the GT box, each coordinate plus N(0, S*side),
//                             side = box width for x0/x1, height for y0/y1
//                             (S defaults to 0.2, the HQ-SAM/GleSAM setting);
//                             clipped to the image, corners re-ordered if crossed
//   mix:A|B|...               one of the alternatives per sample, uniformly
//                             (e.g. mix:points:1|box|noisy-box)
//   clicks:N                  interactive: the point points:1 draws, then N-1
//                             corrective clicks that the evaluator places from
//                             each prediction's error (next_click); sampling
//                             gives the first click only
//
// Coordinates are pixel indices as float (a point at pixel (x, y) is (x, y),
// as SAM's examples pass them); a box is (x0, y0, x1, y1) with x1/y1 the
// largest object column/row, inclusive. Box extents are x1 - x0 and y1 - y0
// (at least 1 for a one-pixel box).
//
// sample_prompt draws only from a generator seeded by (seed, sample_key,
// spec text): no global state, so every method evaluated with the same seed
// and key sees the same prompt, whatever the call order or thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

namespace rsam::data {

struct PromptSpec {
  enum class Kind { Points, Box, NoisyBox, Mix, Clicks, Center };
  Kind kind = Kind::Box;
  int positives = 0;                // Points
  int clicks = 0;                   // Clicks: total clicks, the first included
  int negatives = 0;                // Points
  double noise_scale = 0.2;         // NoisyBox
  std::vector<PromptSpec> choices;  // Mix
  std::string text;                 // canonical spelling, e.g. "points:3+neg:1"; part of the seed
};

struct SampledPrompt {
  std::vector<cv::Point2f> points;
  std::vector<int> labels;  // 1 = positive, 0 = negative; one per point
  bool has_box = false;
  cv::Vec4f box;     // x0, y0, x1, y1 (inclusive maxima)
  std::string kind;  // the spec text actually used (a Mix reports its pick)
};

// rsam::Error (one line, naming the bad element) on a malformed list.
PromptSpec parse_prompt(const std::string& one);
std::vector<PromptSpec> parse_prompts(const std::string& list);

// `mask` is CV_8UC1 (nonzero = object). rsam::Error if it has no object
// pixel, or negatives are asked for and it has no background pixel.
SampledPrompt sample_prompt(const cv::Mat& mask, const PromptSpec& spec, uint64_t seed, uint64_t sample_key);

// The standard interactive-segmentation click (as RITM/SimpleClick evaluate):
// at the pixel deepest inside the larger error region of `pred` against `gt`
// (both CV_8UC1, nonzero = object, same size), distances measured with the
// image border counting as outside; positive (label 1) when that region is
// missed object, negative (0) when it is false mask. Deterministic (first
// maximum in raster order). False when pred == gt.
bool next_click(const cv::Mat& pred, const cv::Mat& gt, cv::Point* at, int* label);

// The pixel deepest inside `mask` (CV_8UC1, nonzero = object), the image
// border counting as outside: the first click of the standard protocol
// (next_click against an empty prediction). rsam::Error if the mask is empty.
cv::Point mask_center(const cv::Mat& mask);

// True for prompts that are one positive point (points:1, center): the
// prompts whose ambiguity SAM answers with three masks.
bool is_single_point(const PromptSpec& spec);

// The tight box of a mask's nonzero pixels; rsam::Error if there are none.
cv::Vec4f mask_box(const cv::Mat& mask);

}  // namespace rsam::data
