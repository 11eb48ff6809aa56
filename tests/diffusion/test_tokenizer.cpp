// The CLIP BPE tokenizer against transformers' own CLIPTokenizer
// (tests/data/diffusion/tokenizer/cases.json, made by
// scripts/make_diffusion_fixtures.py on a small learnt vocab/merges pair);
// bad files; and a property test over random bytes.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "diffusion/tokenizer.h"
#include "error.h"
#include "../common/error_of.h"

namespace rsam::diffusion {
namespace {

using nlohmann::json;
using testing::error_of;

std::string data(const std::string& rel) { return std::string(RSAM_DIFFUSION_DATA) + "/" + rel; }

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out += char(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

// A scratch copy of tests/data/diffusion/tokenizer/sd2 that a test may damage.
std::string scratch_tokenizer(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "rsam_tokenizer_" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::copy(data("tokenizer/sd2"), dir);
  return dir;
}

void write(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

TEST(ClipTokenizer, MatchesTransformersOnEveryFixtureText) {
  const json cases = json::parse(slurp(data("tokenizer/cases.json"))).at("cases");
  ASSERT_GE(cases.size(), 150u);
  std::map<std::string, ClipTokenizer> tokenizers;
  size_t checked = 0;
  for (const auto& c : cases) {
    const std::string dir = c.at("tokenizer");
    if (!tokenizers.count(dir)) tokenizers.emplace(dir, ClipTokenizer::from_folder(data(dir)));
    const ClipTokenizer& tok = tokenizers.at(dir);
    const std::string text = c.contains("hex") ? from_hex(c.at("hex")) : c.at("text").get<std::string>();
    EXPECT_EQ(tok.tokenize(text), c.at("tokens").get<std::vector<std::string>>()) << dir << ": " << c.dump();
    EXPECT_EQ(tok.encode(text), c.at("ids").get<std::vector<int64_t>>()) << dir << ": " << c.dump();
    ++checked;
  }
  std::printf("[ tokenizer ] %zu texts equal transformers' ids and tokens\n", checked);
}

TEST(ClipTokenizer, EmptyPromptIsWhatClipTokensGives) {
  for (const char* dir : {"sd1/tokenizer", "sd2/tokenizer", "tokenizer/sd1", "tokenizer/sd2"})
    EXPECT_EQ(ClipTokenizer::from_folder(data(dir)).encode(""), ClipTokens::from_folder(data(dir)).encode("")) << dir;
}

TEST(ClipTokenizer, TruncatesToMaxLengthKeepingEos) {
  const auto tok = ClipTokenizer::from_folder(data("tokenizer/sd2"));
  std::string many;
  for (int i = 0; i < 200; ++i) many += "cat ";
  const auto ids = tok.encode(many);
  ASSERT_EQ(ids.size(), 77u);
  EXPECT_EQ(ids.front(), tok.special().bos);
  EXPECT_EQ(ids.back(), tok.special().eos);
  EXPECT_EQ(ids[75], ids[1]);
}

// transformers' merges.txt reading: the first line is a header whatever it
// says, CR/CRLF end lines, a later duplicate pair takes the later rank.
TEST(ClipTokenizer, MergesAreReadAsTransformersReadsThem) {
  const std::string tc = R"({"model_max_length": 8, "bos_token": "<s>", "eos_token": "<e>", "pad_token": "<e>",
                              "unk_token": "<e>"})";
  const std::string vocab = R"({"a": 0, "b": 1, "c": 2, "a</w>": 3, "b</w>": 4, "c</w>": 5, "ab": 6, "bc</w>": 7,
                                "abc</w>": 8, "<s>": 9, "<e>": 10})";
  auto ids = [&](const std::string& merges) { return ClipTokenizer::from_json(tc, "", vocab, merges).encode("abc"); };
  using V = std::vector<int64_t>;
  EXPECT_EQ(ids("#version: 0.2\na b\n"), (V{9, 6, 5, 10, 10, 10, 10, 10}));
  EXPECT_EQ(ids("a b\n"), (V{9, 0, 1, 5, 10, 10, 10, 10}));                  // the only merge is the header
  EXPECT_EQ(ids("#v\r\nb c</w>\r\na b\r\n"), (V{9, 0, 7, 10, 10, 10, 10, 10}));  // rank 0 first
  EXPECT_EQ(ids("#v\rb c</w>\ra b\rab c</w>\rb c</w>\r"), (V{9, 8, 10, 10, 10, 10, 10, 10}));
  EXPECT_EQ(ids(""), (V{9, 0, 1, 5, 10, 10, 10, 10}));
  EXPECT_EQ(ClipTokenizer::from_json(tc, "", vocab, "#v\na b\n").tokenize("ABC ab"),
            (std::vector<std::string>{"ab", "c</w>", "a", "b</w>"}));
}

