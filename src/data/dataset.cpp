#include "data/dataset.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <map>
#include <vector>

#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include "data/rle.h"
#include "error.h"
#include "io/fs.h"
#include "io/image_codec.h"
#include "io/text.h"

namespace rsam::data {

Dataset::~Dataset() = default;

std::vector<size_t> Dataset::same_image(size_t i) const { return {i}; }

cv::Mat Dataset::get_mask(size_t i) const { return get(i).mask; }

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

bool has_ext(const fs::path& p, std::initializer_list<const char*> exts) {
  const std::string e = io::lower(p.extension().string());
  for (const char* x : exts)
    if (e == x) return true;
  return false;
}

bool is_image(const fs::path& p) { return io::has_image_extension(p.string()); }

void require_dir(const std::string& dir, const std::string& what) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw Error("dataset: " + what + " directory '" + dir + "' does not exist");
}

// Regular files of `dir` accepted by `keep`, sorted by name (byte-wise).
template <class Keep>
std::vector<fs::path> list_files(const std::string& dir, Keep keep) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_regular_file(ec) && keep(it->path())) out.push_back(it->path());
  }
  if (ec) throw Error("dataset: cannot list '" + dir + "': " + ec.message());
  std::sort(out.begin(), out.end(),
            [](const fs::path& a, const fs::path& b) { return a.filename().string() < b.filename().string(); });
  return out;
}

// stem -> file, for the first extension in `preference` each stem has.
std::map<std::string, fs::path> by_stem(const std::string& dir, const std::vector<std::string>& preference) {
  std::map<std::string, std::pair<size_t, fs::path>> best;
  for (const auto& p : list_files(dir, [](const fs::path&) { return true; })) {
    const std::string e = io::lower(p.extension().string());
    const auto it = std::find(preference.begin(), preference.end(), e);
    if (it == preference.end()) continue;
    const size_t rank = static_cast<size_t>(it - preference.begin());
    auto [slot, inserted] = best.emplace(p.stem().string(), std::make_pair(rank, p));
    if (!inserted && rank < slot->second.first) slot->second = {rank, p};
  }
  std::map<std::string, fs::path> out;
  for (auto& [stem, v] : best) out.emplace(stem, v.second);
  return out;
}

// Not io::image_extensions(), on purpose: these are preference orders (the
// first extension a stem has wins), masks prefer lossless formats and take
// no .webp/.ppm, and paired images take no .pgm (a grey image).
const std::vector<std::string> kMaskExts = {".png", ".bmp", ".tif", ".tiff", ".pgm", ".jpg", ".jpeg"};
const std::vector<std::string> kImageExts = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm"};

// Through the one codec (truncation and the pixel limit are checked before
// decoding); its errors name the file, the prefix names the layer.
cv::Mat decode_file(const std::string& path, io::ImageRead mode) {
  try {
    return io::read_image(path, mode);
  } catch (const Error& e) {
    throw Error(std::string("dataset: ") + e.what());
  }
}

// Binary mask: any nonzero channel is object. JPEG masks carry compression
// noise around 0 and 255, so they are thresholded at 128 instead.
cv::Mat read_binary_mask(const std::string& path) {
  cv::Mat m = decode_file(path, io::ImageRead::Unchanged);
  if (m.channels() > 1) {
    std::vector<cv::Mat> ch;
    cv::split(m, ch);
    m = ch[0].clone();
    for (size_t i = 1; i < ch.size() && i < 3; ++i) cv::max(m, ch[i], m);
  }
  const bool jpeg = has_ext(path, {".jpg", ".jpeg"});
  cv::Mat out;
  cv::compare(m, jpeg ? (m.depth() == CV_16U ? 32768 : 128) - 1 : 0, out, cv::CMP_GT);
  return out & 1;
}

cv::Mat read_label_map(const std::string& path) {
  cv::Mat m = decode_file(path, io::ImageRead::Unchanged);
  if (m.channels() != 1 || (m.depth() != CV_8U && m.depth() != CV_16U))
    throw Error("dataset: instance mask '" + path + "' is not an 8- or 16-bit single-channel image");
  return m;
}

void check_same_size(const cv::Mat& image, const cv::Mat& mask, const std::string& ip, const std::string& mp) {
  if (image.size() != mask.size())
    throw Error("dataset: mask '" + mp + "' is " + std::to_string(mask.cols) + "x" + std::to_string(mask.rows) +
                " but image '" + ip + "' is " + std::to_string(image.cols) + "x" + std::to_string(image.rows));
}

// ---------------------------------------------------------------- folder:

