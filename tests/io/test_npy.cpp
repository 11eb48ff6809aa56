#include <cstdio>

#include "io/npy.h"
#include "io_test_util.h"

namespace rsam::io::test {
namespace {

void load_npy_buf(const uint8_t* d, size_t n) { load_npy_bytes(d, n); }

std::string npy_error(const std::string& name) {
  try {
    load_npy(data_path(name));
  } catch (const rsam::Error& e) {
    return e.what();
  }
  return "<no error>";
}

TEST(Npy, ReadsNumpyDtypesAsFloat) {
  NpyArray a = load_npy(data_path("f4.npy"));
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.data, (std::vector<float>{1.5f, -2.0f, 3.25f, 0.0f, 1e-3f, -7.0f}));
  a = load_npy(data_path("f8.npy"));
  EXPECT_EQ(a.shape, (std::vector<int64_t>{3}));
  EXPECT_EQ(a.data, (std::vector<float>{0.1f, -1e10f, 2.5f}));
  a = load_npy(data_path("u1.npy"));
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(a.data, (std::vector<float>{0, 1, 128, 255}));
  a = load_npy(data_path("bool.npy"));
  EXPECT_EQ(a.data, (std::vector<float>{1, 0, 1, 1}));
  a = load_npy(data_path("f2.npy"));
  EXPECT_EQ(a.data, (std::vector<float>{1.0f, -0.5f, 65504.0f, 5.9604645e-8f}));  // incl. a subnormal
  a = load_npy(data_path("i8.npy"));
  EXPECT_EQ(a.data, (std::vector<float>{-3, 4}));
  a = load_npy(data_path("scalar.npy"));
  EXPECT_TRUE(a.shape.empty());
  EXPECT_EQ(a.data, (std::vector<float>{2.5f}));
  a = load_npy(data_path("v2.npy"));
  EXPECT_EQ(a.data, (std::vector<float>{0, 1, 2, 3}));
}

TEST(Npy, RefusesFortranAndBigEndian) {
  EXPECT_NE(npy_error("fortran.npy").find("Fortran"), std::string::npos);
  EXPECT_NE(npy_error("fortran.npy").find("fortran.npy"), std::string::npos);
  EXPECT_NE(npy_error("big_endian.npy").find("big-endian"), std::string::npos);
  EXPECT_NE(npy_error("sd_zip.pth").find("magic"), std::string::npos);
}

TEST(Npy, SaveLoadRoundTrip) {
  for (const std::vector<int64_t>& shape :
       {std::vector<int64_t>{2, 3, 4}, std::vector<int64_t>{7}, std::vector<int64_t>{}, std::vector<int64_t>{0, 5}}) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> v(static_cast<size_t>(n));
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i) * 0.37f - 3.0f;
    const std::string p = temp_path("rt.npy");
    save_npy(p, v.data(), shape);
    const auto bytes = read_file(p);
    const size_t header_len = bytes[8] | bytes[9] << 8;
    EXPECT_EQ((10 + header_len) % 64, 0u);
    EXPECT_EQ(bytes[10 + header_len - 1], '\n');
    const NpyArray a = load_npy(p);
    EXPECT_EQ(a.shape, shape);
    EXPECT_EQ(a.data, v);
    std::remove(p.c_str());
  }
  EXPECT_THROW(save_npy(temp_path("neg.npy"), nullptr, {-1}), rsam::Error);
}

TEST(Npy, SavedHeaderMatchesNumpy) {
  const float v[3] = {1, 2, 3};
  const std::string p = temp_path("hdr.npy");
  save_npy(p, v, {3});
  const auto bytes = read_file(p);
  const std::string header(bytes.begin() + 10, bytes.begin() + 10 + (bytes[8] | bytes[9] << 8));
  EXPECT_EQ(header.rfind("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", 0), 0u);
  std::remove(p.c_str());
}

TEST(Npy, EveryTruncationIsAnError) {
  for (const char* name : {"f4.npy", "f8.npy", "u1.npy", "bool.npy", "v2.npy"}) {
    SCOPED_TRACE(name);
    expect_all_prefixes_fail(fixture(name), load_npy_buf);
  }
}

TEST(Npy, ByteFlipsLoadOrThrow) {
  expect_flips_safe(fixture("f4.npy"), 5, 400, load_npy_buf);
  expect_flips_safe(fixture("v2.npy"), 6, 400, load_npy_buf);
}

}  // namespace
}  // namespace rsam::io::test
