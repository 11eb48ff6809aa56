#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "io/pickle.h"
#include "io/zip.h"
#include "io_test_util.h"

namespace rsam::io::test {
namespace {

const nlohmann::json& expected() {
  static const nlohmann::json j = [] {
    const auto b = fixture("expected.json");
    return nlohmann::json::parse(b.begin(), b.end());
  }();
  return j;
}

// Compares a loaded state dict with the fixture script's record: same keys
// in the same order, dtypes, shapes and bit-identical bytes.
void expect_matches(const StateDict& sd, const nlohmann::json& want) {
  ASSERT_EQ(sd.size(), want.size());
  for (size_t i = 0; i < sd.size(); ++i) {
    SCOPED_TRACE(sd[i].first);
    EXPECT_EQ(sd[i].first, want[i]["key"].get<std::string>());
    EXPECT_STREQ(dtype_name(sd[i].second.dtype), want[i]["dtype"].get<std::string>().c_str());
    EXPECT_EQ(sd[i].second.shape, want[i]["shape"].get<std::vector<int64_t>>());
    EXPECT_EQ(to_hex(sd[i].second.data), want[i]["hex"].get<std::string>());
    EXPECT_EQ(sd[i].second.data.size(), static_cast<size_t>(sd[i].second.numel()) * dtype_size(sd[i].second.dtype));
  }
}

void expect_equal(const StateDict& a, const StateDict& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    EXPECT_EQ(a[i].second.dtype, b[i].second.dtype);
    EXPECT_EQ(a[i].second.shape, b[i].second.shape);
    EXPECT_EQ(a[i].second.data, b[i].second.data) << a[i].first;
  }
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const rsam::Error& e) {
    return e.what();
  }
  return "<no error>";
}

void load_pth_buf(const uint8_t* d, size_t n) { load_pth_bytes(d, n); }

TEST(Pth, ZipFixtureLoadsExactly) { expect_matches(load_pth(data_path("sd_zip.pth")), expected()["sd"]); }

TEST(Pth, LegacyFixtureLoadsExactly) { expect_matches(load_pth(data_path("sd_legacy.pth")), expected()["sd"]); }

TEST(Pth, StridedViewsAreMaterialized) {
  const StateDict sd = load_pth(data_path("sd_zip.pth"));
  const TensorData* t = nullptr;
  for (const auto& kv : sd)
    if (kv.first == "view.transposed") t = &kv.second;
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->shape, (std::vector<int64_t>{6, 4}));
}

TEST(Pth, UnwrapsModelAndStateDictWrappers) {
  expect_matches(load_pth(data_path("wrapped_model.pth")), expected()["small"]);
  expect_matches(load_pth(data_path("wrapped_state_dict.pth")), expected()["small"]);
}

TEST(Pth, OtherPickleProtocols) {
  expect_matches(load_pth(data_path("protocol4.pth")), expected()["small"]);
  expect_matches(load_pth(data_path("protocol1_legacy.pth")), expected()["small"]);
  expect_matches(load_any(data_path("protocol1_legacy.pth")), expected()["small"]);
}

TEST(Pth, StripsModulePrefix) { expect_matches(load_pth(data_path("module_prefix.pth")), expected()["small"]); }