TEST(ClipTokenizer, BadFilesAreOneLineErrors) {
  const std::string dir = scratch_tokenizer("bad");
  const std::string vocab = slurp(dir + "/vocab.json"), merges = slurp(dir + "/merges.txt");
  auto expect = [&](const std::string& what) {
    const std::string m = error_of([&] { ClipTokenizer::from_folder(dir); });
    EXPECT_NE(m.find(what), std::string::npos) << m;
  };
  std::filesystem::remove(dir + "/merges.txt");
  expect("merges.txt: cannot read");
  write(dir + "/merges.txt", "#version: 0.2\na b c\n");
  expect("merges.txt: line 2 is not two space-separated symbols");
  write(dir + "/merges.txt", "#version: 0.2\ni n\n\xff\xfe x\n");
  expect("merges.txt is not UTF-8");
  write(dir + "/merges.txt", merges);
  std::filesystem::remove(dir + "/vocab.json");
  expect("vocab.json: cannot read");
  write(dir + "/vocab.json", vocab.substr(0, vocab.size() / 2));
  expect("vocab.json is not valid JSON");
  write(dir + "/vocab.json", "[1, 2]");
  expect("vocab.json must be a non-empty JSON object");
  write(dir + "/vocab.json", R"({"a": 0, "<|startoftext|>": 1, "<|endoftext|>": "two"})");
  expect("the id of \"<|endoftext|>\" is not a non-negative integer");
  write(dir + "/vocab.json", R"({"a": -1})");
  expect("the id of \"a\" is not");
  write(dir + "/vocab.json", R"({"a": 0, "<|startoftext|>": 1, "<|endoftext|>": 2})");
  expect("pad_token '!' is not in vocab.json");
  write(dir + "/vocab.json", vocab);
  write(dir + "/special_tokens_map.json", R"({"unk_token": "<unk>"})");
  expect("unk_token '<unk>' is not in vocab.json");
  std::filesystem::remove(dir + "/tokenizer_config.json");
  expect("tokenizer_config.json: cannot read");
  error_of([] { ClipTokenizer::from_folder(data("no/such/folder")); });
}

// Any bytes: a padded sequence of 77 ids from the vocabulary, BOS first,
// EOS after the text, never a crash or an exception.
TEST(ClipTokenizerProperty, RandomBytesGiveValidIds) {
  for (const char* dir : {"tokenizer/sd2", "tokenizer/sd1"}) {
    const auto tok = ClipTokenizer::from_folder(data(dir));
    std::set<int64_t> ids_in_vocab;
    const json vocab = json::parse(slurp(data(std::string(dir) + "/vocab.json")));
    for (const auto& [t, id] : vocab.items()) ids_in_vocab.insert(id.get<int64_t>());
    const std::vector<std::string> pieces = {"a", "photo", " ", "!", "'s", "<|endoftext|>", "<|startoftext|>",
                                             "\xc3\xa9", "\xe6\x9d\xb1", "\xf0\x9f\x99\x82", "\xcc\x81", "\t",
                                             "\xe2\x80\xa8", "1", "\xc3", "\xff", "\x00"};
    std::mt19937 rng(39);
    for (int n = 0; n < 3000; ++n) {
      std::string s;
      const int len = int(rng() % 200);
      for (int i = 0; i < len; ++i) {
        if (rng() % 3 == 0)
          s += pieces[rng() % pieces.size()];
        else
          s += char(rng() % 256);
      }
      std::vector<int64_t> ids;
      ASSERT_NO_THROW(ids = tok.encode(s)) << dir;
      ASSERT_EQ(ids.size(), 77u);
      EXPECT_EQ(ids[0], tok.special().bos);
      EXPECT_NE(std::find(ids.begin() + 1, ids.end(), tok.special().eos), ids.end());
      for (int64_t id : ids) ASSERT_TRUE(ids_in_vocab.count(id)) << "id " << id << " not in " << dir;
    }
  }
}

}  // namespace
}  // namespace rsam::diffusion
