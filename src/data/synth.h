// The synthetic segmentation world: procedurally generated scenes of several
// objects (convex and concave polygons, ellipses, stars, rings, thin curved
// strokes) with textures, shading, shadows and occlusion over textured or
// photographic backgrounds, with exact instance masks. rsam-tiny is
// pre-trained on it and the miniature study runs on it, because no real
// dataset or pretrained SAM can be downloaded where rsam is developed.
//
// A scene depends only on (seed, index, size, object counts, photo files):
// same inputs, same bytes, whatever the thread count.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

namespace rsam::data {

struct SynthOptions {
  int size = 512;  // square scenes, size x size
  uint64_t seed = 0;
  int min_objects = 3, max_objects = 8;
  // Directory of photographs used for backgrounds and object textures,
  // "auto" (Debian-packaged photos if installed, see default_photo_dirs) or
  // "none" (procedural textures only).
  std::string photos = "auto";
};

struct SynthObject {
  int id = 0;        // value in SynthScene::ids (1..n, painting order)
  std::string kind;  // one of synth_kinds()
  int64_t area = 0;  // visible pixels after occlusion
  cv::Rect bbox;     // of the visible pixels
};

struct SynthScene {
  cv::Mat image;  // CV_8UC3 RGB
  cv::Mat ids;    // CV_8UC1 instance ids, 0 = background (or an object too occluded to keep)
  std::vector<SynthObject> objects;
};

// "polygon", "concave", "ellipse", "star", "ring", "stroke".
const std::vector<std::string>& synth_kinds();

// Where "auto" looks for photographs, in order (the first that holds any).
std::vector<std::string> default_photo_dirs();

class SynthWorld {
 public:
  // rsam::Error for a bad size/object range or an unreadable photo directory.
  explicit SynthWorld(SynthOptions opts);
  // Deterministic in (options, index); safe to call from several threads.
  SynthScene scene(uint64_t index) const;
  const SynthOptions& options() const { return opts_; }
  const std::vector<std::string>& photo_paths() const { return photo_paths_; }

 private:
  SynthOptions opts_;
  std::vector<std::string> photo_paths_;
  std::vector<cv::Mat> photos_;  // CV_32FC3 RGB in [0,1], shorter side ~ size
};

struct SynthSummary {
  size_t scenes = 0, objects = 0;
  std::vector<std::string> photos;
};

// Writes OUT/images/NNNNNN.png, OUT/masks/NNNNNN.png (8-bit instance ids),
// OUT/annotations.json (COCO instances, compressed RLE, one category per
// kind) and OUT/synth.json (options and photo list), every file atomically.
// Readable as `coco:OUT/annotations.json,OUT/images` or
// `folder:OUT/images,OUT/masks,instances`. synth.json is written first, so a
// killed run resumes: scenes whose files exist are not rewritten, the
// annotations always are. A folder whose synth.json names other options, or
// that holds scenes without one, is an rsam::Error; so is a folder another
// run is writing (io::FolderLock).
SynthSummary write_synth(const std::string& out, size_t count, const SynthOptions& opts, int jobs = 1,
                         const std::function<void(size_t done, size_t total)>& progress = nullptr);

}  // namespace rsam::data
