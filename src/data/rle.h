// COCO run-length encoding, reimplemented from pycocotools' C core
// (common/maskApi.c) so masks decode bit for bit as COCO.annToMask gives them.
//
// An RLE lists alternating run lengths of 0s and 1s (starting with 0s, so the
// first count may be 0) over the mask in column-major (Fortran) order: down
// column 0, then column 1, ... The compressed form is maskApi's LEB128-like
// string (6 bits per char, ASCII 48..111, counts from the third on stored as
// the difference to the count two before).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

namespace rsam::data {

struct Rle {
  int h = 0, w = 0;
  std::vector<uint32_t> counts;
};

// rleFrPoly: polygon (x0,y0,x1,y1,...; pixel coordinates) to RLE. An odd
// trailing value is ignored, as pycocotools does (it passes len/2 points).
// A coordinate that is not finite or beyond +-1e6 is an rsam::Error.
Rle rle_from_polygon(const std::vector<double>& xy, int h, int w);
// rleFrBbox: [x, y, width, height] as the polygon of its four corners.
Rle rle_from_bbox(const double bbox[4], int h, int w);
// rleFrString / rleToString. rsam::Error on a character outside 48..111.
Rle rle_from_string(const std::string& s, int h, int w);
std::string rle_to_string(const Rle& rle);
// rleEncode of a CV_8UC1 mask (nonzero = 1).
Rle rle_encode(const cv::Mat& mask);
// rleDecode into a CV_8UC1 0/1 mask of h x w. Counts summing past h*w are an
// rsam::Error (the safeguarded maskApi refuses them too); pixels after a
// short RLE's last run are 0.
cv::Mat rle_decode(const Rle& rle);
uint64_t rle_area(const Rle& rle);

// COCO.annToMask: `segm` is an annotation's "segmentation" (polygon list,
// uncompressed {"size","counts":[...]} or compressed {"size","counts":"..."});
// h and w are the image's. Polygon parts are unioned (maskUtils.merge). As in
// frPyObjects, a polygon list whose first part has exactly 4 numbers is read
// as [x, y, w, h] boxes. RLE masks keep their own "size"; rsam::Error if it
// differs from h x w or the segmentation is malformed.
cv::Mat decode_segmentation(const nlohmann::json& segm, int h, int w);

}  // namespace rsam::data
