#include <cstdio>
#include <nlohmann/json.hpp>

#include "io_test_util.h"

namespace rsam::io::test {
namespace {

void load_st_buf(const uint8_t* d, size_t n) { load_safetensors_bytes(d, n); }

// A safetensors file from a literal header and a data buffer.
std::vector<uint8_t> st_file(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> out(8);
  for (int b = 0; b < 8; ++b) out[b] = static_cast<uint8_t>(header.size() >> (8 * b));
  out.insert(out.end(), header.begin(), header.end());
  out.resize(out.size() + data_bytes, 0x3c);
  return out;
}

std::string st_error(const std::string& header, size_t data_bytes) {
  const auto b = st_file(header, data_bytes);
  try {
    load_safetensors_bytes(b.data(), b.size());
  } catch (const rsam::Error& e) {
    return e.what();
  }
  return "<no error>";
}

TEST(Safetensors, FixtureLoadsExactlyInFileOrder) {
  const auto b = fixture("expected.json");
  const auto want = nlohmann::json::parse(b.begin(), b.end());
  const SafetensorsFile f = load_safetensors(data_path("tensors.safetensors"));
  const auto& w = want["safetensors"];
  ASSERT_EQ(f.tensors.size(), w.size());
  for (size_t i = 0; i < w.size(); ++i) {
    EXPECT_EQ(f.tensors[i].first, w[i]["key"].get<std::string>());
    EXPECT_STREQ(dtype_name(f.tensors[i].second.dtype), w[i]["dtype"].get<std::string>().c_str());
    EXPECT_EQ(f.tensors[i].second.shape, w[i]["shape"].get<std::vector<int64_t>>());
    EXPECT_EQ(to_hex(f.tensors[i].second.data), w[i]["hex"].get<std::string>());
  }
  EXPECT_EQ(f.metadata, (want["safetensors_metadata"].get<std::map<std::string, std::string>>()));
  EXPECT_EQ(load_any(data_path("tensors.safetensors")).size(), w.size());
}

TEST(Safetensors, SaveLoadRoundTripIsBitExact) {
  StateDict sd;
  sd.emplace_back("zeta", make_tensor(DType::F32, {2, 3}, 1));
  sd.emplace_back("alpha", make_tensor(DType::BF16, {3}, 2));
  sd.emplace_back("h", make_tensor(DType::F16, {1, 1, 5}, 3));
  sd.emplace_back("d", make_tensor(DType::F64, {}, 4));
  sd.emplace_back("l", make_tensor(DType::I64, {2}, 5));
  sd.emplace_back("i", make_tensor(DType::I32, {3}, 6));
  sd.emplace_back("s", make_tensor(DType::I16, {3}, 7));
  sd.emplace_back("c", make_tensor(DType::I8, {3}, 8));
  sd.emplace_back("u", make_tensor(DType::U8, {3}, 9));
  sd.emplace_back("b", make_tensor(DType::Bool, {3}, 10));
  sd.emplace_back("e", make_tensor(DType::F32, {0}, 11));
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"ünïcode", "välue"}};
  const std::string p = temp_path("rt.safetensors");
  save_safetensors(p, sd, meta);
  const auto bytes = read_file(p);
  uint64_t n = 0;
  for (int b = 7; b >= 0; --b) n = n << 8 | bytes[b];
  EXPECT_EQ(n % 8, 0u);
  const SafetensorsFile f = load_safetensors(p);
  EXPECT_EQ(f.metadata, meta);
  ASSERT_EQ(f.tensors.size(), sd.size());
  for (size_t i = 0; i < sd.size(); ++i) {
    EXPECT_EQ(f.tensors[i].first, sd[i].first);
    EXPECT_EQ(f.tensors[i].second.dtype, sd[i].second.dtype);
    EXPECT_EQ(f.tensors[i].second.shape, sd[i].second.shape);
    EXPECT_EQ(f.tensors[i].second.data, sd[i].second.data);
  }
  std::remove(p.c_str());
}

TEST(Safetensors, SaveRefusesDuplicateAndReservedKeys) {
  StateDict sd;
  sd.emplace_back("a", make_tensor(DType::F32, {1}, 1));
  sd.emplace_back("a", make_tensor(DType::F32, {1}, 2));
  EXPECT_THROW(save_safetensors(temp_path("dup.safetensors"), sd), rsam::Error);
  sd.pop_back();
  sd.emplace_back("__metadata__", make_tensor(DType::F32, {1}, 2));
  EXPECT_THROW(save_safetensors(temp_path("res.safetensors"), sd), rsam::Error);
}

TEST(Safetensors, HeaderValidation) {
  EXPECT_EQ(st_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8), "<no error>");
  EXPECT_NE(st_error(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8).find("'a'"), std::string::npos);
  EXPECT_NE(st_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", 8).find("outside"), std::string::npos);
  EXPECT_NE(st_error(R"({"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", 8).find("dtype"), std::string::npos);
  EXPECT_NE(st_error(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8).find("dimension"), std::string::npos);
  EXPECT_NE(st_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,0]}})", 8).find("outside"), std::string::npos);
  EXPECT_NE(st_error(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                     R"("b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})",
                     8)
                .find("overlaps"),
            std::string::npos);
  EXPECT_NE(st_error(R"({"__metadata__":{"k":1}})", 0).find("metadata"), std::string::npos);
  EXPECT_NE(st_error(R"({"a":1})", 0).find("'a'"), std::string::npos);
  EXPECT_NE(st_error(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                     R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                     8)
                .find("repeats"),
            std::string::npos);
  EXPECT_NE(st_error(R"([1,2])", 0).find("object"), std::string::npos);
  EXPECT_NE(st_error(R"({"a":)", 0).find("JSON"), std::string::npos);
  EXPECT_NE(st_error(std::string(100, '[') + std::string(100, ']'), 0).find("deeply"), std::string::npos);
  EXPECT_NE(st_error(R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}})", 8),
            "<no error>");
  // torch.save files (zip and legacy pickle) are named as such.
  for (const char* pth : {"sd_zip.pth", "sd_legacy.pth"}) {
    const auto b = fixture(pth);
    try {
      load_safetensors_bytes(b.data(), b.size());
      ADD_FAILURE() << pth << " loaded as safetensors";
    } catch (const rsam::Error& e) {
      EXPECT_NE(std::string(e.what()).find("looks like a torch.save (.pth) file"), std::string::npos) << e.what();
    }
  }
  const auto huge_len = std::vector<uint8_t>{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '{', '}'};
  EXPECT_THROW(load_safetensors_bytes(huge_len.data(), huge_len.size()), rsam::Error);
}

TEST(Safetensors, EveryTruncationIsAnError) {
  expect_all_prefixes_fail(fixture("tensors.safetensors"), load_st_buf);
}

TEST(Safetensors, ByteFlipsLoadOrThrow) { expect_flips_safe(fixture("tensors.safetensors"), 77, 600, load_st_buf); }

}  // namespace
}  // namespace rsam::io::test