TEST(Pth, NonTensorValueNamesTheKey) {
  const std::string msg = error_of([] { load_pth(data_path("non_tensor.pth")); });
  EXPECT_NE(msg.find("'epoch'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("non_tensor.pth"), std::string::npos) << msg;
}

TEST(Pth, RefusesForeignGlobals) {
  for (const char* name : {"evil_global.pth", "evil_global_legacy.pth"}) {
    const std::string msg = error_of([&] { load_pth(data_path(name)); });
    EXPECT_NE(msg.find("refuses pickle global os.system"), std::string::npos) << msg;
  }
  const std::string msg = error_of([] { load_pth(data_path("evil_stack_global.pth")); });
  EXPECT_NE(msg.find("refuses pickle global builtins.eval"), std::string::npos) << msg;
}

TEST(Pth, LoadAnyDetectsBothTorchFormats) {
  expect_matches(load_any(data_path("sd_zip.pth")), expected()["sd"]);
  expect_matches(load_any(data_path("sd_legacy.pth")), expected()["sd"]);
  EXPECT_THROW(load_any(data_path("f4.npy")), rsam::Error);
}

TEST(Pth, MissingFileNamesThePath) {
  const std::string msg = error_of([] { load_pth(data_path("nope.pth")); });
  EXPECT_NE(msg.find("nope.pth"), std::string::npos) << msg;
}

StateDict sample_state_dict() {
  StateDict sd;
  sd.emplace_back("image_encoder.patch_embed.proj.weight", make_tensor(DType::F32, {4, 3, 2, 2}, 1));
  sd.emplace_back("b.half", make_tensor(DType::F16, {5}, 2));
  sd.emplace_back("a.bf16", make_tensor(DType::BF16, {2, 3}, 3));
  sd.emplace_back("scalar", make_tensor(DType::F64, {}, 4));
  sd.emplace_back("ids", make_tensor(DType::I64, {3}, 5));
  sd.emplace_back("i32", make_tensor(DType::I32, {2, 1}, 6));
  sd.emplace_back("i16", make_tensor(DType::I16, {3}, 7));
  sd.emplace_back("i8", make_tensor(DType::I8, {3}, 8));
  sd.emplace_back("u8", make_tensor(DType::U8, {4}, 9));
  sd.emplace_back("mask", make_tensor(DType::Bool, {2, 2}, 10));
  sd.emplace_back("empty", make_tensor(DType::F32, {0, 3}, 11));
  return sd;
}

TEST(Pth, SaveLoadRoundTripIsBitExact) {
  const StateDict sd = sample_state_dict();
  const std::string p = temp_path("roundtrip.pth");
  save_pth(p, sd);
  expect_equal(load_pth(p), sd);
  expect_equal(load_any(p), sd);
  // Re-saving what was loaded gives the same file (the writer is deterministic).
  const std::string p2 = temp_path("roundtrip2.pth");
  save_pth(p2, load_pth(p));
  EXPECT_EQ(read_file(p), read_file(p2));
  std::remove(p.c_str());
  std::remove(p2.c_str());
}

TEST(Pth, SavedRecordsAreStoredAndAligned) {
  const std::string p = temp_path("aligned.pth");
  save_pth(p, sample_state_dict());
  const auto bytes = read_file(p);
  const auto entries = detail::read_zip_directory(bytes.data(), bytes.size());
  ASSERT_FALSE(entries.empty());
  EXPECT_EQ(entries[0].name, "archive/data.pkl");  // torch takes the folder from the first record
  bool has_version = false;
  for (const auto& e : entries) {
    EXPECT_EQ(e.offset % 64, 0u) << e.name;
    if (e.name == "archive/version") {
      has_version = true;
      EXPECT_EQ(std::string(bytes.begin() + e.offset, bytes.begin() + e.offset + e.size), "3\n");
    }
  }
  EXPECT_TRUE(has_version);
  std::remove(p.c_str());
}

TEST(Pth, Zip64RecordsRoundTrip) {
  const StateDict sd = sample_state_dict();
  const std::string p = temp_path("zip64.pth");
  detail::save_pth_zip64(p, sd);
  expect_equal(load_pth(p), sd);
  std::remove(p.c_str());
}

TEST(Pth, SaveRejectsInconsistentTensor) {
  StateDict sd;
  sd.emplace_back("bad", make_tensor(DType::F32, {2, 2}, 1));
  sd.back().second.data.pop_back();
  const std::string p = temp_path("bad.pth");
  const std::string msg = error_of([&] { save_pth(p, sd); });
  EXPECT_NE(msg.find("'bad'"), std::string::npos) << msg;
}

TEST(Pth, Crc32KnownValue) {
  const std::string s = "123456789";
  EXPECT_EQ(detail::crc32(reinterpret_cast<const uint8_t*>(s.data()), s.size()), 0xCBF43926u);
}

TEST(Pth, EveryTruncationIsAnError) {
  for (const char* name : {"sd_zip.pth", "sd_legacy.pth", "wrapped_model.pth", "wrapped_state_dict.pth",
                           "module_prefix.pth", "protocol4.pth", "protocol1_legacy.pth"}) {
    SCOPED_TRACE(name);
    expect_all_prefixes_fail(fixture(name), load_pth_buf);
  }
}

TEST(Pth, ByteFlipsLoadOrThrow) {
  uint32_t seed = 1;
  for (const char* name : {"sd_zip.pth", "sd_legacy.pth", "wrapped_state_dict.pth", "protocol1_legacy.pth"}) {
    SCOPED_TRACE(name);
    expect_flips_safe(fixture(name), seed++, 400, load_pth_buf);
  }
}

// Hand-built pickles inside a legacy container exercise the VM's limits.
std::string U(const std::string& s) {  // BINUNICODE
  std::string o = "X";
  for (int b = 0; b < 4; ++b) o += static_cast<char>(s.size() >> (8 * b));
  return o + s;
}
std::string K(uint8_t v) { return std::string("K") + static_cast<char>(v); }  // BININT1
std::string J(int32_t v) {                                                      // BININT
  std::string o = "J";
  for (int b = 0; b < 4; ++b) o += static_cast<char>(static_cast<uint32_t>(v) >> (8 * b));
  return o;
}
std::string G(const std::string& module, const std::string& name) { return "c" + module + "\n" + name + "\n"; }
std::string tuple(const std::vector<std::string>& xs) {
  std::string o = "(";
  for (const auto& x : xs) o += x;
  return o + "t";
}
std::string pid(const std::string& type, const std::string& key, uint8_t numel) {
  return tuple({U("storage"), G("torch", type), U(key), U("cpu"), K(numel)}) + "Q";
}
const std::string P2 = "\x80\x02";

std::vector<uint8_t> legacy_with(const std::string& main_pickle, const std::string& tail = P2 + "].") {
  std::string s = P2 + "\x8a\x0a" + std::string("\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 10) + ".";
  s += P2 + "M" + std::string("\xe9\x03", 2) + ".";  // 1001
  s += P2 + "}.";                                     // sys_info
  s += main_pickle + tail;
  return std::vector<uint8_t>(s.begin(), s.end());
}

std::string vm_error(const std::string& main_pickle) {
  const auto b = legacy_with(main_pickle);
  return error_of([&] { load_pth_bytes(b.data(), b.size()); });
}

TEST(PthPickle, EmptyStateDictLoads) {
  const auto b = legacy_with(P2 + "}.");
  EXPECT_TRUE(load_pth_bytes(b.data(), b.size()).empty());
}

TEST(PthPickle, HostileInputsAreRefused) {
  EXPECT_NE(vm_error(P2 + ".").find("stack underflow"), std::string::npos);
  EXPECT_NE(vm_error(P2 + "(((.").find("stack underflow"), std::string::npos);
  EXPECT_NE(vm_error(P2 + "h\x05.").find("memo key 5"), std::string::npos);
  EXPECT_NE(vm_error(P2 + "i__builtin__\nobject\n.").find("unsupported opcode"), std::string::npos);
  EXPECT_NE(vm_error(P2 + std::string(5000, '(') + ".").find("MARK"), std::string::npos);
  EXPECT_NE(vm_error(P2 + G("collections", "OrderedDict") + K(1) + "\x85R.").find("arguments"), std::string::npos);
  // A list containing itself (a cycle through the memo) must neither hang nor leak.
  EXPECT_NE(vm_error(P2 + "]q" + std::string(1, '\0') + "h" + std::string(1, '\0') + "a.").find("list"),
            std::string::npos);
  EXPECT_NE(vm_error(P2 + "}" + U("k") + K(1) + "s.").find("'k'"), std::string::npos);
  EXPECT_NE(vm_error(P2 + "X\xff\xff\xff\xff").find("truncated"), std::string::npos);
  EXPECT_NE(vm_error("\x80\x09}.").find("protocol"), std::string::npos);
  EXPECT_NE(vm_error(P2 + "}" + U("k") + G("torch", "float32") + "s.").find("not a tensor"), std::string::npos);
  EXPECT_NE(vm_error(P2 + tuple({U("module"), K(1)}) + "Q.").find("persistent id"), std::string::npos);
  // A storage used as two element types is ambiguous.
  const std::string two_types =
      P2 + "}(" + U("a") + pid("FloatStorage", "k", 1) + U("b") + pid("HalfStorage", "k", 1) + "u.";
  EXPECT_NE(vm_error(two_types).find("two different element types"), std::string::npos);
}

// One tensor over a 4-element float storage "k" holding 1,2,3,4.
std::vector<uint8_t> legacy_tensor(const std::string& offset, const std::string& size, const std::string& stride) {
  const std::string main = P2 + "}" + U("t") + G("torch._utils", "_rebuild_tensor_v2") + "(" +
                           pid("FloatStorage", "k", 4) + offset + size + stride + "\x89" +
                           G("collections", "OrderedDict") + ")R" + "tRs.";
  std::string tail = P2 + "]" + U("k") + "a.";
  tail += std::string("\x04\x00\x00\x00\x00\x00\x00\x00", 8);
  for (int i = 0; i < 4; ++i) {
    const float f = static_cast<float>(i + 1);
    tail.append(reinterpret_cast<const char*>(&f), 4);
  }
  return legacy_with(main, tail);
}

TEST(PthPickle, ViewGeometryIsBoundsChecked) {
  auto load = [](const std::vector<uint8_t>& b) { return load_pth_bytes(b.data(), b.size()); };
  // shape (2,2) stride (1,2) is a transpose.
  const StateDict ok = load(legacy_tensor(K(0), tuple({K(2), K(2)}), tuple({K(1), K(2)})));
  ASSERT_EQ(ok.size(), 1u);
  std::vector<float> v(4);
  std::memcpy(v.data(), ok[0].second.data.data(), 16);
  EXPECT_EQ(v, (std::vector<float>{1, 3, 2, 4}));
  // Broadcast (stride 0) is legal and materialized.
  const StateDict bc = load(legacy_tensor(K(3), tuple({K(3)}), tuple({K(0)})));
  ASSERT_EQ(bc[0].second.data.size(), 12u);
  std::memcpy(v.data(), bc[0].second.data.data(), 12);
  EXPECT_EQ(v[0], 4.0f);
  EXPECT_EQ(v[2], 4.0f);
  // Out of range in every way a view can be.
  EXPECT_THROW(load(legacy_tensor(K(1), tuple({K(2), K(2)}), tuple({K(2), K(1)}))), rsam::Error);
  EXPECT_THROW(load(legacy_tensor(K(4), tuple({K(1)}), tuple({K(1)}))), rsam::Error);
  EXPECT_THROW(load(legacy_tensor(J(-1), tuple({K(1)}), tuple({K(1)}))), rsam::Error);
  EXPECT_THROW(load(legacy_tensor(K(0), tuple({K(2)}), tuple({J(-1)}))), rsam::Error);
  const std::string huge = J(0x7fffffff);
  EXPECT_THROW(load(legacy_tensor(K(0), tuple({huge, huge, huge}), tuple({K(0), K(0), K(0)}))), rsam::Error);
  EXPECT_THROW(load(legacy_tensor(K(0), tuple({huge, huge}), tuple({huge, huge}))), rsam::Error);
  EXPECT_THROW(load(legacy_tensor(K(0), tuple({K(2)}), tuple({K(1), K(1)}))), rsam::Error);
  // Broadcasting a huge tensor out of a tiny storage hits the expansion budget.
  EXPECT_THROW(load(legacy_tensor(K(0), tuple({huge}), tuple({K(0)}))), rsam::Error);
}

TEST(PthPickle, WriterOutputParsesBack) {
  const StateDict sd = sample_state_dict();
  const auto pkl = detail::pickle_state_dict(sd);
  detail::PickleContext ctx;
  size_t pos = 0;
  const detail::PyValue* root = detail::unpickle(pkl.data(), pkl.size(), pos, ctx, true);
  EXPECT_EQ(pos, pkl.size());
  ASSERT_EQ(root->kind, detail::PyValue::Kind::Dict);
  EXPECT_EQ(root->items.size(), 2 * sd.size());
  EXPECT_EQ(ctx.storages.size(), sd.size());
}

}  // namespace
}  // namespace rsam::io::test
