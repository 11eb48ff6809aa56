// Segmentation datasets as lists of (image, one binary object mask) samples.
//
// open_dataset(spec) understands these spec strings (paths may be relative;
// commas separate arguments, so paths must not contain commas):
//
//   folder:IMAGES_DIR,MASKS_DIR
//       One sample per image that has a mask with the same stem in MASKS_DIR
//       (.png preferred, else .bmp/.tif/.tiff). Any nonzero mask pixel (in any
//       channel) is object. MSRA10K / ECSSD / DIS / ThinObject-5K style.
//   folder:IMAGES_DIR,MASKS_DIR,instances
//       Each mask is an 8- or 16-bit single-channel instance-id map (0 =
//       background): one sample per (image, id), ids in increasing order.
//       Opening reads every mask once to list its ids; instances of area 0
//       cannot occur.
//   DIR
//       Same as folder:DIR/images,DIR/masks.
//   degraded:IMAGES_DIR,MASKS_DIR[,instances]
//       Exactly folder:, named for sets of real degraded photos (BDD, LIS).
//   paired:CLEAN_DIR,DEGRADED_DIR,MASKS_DIR
//       Sample image = the degraded one; Sample::clean = the clean image with
//       the same stem. Only stems present in all three folders are used.
//   coco:ANNOTATIONS.json,IMAGES_DIR[,crowd]
//       COCO or LVIS instances file: one sample per annotation in file order,
//       iscrowd annotations skipped unless ",crowd". Image file =
//       "file_name", or the last component of "coco_url" (LVIS). Masks
//       decode exactly as pycocotools' COCO.annToMask (see rle.h).
//   sa1b:DIR
//       SA-1B: DIR/<stem>.jpg with DIR/<stem>.json; one sample per entry of
//       the JSON's "annotations" (compressed RLE). Opening reads each JSON's
//       bytes to count its annotations but parses none.
//
// Files are listed in sorted (byte-wise) order, so sample indices are stable.
// Images without a mask are left out at open time (counted in describe()).
// get() reads files lazily; an unreadable or malformed file is an rsam::Error
// naming it (loaders decide whether to skip). Empty masks are NOT removed at
// open time for folder:, paired: and coco: (that would mean reading every
// mask); such samples come back from get() with an all-zero mask, and
// data::Loader skips them.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

namespace rsam::data {

struct Sample {
  std::string id;          // stable and unique within the dataset: "<stem>", "<stem>#<instance or annotation id>"
  std::string image_path;  // the file `image` came from
  cv::Mat image;           // CV_8UC3, RGB
  cv::Mat mask;            // CV_8UC1, values 0/1, image-sized
  cv::Mat clean;           // CV_8UC3 RGB clean reference (paired: only), else empty
};

class Dataset {
 public:
  virtual ~Dataset();
  virtual size_t size() const = 0;
  // rsam::Error if i >= size() or a file cannot be read / decoded. Safe to
  // call from several threads at once (the loader's workers do).
  virtual Sample get(size_t i) const = 0;
  // One line: kind, paths, sample count, images left out.
  virtual std::string describe() const = 0;
  // Indices of every sample on the same image as sample i (i included, in
  // increasing order), so a trainer can decode several masks per image
  // encoding. Datasets with one sample per image return {i}.
  virtual std::vector<size_t> same_image(size_t i) const;
  // Sample i's mask alone (get(i).mask without reading the image).
  virtual cv::Mat get_mask(size_t i) const;
};

// rsam::Error for an unknown kind, a missing directory or annotation file.
std::unique_ptr<Dataset> open_dataset(const std::string& spec);

// The existing regular files a spec names (a COCO annotation file, ...):
// what an output must not be written over.
std::vector<std::string> dataset_files(const std::string& spec);

// Reads an image as CV_8UC3 RGB (grey and RGBA are converted);
// rsam::Error naming the file if it cannot be read.
cv::Mat read_rgb(const std::string& path);

}  // namespace rsam::data
