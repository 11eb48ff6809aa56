#include "diffusion/tokenizer.h"

#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/utf8.h>

#include <climits>
#include <fstream>
#include <nlohmann/json.hpp>

#include "error.h"

namespace rsam::diffusion {

using nlohmann::json;

namespace {

// transformers reads at most this many merges (CLIP's 49152-token vocabulary
// minus the 256 bytes and the two specials).
constexpr size_t kMaxMerges = 49152 - 256 - 2;

// ---- code points ---------------------------------------------------------------

// Python's str.decode("utf-8", errors="replace"): each ill-formed subsequence
// becomes U+FFFD (ICU's U8_NEXT skips the same maximal subparts). `bad` is
// set when one was met.
std::u32string decode_utf8(const std::string& s, bool* bad = nullptr) {
  std::u32string out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const int32_t n = s.size() > size_t(INT32_MAX) ? INT32_MAX : int32_t(s.size());
  for (int32_t i = 0; i < n;) {
    UChar32 c;
    U8_NEXT(p, i, n, c);
    if (c < 0) {
      if (bad) *bad = true;
      c = 0xFFFD;
    }
    out.push_back(char32_t(c));
  }
  return out;
}

std::string encode_utf8(const std::u32string& s) {
  std::string out;
  for (char32_t c : s) {
    if (c < 0x80) {
      out += char(c);
    } else if (c < 0x800) {
      out += char(0xC0 | (c >> 6));
      out += char(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
      out += char(0xE0 | (c >> 12));
      out += char(0x80 | ((c >> 6) & 0x3F));
      out += char(0x80 | (c & 0x3F));
    } else {
      out += char(0xF0 | (c >> 18));
      out += char(0x80 | ((c >> 12) & 0x3F));
      out += char(0x80 | ((c >> 6) & 0x3F));
      out += char(0x80 | (c & 0x3F));
    }
  }
  return out;
}

// str.isspace() (what str.split() and str.strip() split on).
bool py_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

int8_t category(char32_t c) { return int8_t(u_charType(UChar32(c))); }

// BasicTokenizer's _is_whitespace, _is_control, _is_punctuation, _is_chinese_char.
bool bert_whitespace(char32_t c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || category(c) == U_SPACE_SEPARATOR;
}
bool bert_control(char32_t c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  switch (category(c)) {
    case U_CONTROL_CHAR: case U_FORMAT_CHAR: case U_SURROGATE: case U_PRIVATE_USE_CHAR: case U_UNASSIGNED:
      return true;
    default:
      return false;
  }
}
bool bert_punctuation(char32_t c) {
  if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126)) return true;
  switch (category(c)) {
    case U_DASH_PUNCTUATION: case U_START_PUNCTUATION: case U_END_PUNCTUATION: case U_CONNECTOR_PUNCTUATION:
    case U_OTHER_PUNCTUATION: case U_INITIAL_PUNCTUATION: case U_FINAL_PUNCTUATION:
      return true;
    default:
      return false;
  }
}
bool cjk(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}
// The `regex` module's \p{L} and \p{N}.
bool letter(char32_t c) { return u_isalpha(UChar32(c)); }
bool number(char32_t c) {
  const int8_t t = category(c);
  return t == U_DECIMAL_DIGIT_NUMBER || t == U_LETTER_NUMBER || t == U_OTHER_NUMBER;
}

std::vector<std::u32string> split_py(const std::u32string& s) {
  std::vector<std::u32string> out;
  std::u32string cur;
  for (char32_t c : s) {
    if (!py_space(c)) {
      cur += c;
    } else if (!cur.empty()) {
      out.push_back(std::move(cur));
      cur.clear();
    }
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

// str.lower() then BasicTokenizer's _run_strip_accents (NFD, drop Mn).
std::u32string lower_strip_accents(const std::u32string& word) {
  icu::UnicodeString u = icu::UnicodeString::fromUTF32(reinterpret_cast<const UChar32*>(word.data()),
                                                      int32_t(word.size()));
  u.toLower(icu::Locale::getRoot());
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* nfd = icu::Normalizer2::getNFDInstance(status);
  if (U_FAILURE(status)) throw Error(std::string("ICU's NFD normalizer is unavailable: ") + u_errorName(status));
  const icu::UnicodeString d = nfd->normalize(u, status);
  if (U_FAILURE(status)) throw Error(std::string("ICU's NFD normalization failed: ") + u_errorName(status));
  std::u32string out;
  for (int32_t i = 0; i < d.length(); i = d.moveIndex32(i, 1)) {
    const UChar32 c = d.char32At(i);
    if (u_charType(c) != U_NON_SPACING_MARK) out += char32_t(c);
  }
  return out;
}

// BERT's BasicTokenizer(do_lower_case=True).tokenize(text).
std::vector<std::u32string> basic_tokenize(const std::u32string& text) {
  std::u32string clean;
  for (char32_t c : text) {
    if (c == 0 || c == 0xFFFD || bert_control(c)) continue;
    if (bert_whitespace(c)) {
      clean += U' ';
    } else if (cjk(c)) {
      clean += U' ';
      clean += c;
      clean += U' ';
    } else {
      clean += c;
    }
  }
  std::vector<std::u32string> words;
  for (const auto& token : split_py(clean)) {
    std::u32string cur;
    for (char32_t c : lower_strip_accents(token)) {
      if (!bert_punctuation(c)) {
        cur += c;
        continue;
      }
      if (!cur.empty()) words.push_back(std::move(cur));
      cur.clear();
      words.push_back(std::u32string(1, c));
    }
    if (!cur.empty()) words.push_back(std::move(cur));
  }
  return words;
}

// The CLIP pattern's three live alternatives within one word (see the header).
std::vector<std::u32string> pre_tokenize(const std::u32string& word) {
  std::vector<std::u32string> out;
  for (size_t i = 0; i < word.size();) {
    size_t j = i + 1;
    if (letter(word[i])) {
      while (j < word.size() && letter(word[j])) ++j;
    } else if (!number(word[i])) {
      while (j < word.size() && !letter(word[j]) && !number(word[j])) ++j;
    }
    out.push_back(word.substr(i, j - i));
    i = j;
  }
  return out;
}

// GPT-2's bytes_to_unicode(): printable bytes stand for themselves, the
// others for 256, 257, ... in byte order; as UTF-8 strings.
const std::vector<std::string>& byte_symbols() {
  static const std::vector<std::string> table = [] {
    std::vector<std::string> t(256);
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      t[size_t(b)] = encode_utf8(std::u32string(1, printable ? char32_t(b) : next++));
    }
    return t;
  }();
  return table;
}

std::string quoted(const std::string& token) {
  const std::string q = json(token).dump(-1, ' ', false, json::error_handler_t::replace);
  return q.size() > 40 ? q.substr(0, 37) + "...\"" : q;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot read the file");
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

std::unordered_map<std::string, int64_t> read_vocab(const std::string& text, const std::string& origin) {
  json j;
  try {
    j = json::parse(text);
  } catch (const std::exception&) {
    throw Error(origin + " is not valid JSON");
  }
  if (!j.is_object() || j.empty()) throw Error(origin + " must be a non-empty JSON object of token -> id");
  std::unordered_map<std::string, int64_t> vocab;
  vocab.reserve(j.size());
  for (const auto& [token, id] : j.items()) {
    if (!id.is_number_integer() || (id.is_number_unsigned() ? id.get<uint64_t>() > uint64_t(INT64_MAX)
                                                            : id.get<int64_t>() < 0))
      throw Error(origin + ": the id of " + quoted(token) + " is not a non-negative integer");
    vocab[token] = id.get<int64_t>();
  }
  return vocab;
}

// CLIPTokenizer.__init__: open() in text mode (universal newlines), strip(),
// split("\n"), the first line (the "#version" header) skipped, at most
// kMaxMerges kept, a later duplicate overriding an earlier rank. A line that
// is not two symbols is a corrupt file here (transformers would keep it as a
// merge that never applies).
std::unordered_map<std::string, int> read_merges(const std::string& bytes, const std::string& origin) {
  bool bad = false;
  std::u32string text = decode_utf8(bytes, &bad);
  if (bad) throw Error(origin + " is not UTF-8 text");
  std::vector<std::u32string> lines(1);
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == U'\r' && i + 1 < text.size() && text[i + 1] == U'\n') continue;
    if (text[i] == U'\n' || text[i] == U'\r') {
      lines.emplace_back();
    } else {
      lines.back() += text[i];
    }
  }
  // strip(): leading and trailing blank lines and spaces go.
  while (!lines.empty() && split_py(lines.back()).empty()) lines.pop_back();
  std::unordered_map<std::string, int> ranks;
  size_t first = 0;
  while (first < lines.size() && split_py(lines[first]).empty()) ++first;
  for (size_t i = first + 1; i < lines.size() && i - first - 1 < kMaxMerges; ++i) {
    const auto pair = split_py(lines[i]);
    if (pair.size() != 2)
      throw Error(origin + ": line " + std::to_string(i + 1) + " is not two space-separated symbols");
    ranks[encode_utf8(pair[0]) + " " + encode_utf8(pair[1])] = int(i - first - 1);
  }
  return ranks;
}

}  // namespace

