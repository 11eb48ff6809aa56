// The image codec: header sizes of every accepted format, the pixel limit
// applied before decoding (decompression bombs), and one-line refusals.
#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>

#include "error.h"
#include "io/image_bytes.h"
#include "io/image_codec.h"
#include "io/zip.h"  // crc32

namespace rsam::io {
namespace {

std::vector<uint8_t> encoded(const std::string& ext, int w, int h, int type = CV_8UC3) {
  cv::Mat m(h, w, type, cv::Scalar::all(100));
  std::vector<uint8_t> buf;
  EXPECT_TRUE(cv::imencode(ext, m, buf)) << ext;
  return buf;
}

void put_be32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (24 - 8 * i));
}

// A small PNG whose header claims w x h (CRC fixed so only the size is off).
std::vector<uint8_t> png_claiming(uint32_t w, uint32_t h) {
  auto b = encoded(".png", 4, 4);
  put_be32(&b[16], w);
  put_be32(&b[20], h);
  put_be32(&b[29], detail::crc32(&b[12], 17));
  return b;
}

std::string error_of(const std::vector<uint8_t>& b, ImageRead mode = ImageRead::Rgb) {
  try {
    decode_image(b.data(), b.size(), mode, "x");
  } catch (const rsam::Error& e) {
    return e.what();
  }
  return "";
}

TEST(Codec, HeaderSizeOfEveryAcceptedFormat) {
  for (const std::string ext : {".png", ".jpg", ".bmp", ".tiff", ".webp", ".ppm", ".pgm"}) {
    SCOPED_TRACE(ext);
    const auto b = encoded(ext, 37, 23, ext == ".pgm" ? CV_8UC1 : CV_8UC3);
    const ImageHeader h = image_header(b.data(), b.size());
    EXPECT_FALSE(h.format.empty());
    EXPECT_EQ(h.width, 37u);
    EXPECT_EQ(h.height, 23u);
    const cv::Mat m = decode_image(b.data(), b.size(), ImageRead::Rgb, "x" + ext);
    EXPECT_EQ(m.cols, 37);
    EXPECT_EQ(m.type(), CV_8UC3);
  }
}

// Issue: an 875 KB PNG claiming 30000x30000 took >15 GB in `segment`.
TEST(Codec, BombsAreRefusedBeforeDecoding) {
  const std::string e = error_of(png_claiming(30000, 30000));
  EXPECT_NE(e.find("30000x30000"), std::string::npos) << e;
  EXPECT_NE(e.find("RSAM_MAX_PIXELS"), std::string::npos) << e;
  auto jpg = encoded(".jpg", 8, 8);
  for (size_t i = 2; i + 9 < jpg.size(); ++i)
    if (jpg[i] == 0xFF && jpg[i + 1] == 0xC0) {  // SOF0: height, width
      jpg[i + 5] = jpg[i + 7] = 0xFF;
      jpg[i + 6] = jpg[i + 8] = 0xF0;
      break;
    }
  EXPECT_NE(error_of(jpg).find("65520x65520"), std::string::npos) << error_of(jpg);
  // The limit is configurable.
  const auto b = encoded(".png", 100, 100);
  set_max_image_pixels(9999);
  EXPECT_NE(error_of(b).find("above the limit"), std::string::npos);
  set_max_image_pixels(10000);
  EXPECT_EQ(error_of(b), "");
}

TEST(Codec, OtherProblemsAreOneLine) {
  EXPECT_NE(error_of({}).find("empty"), std::string::npos);
  const std::string text = "hello, not a picture";
  EXPECT_NE(error_of({text.begin(), text.end()}).find("not a PNG"), std::string::npos);
  auto cut = encoded(".png", 30, 30);
  cut.resize(cut.size() / 2);
  EXPECT_NE(error_of(cut).find("truncated PNG"), std::string::npos);
  EXPECT_NE(error_of(png_claiming(0, 5)).find("no usable size"), std::string::npos);
  try {
    read_image("/nonexistent/a.png", ImageRead::Rgb);
    FAIL();
  } catch (const rsam::Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/a.png"), std::string::npos);
  }
}

// A PNG whose chunks are whole but whose compressed data is not: libpng used
// to print its own "libpng error:" line before rsam's.
TEST(Codec, CorruptPngDataIsOneMessageAndNothingOnStderr) {
  auto b = encoded(".png", 16, 16);
  size_t idat = 8;
  while (std::string(reinterpret_cast<const char*>(&b[idat + 4]), 4) != "IDAT")
    idat += 12 + (size_t(b[idat]) << 24 | size_t(b[idat + 1]) << 16 | size_t(b[idat + 2]) << 8 | b[idat + 3]);
  const size_t len = size_t(b[idat + 2]) << 8 | b[idat + 3];
  for (size_t i = 2; i < len; ++i) b[idat + 8 + i] ^= 0x5A;  // the deflate stream, past its header
  put_be32(&b[idat + 8 + len], detail::crc32(&b[idat + 4], 4 + len));
  ::testing::internal::CaptureStderr();
  const std::string e = error_of(b);
  const std::string printed = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(e.find("corrupt PNG"), std::string::npos) << e;
  EXPECT_EQ(printed, "");
}

TEST(Codec, SixteenBitStaysSixteenBitUnchanged) {
  cv::Mat m(5, 7, CV_16UC1, cv::Scalar(300));
  std::vector<uint8_t> b;
  ASSERT_TRUE(cv::imencode(".png", m, b));
  const cv::Mat back = decode_image(b.data(), b.size(), ImageRead::Unchanged, "m.png");
  EXPECT_EQ(back.type(), CV_16UC1);
  EXPECT_EQ(back.at<uint16_t>(2, 3), 300);
}

TEST(Codec, EncodeNamesAnUnknownExtension) {
  const cv::Mat m(4, 4, CV_8UC1, cv::Scalar(1));
  EXPECT_THROW(encode_image(m, "out.xyz", false), rsam::Error);
  EXPECT_FALSE(encode_image(m, "dir.d/out", false).empty());  // no extension: PNG
}

}  // namespace
}  // namespace rsam::io