class FolderDataset : public Dataset {
 public:
  FolderDataset(std::string kind, const std::string& clean_dir, const std::string& images_dir,
                const std::string& masks_dir, bool instances)
      : kind_(std::move(kind)), images_dir_(images_dir), masks_dir_(masks_dir), instances_(instances) {
    require_dir(images_dir, "image");
    require_dir(masks_dir, "mask");
    std::map<std::string, fs::path> clean;
    if (!clean_dir.empty()) {
      require_dir(clean_dir, "clean image");
      clean = by_stem(clean_dir, kImageExts);
    }
    const auto masks = by_stem(masks_dir, kMaskExts);
    for (const auto& img : list_files(images_dir, is_image)) {
      const std::string stem = img.stem().string();
      const auto m = masks.find(stem);
      const auto c = clean.find(stem);
      if (m == masks.end() || (!clean_dir.empty() && c == clean.end())) {
        ++left_out_;
        continue;
      }
      const size_t file = files_.size();
      files_.push_back(
          {stem, img.string(), m->second.string(), clean_dir.empty() ? std::string() : c->second.string()});
      if (!instances_) {
        samples_.push_back({file, 0});
        continue;
      }
      // The instance count is only known by reading the map; done once here.
      const cv::Mat labels = read_label_map(files_.back().mask);
      std::vector<uint8_t> seen(labels.depth() == CV_16U ? 65536 : 256, 0);
      for (int y = 0; y < labels.rows; ++y) {
        if (labels.depth() == CV_16U) {
          const uint16_t* p = labels.ptr<uint16_t>(y);
          for (int x = 0; x < labels.cols; ++x) seen[p[x]] = 1;
        } else {
          const uint8_t* p = labels.ptr<uint8_t>(y);
          for (int x = 0; x < labels.cols; ++x) seen[p[x]] = 1;
        }
      }
      const size_t first = samples_.size();
      for (size_t id = 1; id < seen.size(); ++id)
        if (seen[id]) samples_.push_back({file, static_cast<int>(id)});
      file_samples_.push_back({first, samples_.size()});
    }
  }

  std::vector<size_t> same_image(size_t i) const override {
    if (!instances_ || i >= samples_.size()) return Dataset::same_image(i);
    std::vector<size_t> out;
    for (size_t j = file_samples_[samples_[i].first].first; j < file_samples_[samples_[i].first].second; ++j)
      out.push_back(j);
    return out;
  }

  cv::Mat get_mask(size_t i) const override {
    if (!instances_ || i >= samples_.size()) return Dataset::get_mask(i);
    cv::Mat eq;
    cv::compare(read_label_map(files_[samples_[i].first].mask), samples_[i].second, eq, cv::CMP_EQ);
    return eq & 1;
  }

  size_t size() const override { return samples_.size(); }

  Sample get(size_t i) const override {
    if (i >= samples_.size()) throw Error("dataset: index " + std::to_string(i) + " out of range");
    const auto& [file, id] = samples_[i];
    const File& f = files_[file];
    Sample s;
    s.image_path = f.image;
    s.image = read_rgb(f.image);
    if (instances_) {
      s.id = f.stem + "#" + std::to_string(id);
      const cv::Mat labels = read_label_map(f.mask);
      cv::Mat eq;
      cv::compare(labels, id, eq, cv::CMP_EQ);
      s.mask = eq & 1;
    } else {
      s.id = f.stem;
      s.mask = read_binary_mask(f.mask);
    }
    check_same_size(s.image, s.mask, f.image, f.mask);
    if (!f.clean.empty()) {
      s.clean = read_rgb(f.clean);
      check_same_size(s.image, s.clean, f.image, f.clean);
    }
    return s;
  }

  std::string describe() const override {
    return kind_ + ": " + images_dir_ + ", masks " + masks_dir_ + (instances_ ? " (instances)" : "") + ": " +
           std::to_string(samples_.size()) + " samples from " + std::to_string(files_.size()) + " images, " +
           std::to_string(left_out_) + " images without a mask left out";
  }

 private:
  struct File {
    std::string stem, image, mask, clean;
  };
  std::string kind_, images_dir_, masks_dir_;
  bool instances_;
  std::vector<File> files_;
  std::vector<std::pair<size_t, int>> samples_;          // (file, instance id; 0 for binary masks)
  std::vector<std::pair<size_t, size_t>> file_samples_;  // instances: [first, end) sample range per file
  size_t left_out_ = 0;
};

// ---------------------------------------------------------------- coco:

class CocoDataset : public Dataset {
 public:
  CocoDataset(const std::string& annotations, const std::string& images_dir, bool crowd)
      : annotations_path_(annotations), images_dir_(images_dir) {
    require_dir(images_dir, "image");
    json doc;
    try {
      const std::vector<uint8_t> bytes = io::read_file(annotations);
      doc = json::parse(bytes.begin(), bytes.end());
    } catch (const json::exception& e) {
      throw Error("dataset: '" + annotations + "' is not valid JSON: " + e.what());
    } catch (const Error&) {
      throw Error("dataset: cannot read annotation file '" + annotations + "'");
    }
    try {
      std::map<int64_t, size_t> image_index;
      for (const auto& im : doc.at("images")) {
        std::string name;
        if (im.contains("file_name"))
          name = im.at("file_name").get<std::string>();
        else
          name = io::split(im.at("coco_url").get<std::string>(), '/').back();  // LVIS
        images_.push_back({(fs::path(images_dir) / name).string(), fs::path(name).stem().string(),
                           im.at("height").get<int>(), im.at("width").get<int>()});
        // A repeated id would silently move the first image's annotations
        // onto the second.
        const int64_t id = im.at("id").get<int64_t>();
        if (!image_index.emplace(id, images_.size() - 1).second)
          throw Error("dataset: '" + annotations + "' lists image id " + std::to_string(id) + " twice");
      }
      for (auto& ann : doc.at("annotations")) {
        if (!crowd && ann.value("iscrowd", 0) != 0) {
          ++crowd_skipped_;
          continue;
        }
        const auto im = image_index.find(ann.at("image_id").get<int64_t>());
        if (im == image_index.end() || !ann.contains("segmentation")) {
          ++orphans_;
          continue;
        }
        anns_.push_back({im->second, ann.value("id", int64_t(anns_.size())), std::move(ann.at("segmentation"))});
        by_image_[im->second].push_back(anns_.size() - 1);
      }
    } catch (const json::exception& e) {
      throw Error("dataset: '" + annotations + "' is not a COCO instances file: " + e.what());
    }
  }

  size_t size() const override { return anns_.size(); }

  std::vector<size_t> same_image(size_t i) const override {
    if (i >= anns_.size()) return Dataset::same_image(i);
    return by_image_.at(anns_[i].image);
  }

  cv::Mat get_mask(size_t i) const override {
    if (i >= anns_.size()) throw Error("dataset: index " + std::to_string(i) + " out of range");
    const Ann& a = anns_[i];
    try {
      return decode_segmentation(a.segm, images_[a.image].h, images_[a.image].w);
    } catch (const Error& e) {
      throw Error("dataset: annotation " + std::to_string(a.id) + " in '" + annotations_path_ + "': " + e.what());
    }
  }

  Sample get(size_t i) const override {
    if (i >= anns_.size()) throw Error("dataset: index " + std::to_string(i) + " out of range");
    const Ann& a = anns_[i];
    const Image& im = images_[a.image];
    Sample s;
    s.id = im.stem + "#" + std::to_string(a.id);
    s.image_path = im.path;
    s.image = read_rgb(im.path);
    if (s.image.rows != im.h || s.image.cols != im.w)
      throw Error("dataset: image '" + im.path + "' is " + std::to_string(s.image.cols) + "x" +
                  std::to_string(s.image.rows) + " but the annotations say " + std::to_string(im.w) + "x" +
                  std::to_string(im.h));
    s.mask = get_mask(i);
    return s;
  }

  std::string describe() const override {
    return "coco: " + annotations_path_ + ", images " + images_dir_ + ": " + std::to_string(anns_.size()) +
           " annotations on " + std::to_string(images_.size()) + " images, " + std::to_string(crowd_skipped_) +
           " crowd skipped, " + std::to_string(orphans_) + " without image or segmentation";
  }

 private:
  struct Image {
    std::string path, stem;
    int h, w;
  };
  struct Ann {
    size_t image;
    int64_t id;
    json segm;
  };
  std::string annotations_path_, images_dir_;
  std::vector<Image> images_;
  std::vector<Ann> anns_;
  std::map<size_t, std::vector<size_t>> by_image_;  // image -> its annotations, in file order
  size_t crowd_skipped_ = 0, orphans_ = 0;
};

// ---------------------------------------------------------------- sa1b:

class Sa1bDataset : public Dataset {
 public:
  explicit Sa1bDataset(const std::string& dir) : dir_(dir) {
    require_dir(dir, "SA-1B");
    // Compressed RLE strings use only '0'..'o' and JSON escapes, never a
    // quote, so counting the key is an exact annotation count without a parse.
    static const char kKey[] = "\"segmentation\"";
    for (const auto& img : list_files(dir, [](const fs::path& p) { return has_ext(p, {".jpg", ".jpeg"}); })) {
      fs::path js = img;
      js.replace_extension(".json");
      std::error_code ec;
      if (!fs::is_regular_file(js, ec)) {
        ++left_out_;
        continue;
      }
      const std::vector<uint8_t> bytes = io::read_file(js.string());
      size_t n = 0;
      const char* p = reinterpret_cast<const char*>(bytes.data());
      const char* end = p + bytes.size();
      const size_t klen = sizeof(kKey) - 1;
      while (static_cast<size_t>(end - p) >= klen) {
        const void* hit = memmem(p, static_cast<size_t>(end - p), kKey, klen);
        if (!hit) break;
        ++n;
        p = static_cast<const char*>(hit) + klen;
      }
      if (n == 0) {
        ++left_out_;
        continue;
      }
      files_.push_back({img.string(), js.string(), img.stem().string()});
      first_.push_back(total_);
      total_ += n;
    }
  }