ClipTokenizer ClipTokenizer::from_json(const std::string& tokenizer_config, const std::string& special_tokens_map,
                                       const std::string& vocab, const std::string& merges,
                                       const std::string& origin) {
  ClipTokenizer t;
  t.vocab_ = read_vocab(vocab, origin + "/vocab.json");
  t.ranks_ = read_merges(merges, origin + "/merges.txt");
  t.special_ = ClipTokens::from_json(tokenizer_config, special_tokens_map, vocab, origin);
  return t;
}

ClipTokenizer ClipTokenizer::from_folder(const std::string& dir) {
  const std::string stm_path = dir + "/special_tokens_map.json";
  const std::string stm = std::ifstream(stm_path).good() ? read_file(stm_path) : std::string();
  return from_json(read_file(dir + "/tokenizer_config.json"), stm, read_file(dir + "/vocab.json"),
                   read_file(dir + "/merges.txt"), dir);
}

std::vector<std::string> ClipTokenizer::bpe(const std::string& word_bytes) const {
  const auto& symbols = byte_symbols();
  std::vector<std::string> word;
  for (unsigned char b : word_bytes) word.push_back(symbols[b]);
  word.back() += "</w>";
  while (word.size() > 1) {
    int best = INT_MAX;
    size_t at = 0;
    for (size_t i = 0; i + 1 < word.size(); ++i) {
      const auto it = ranks_.find(word[i] + " " + word[i + 1]);
      if (it != ranks_.end() && it->second < best) {
        best = it->second;
        at = i;
      }
    }
    if (best == INT_MAX) break;
    // Every occurrence of the pair, left to right, without overlaps.
    const std::string first = word[at], second = word[at + 1];
    std::vector<std::string> merged;
    for (size_t i = 0; i < word.size(); ++i) {
      if (i + 1 < word.size() && word[i] == first && word[i + 1] == second) {
        merged.push_back(first + second);
        ++i;
      } else {
        merged.push_back(std::move(word[i]));
      }
    }
    word = std::move(merged);
  }
  return word;
}

