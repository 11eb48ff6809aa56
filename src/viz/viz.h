// Pictures rsam writes: mask overlays, the adapter gate figure and the PNG
// charts of training and evaluation. OpenCV only (no torch), so the data,
// train and eval layers and the CLI all draw through the same code.
// Every function returns the picture; write it with io::write_image
// (src/io/image_codec.h), which encodes by the file name's extension.
#pragma once

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace rsam::viz {

// The prompts drawn on an overlay, in pixel coordinates of the image.
struct PromptMarks {
  std::vector<std::array<float, 2>> points;
  std::vector<int> labels;  // 1 foreground (green dot), else background (red dot)
  std::optional<std::array<float, 4>> box;  // x0, y0, x1, y1 (yellow outline)
};

// The image (8-bit, 3 channels, RGB) with the mask (0/non-zero, row-major,
// rows x cols) tinted, its edge white and the prompts drawn. RGB out.
cv::Mat mask_overlay(const cv::Mat& rgb, const uint8_t* mask, const PromptMarks& prompts);

// "Segment everything" overlay: every mask (CV_8U, nonzero = in, the image's
// size) blended in its own colour, the largest first so small masks stay on
// top, each outlined in a darker shade of its colour. RGB in, RGB out.
cv::Mat masks_overlay(const cv::Mat& rgb, const std::vector<cv::Mat>& masks);

// A demo tile: the image (RGB) with a mask (0/1, CV_8U, may be empty) blended
// in `tint` and outlined, enlarged to about 384 px, the prompt point drawn
// (none when pt.x < 0) and a caption bar above.
cv::Mat caption_tile(const cv::Mat& rgb, const cv::Mat& mask01, cv::Point pt, const std::string& caption,
                     const cv::Scalar& tint);

// Rows of text cells, the first row a header, on the caption tiles' dark
// background, `width` pixels wide: the first column (labels) takes a third,
// the others share the rest. For figures beside pictures (the demo's mean
// IoUs). RGB; empty without rows.
cv::Mat text_table(const std::vector<std::vector<std::string>>& rows, int width);

// The gate figure of a gated adapter's report (AdaptedSam::gates() JSON):
// one row per (layer, projection), one column per component of the larger
// space; white active, dark grey inactive, black outside the chosen space,
// a side marker for the space (orange high, blue low). Image 0 only. BGR;
// empty when the report holds no gates.
cv::Mat gate_picture(const nlohmann::json& gates);

// A line through (x, y) points in order, in a grey frame, with the y range
// written at the left and a title at the top. BGR, 640 x 360; empty with
// fewer than two points.
cv::Mat line_chart(const std::vector<std::pair<double, double>>& points, const std::string& title);

// Grouped bars: for each group (x axis, labels written vertically) one bar
// per series (legend on top), values are fractions in [0, 1] shown in
// percent; NaN draws no bar. The y axis starts one step of 10 below the
// multiple of 10 under the lowest bar, so differences of a point or two stay
// visible. values[series][group]. BGR; empty when there are no series or
// groups.
struct BarChart {
  std::vector<std::string> groups, series;
  std::vector<std::vector<double>> values;
};
cv::Mat bar_chart(const BarChart& chart);

}  // namespace rsam::viz