  size_t size() const override { return total_; }

  Sample get(size_t i) const override {
    if (i >= total_) throw Error("dataset: index " + std::to_string(i) + " out of range");
    const size_t f = static_cast<size_t>(std::upper_bound(first_.begin(), first_.end(), i) - first_.begin()) - 1;
    const size_t k = i - first_[f];
    const File& file = files_[f];
    Sample s;
    s.image_path = file.image;
    s.image = read_rgb(file.image);
    try {
      const std::vector<uint8_t> bytes = io::read_file(file.json);
      const json doc = json::parse(bytes.begin(), bytes.end());
      const auto& anns = doc.at("annotations");
      if (k >= anns.size()) throw Error("has fewer annotations than when the dataset was opened");
      const auto& ann = anns[k];
      s.id = file.stem + "#" + std::to_string(ann.value("id", int64_t(k)));
      s.mask = decode_segmentation(ann.at("segmentation"), s.image.rows, s.image.cols);
    } catch (const json::exception& e) {
      throw Error("dataset: '" + file.json + "': " + e.what());
    } catch (const Error& e) {
      throw Error("dataset: '" + file.json + "': " + e.what());
    }
    return s;
  }

  std::string describe() const override {
    return "sa1b: " + dir_ + ": " + std::to_string(total_) + " masks on " + std::to_string(files_.size()) +
           " images, " + std::to_string(left_out_) + " images without annotations left out";
  }

 private:
  struct File {
    std::string image, json, stem;
  };
  std::string dir_;
  std::vector<File> files_;
  std::vector<size_t> first_;  // index of each file's first sample
  size_t total_ = 0, left_out_ = 0;
};

}  // namespace

cv::Mat read_rgb(const std::string& path) { return decode_file(path, io::ImageRead::Rgb); }

std::vector<std::string> dataset_files(const std::string& spec) {
  const size_t colon = spec.find(':');
  std::vector<std::string> out;
  for (const auto& item : io::split(colon == std::string::npos ? spec : spec.substr(colon + 1), ',')) {
    std::error_code ec;
    if (fs::is_regular_file(item, ec)) out.push_back(item);
  }
  return out;
}

std::unique_ptr<Dataset> open_dataset(const std::string& spec) {
  const size_t colon = spec.find(':');
  const std::string kind = colon == std::string::npos ? std::string() : spec.substr(0, colon);
  const std::vector<std::string> args =
      colon == std::string::npos ? std::vector<std::string>{} : io::split(spec.substr(colon + 1), ',');
  auto bad = [&](const std::string& usage) { return Error("dataset: bad spec '" + spec + "': expected " + usage); };
  if (kind == "folder" || kind == "degraded") {
    const std::string usage = kind + ":IMAGES_DIR,MASKS_DIR[,instances]";
    if (args.size() < 2 || args.size() > 3 || (args.size() == 3 && args[2] != "instances")) throw bad(usage);
    return std::make_unique<FolderDataset>(kind, "", args[0], args[1], args.size() == 3);
  }
  if (kind == "paired") {
    if (args.size() != 3) throw bad("paired:CLEAN_DIR,DEGRADED_DIR,MASKS_DIR");
    return std::make_unique<FolderDataset>(kind, args[0], args[1], args[2], false);
  }
  if (kind == "coco") {
    if (args.size() < 2 || args.size() > 3 || (args.size() == 3 && args[2] != "crowd"))
      throw bad("coco:ANNOTATIONS.json,IMAGES_DIR[,crowd]");
    return std::make_unique<CocoDataset>(args[0], args[1], args.size() == 3);
  }
  if (kind == "sa1b") {
    if (args.size() != 1) throw bad("sa1b:DIR");
    return std::make_unique<Sa1bDataset>(args[0]);
  }
  std::error_code ec;
  if (fs::is_directory(fs::path(spec) / "images", ec) && fs::is_directory(fs::path(spec) / "masks", ec))
    return std::make_unique<FolderDataset>("folder", "", (fs::path(spec) / "images").string(),
                                           (fs::path(spec) / "masks").string(), false);
  throw Error("dataset: unknown spec '" + spec +
              "' (folder:, degraded:, paired:, coco:, sa1b:, or a directory with images/ and masks/)");
}

}  // namespace rsam::data