std::vector<std::string> ClipTokenizer::tokenize(const std::string& prompt) const {
  const std::u32string text = decode_utf8(prompt);
  std::vector<std::pair<std::u32string, std::string>> specials;
  for (const auto& [s, id] : special_.special_ids) specials.emplace_back(decode_utf8(s), s);
  std::vector<std::string> tokens;
  auto add_text = [&](const std::u32string& piece) {
    for (const auto& word : basic_tokenize(piece))
      for (const auto& part : pre_tokenize(word))
        for (auto& t : bpe(encode_utf8(part))) tokens.push_back(std::move(t));
  };
  // The special tokens' texts are cut out first, leftmost and longest
  // first (transformers' Trie.split), and kept whole.
  size_t start = 0;
  for (size_t i = 0; i < text.size();) {
    const std::pair<std::u32string, std::string>* hit = nullptr;
    for (const auto& s : specials)
      if (!s.first.empty() && text.compare(i, s.first.size(), s.first) == 0 &&
          (!hit || s.first.size() > hit->first.size()))
        hit = &s;
    if (!hit) {
      ++i;
      continue;
    }
    add_text(text.substr(start, i - start));
    tokens.push_back(hit->second);
    i += hit->first.size();
    start = i;
  }
  add_text(text.substr(start));
  return tokens;
}

int64_t ClipTokenizer::id_of(const std::string& token) const {
  const auto s = special_.special_ids.find(token);
  if (s != special_.special_ids.end()) return s->second;
  const auto it = vocab_.find(token);
  return it == vocab_.end() ? special_.unk : it->second;
}

std::vector<int64_t> ClipTokenizer::encode(const std::string& prompt) const {
  const auto tokens = tokenize(prompt);
  const size_t room = size_t(special_.max_length) - 2;
  std::vector<int64_t> ids(size_t(special_.max_length), special_.pad);
  ids[0] = special_.bos;
  size_t n = 0;
  for (; n < tokens.size() && n < room; ++n) ids[n + 1] = id_of(tokens[n]);
  ids[n + 1] = special_.eos;
  return ids;
}

}  // namespace rsam::diffusion
