#include "io/image_codec.h"

#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstdlib>

#include <png.h>

#include <csetjmp>
#include <cstring>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "error.h"
#include "io/fs.h"
#include "io/image_bytes.h"

namespace rsam::io {
namespace {

constexpr uint64_t kDefaultMaxPixels = 100'000'000;

std::atomic<uint64_t> g_max_pixels{0};  // 0: not set by the program

uint64_t env_max_pixels() {
  const char* v = std::getenv("RSAM_MAX_PIXELS");
  if (v == nullptr || *v == '\0') return kDefaultMaxPixels;
  uint64_t n = 0;
  for (const char* p = v; *p; ++p) {
    if (*p < '0' || *p > '9' || n > (UINT64_MAX - 9) / 10)
      throw Error("RSAM_MAX_PIXELS must be a positive whole number of pixels, got '" + std::string(v) + "'");
    n = n * 10 + uint64_t(*p - '0');
  }
  if (n == 0) throw Error("RSAM_MAX_PIXELS must be a positive whole number of pixels, got '" + std::string(v) + "'");
  return n;
}

std::string megapixels(uint64_t px) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", double(px) / 1e6);
  return buf;
}

std::string extension_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  const std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  const size_t dot = name.find_last_of('.');
  if (dot == std::string::npos || dot == 0) return "";
  std::string ext = name.substr(dot);
  for (char& c : ext) c = char(std::tolower(static_cast<unsigned char>(c)));
  return ext;
}

// libpng reports a corrupt stream by printing "libpng error: ..." on stderr
// before OpenCV returns an empty image. Reading the rows once with handlers
// that only record the message keeps rsam's one line the only line.
struct PngReader {
  std::string message;
  const uint8_t* data;
  size_t size, pos = 0;
  std::vector<uint8_t> row;  // here, not on the stack that longjmp unwinds
};

void png_record_error(png_structp png, png_const_charp msg) {
  static_cast<PngReader*>(png_get_error_ptr(png))->message = msg;
  png_longjmp(png, 1);
}
void png_ignore_warning(png_structp, png_const_charp) {}
void png_read_bytes(png_structp png, png_bytep out, png_size_t n) {
  auto* r = static_cast<PngReader*>(png_get_io_ptr(png));
  if (r->size - r->pos < n) png_error(png, "file ends early");
  std::memcpy(out, r->data + r->pos, n);
  r->pos += n;
}

std::string png_stream_problem(const uint8_t* data, size_t size) {
  PngReader reader{"", data, size, 0, {}};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &reader, png_record_error, png_ignore_warning);
  if (png == nullptr) return "out of memory";
  png_infop info = png_create_info_struct(png);
  if (info != nullptr && setjmp(png_jmpbuf(png)) == 0) {
    png_set_read_fn(png, &reader, png_read_bytes);
    png_read_info(png, info);
    const int passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);
    reader.row.resize(png_get_rowbytes(png, info));
    const png_uint_32 height = png_get_image_height(png, info);
    for (int p = 0; p < passes; ++p)
      for (png_uint_32 y = 0; y < height; ++y) png_read_row(png, reader.row.data(), nullptr);
    png_read_end(png, nullptr);
  } else if (reader.message.empty()) {
    reader.message = "unreadable";
  }
  png_destroy_read_struct(&png, info ? &info : nullptr, nullptr);
  return reader.message;
}

}  // namespace

const std::vector<std::string>& image_extensions() {
  static const std::vector<std::string> kExtensions = {".png", ".jpg", ".jpeg", ".bmp", ".tif",
                                                       ".tiff", ".webp", ".ppm", ".pgm"};
  return kExtensions;
}

bool has_image_extension(const std::string& path) {
  const std::string ext = extension_of(path);
  for (const auto& e : image_extensions())
    if (ext == e) return true;
  return false;
}

uint64_t max_image_pixels() {
  const uint64_t set = g_max_pixels.load();
  return set != 0 ? set : env_max_pixels();
}

void set_max_image_pixels(uint64_t pixels) {
  if (pixels == 0) throw Error("the pixel limit must be positive");
  g_max_pixels = pixels;
}

cv::Mat decode_image(const uint8_t* data, size_t size, ImageRead mode, const std::string& name) {
  const std::string where = "cannot decode image '" + name + "': ";
  if (size == 0) throw Error(where + "the file is empty");
  const std::string problem = image_bytes_problem(data, size);
  if (!problem.empty()) throw Error(where + problem);
  const ImageHeader h = image_header(data, size);
  if (h.format.empty()) throw Error(where + "not a PNG, JPEG, BMP, TIFF, WebP or PPM/PGM picture");
  if (h.width == 0 || h.height == 0) throw Error(where + "its " + h.format + " header gives no usable size");
  const uint64_t limit = max_image_pixels();
  // Checked in a form that cannot overflow: each side is below 2^32.
  if (h.width > limit / h.height)
    throw Error(where + "it claims " + std::to_string(h.width) + "x" + std::to_string(h.height) + " pixels (" +
                megapixels(h.width * h.height) + " MP), above the limit of " + megapixels(limit) +
                " MP (RSAM_MAX_PIXELS raises it)");
  if (h.format == "png")
    if (const std::string bad = png_stream_problem(data, size); !bad.empty())
      throw Error(where + "corrupt PNG (" + bad + ")");
  const int flags = mode == ImageRead::Rgb ? cv::IMREAD_COLOR
                    : mode == ImageRead::Gray ? cv::IMREAD_GRAYSCALE
                                              : cv::IMREAD_UNCHANGED;
  cv::Mat m;
  try {
    m = cv::imdecode(cv::Mat(1, int(size), CV_8UC1, const_cast<uint8_t*>(data)), flags);
  } catch (const cv::Exception&) {
    m.release();
  }
  if (m.empty()) throw Error(where + "the " + h.format + " data is corrupt");
  if (mode == ImageRead::Rgb) cv::cvtColor(m, m, cv::COLOR_BGR2RGB);
  return m;
}

cv::Mat read_image(const std::string& path, ImageRead mode) {
  const MappedFile file(path);
  return decode_image(file.data(), file.size(), mode, path);
}

std::vector<uint8_t> encode_image(const cv::Mat& image, const std::string& path, bool rgb) {
  std::string ext = extension_of(path);
  if (ext.empty()) ext = ".png";
  cv::Mat out = image;
  if (rgb && image.channels() == 3) cv::cvtColor(image, out, cv::COLOR_RGB2BGR);
  std::vector<uint8_t> buf;
  bool ok = false;
  try {
    ok = cv::imencode(ext, out, buf);
  } catch (const cv::Exception&) {
    ok = false;
  }
  if (!ok) throw Error("cannot write '" + path + "': no image encoder for '" + ext + "' (use .png or .jpg)");
  return buf;
}

void check_image_name(const std::string& path, bool lossless) {
  const std::string ext = extension_of(path);
  if (ext.empty()) return;
  if (!cv::haveImageWriter("x" + ext))
    throw Error("cannot write '" + path + "': no image encoder for '" + ext + "' (use .png or .jpg)");
  if (lossless && (ext == ".jpg" || ext == ".jpeg" || ext == ".jpe" || ext == ".webp" || ext == ".jp2"))
    throw Error("'" + path + "': a mask is written losslessly, as PNG; " + ext + " would change its values");
}

void write_image(const std::string& path, const cv::Mat& image, bool rgb) {
  const std::vector<uint8_t> buf = encode_image(image, path, rgb);
  write_atomic(path, buf.data(), buf.size());
}

}  // namespace rsam::io
