// The CLIP BPE tokenizer of a Stable Diffusion folder (tokenizer/vocab.json,
// merges.txt, tokenizer_config.json, special_tokens_map.json): transformers'
// slow CLIPTokenizer as GleSAM pins it (4.28), called as diffusers calls it
// (padding="max_length", max_length=model_max_length, truncation=True).
// Torch-free.
//
// transformers cleans text with ftfy when that package is installed and with
// BERT's BasicTokenizer otherwise; rsam is the second (ftfy is a heuristic
// text fixer with no C++ counterpart). For a prompt that is:
//   1. split on the special tokens' texts (bos, eos, unk, pad — "!" for
//      SD-2.x — and any additional ones), which keep their own ids;
//   2. in each other piece, BasicTokenizer: control characters, U+0000 and
//      U+FFFD dropped, whitespace made spaces, CJK ideographs spaced apart,
//      split on whitespace, each word lower-cased, NFD-decomposed with the
//      non-spacing marks (accents) dropped, and split around every
//      punctuation character;
//   3. the CLIP pattern over the words: letter runs, single digits, runs of
//      other characters (its special-token and 's 't 're ... alternatives
//      cannot match any more: step 2 left every apostrophe and '<' '|' a
//      word of its own);
//   4. each match's UTF-8 bytes mapped to GPT-2's printable byte alphabet,
//      "</w>" appended to its last symbol, and pairs merged lowest
//      merges.txt rank first; symbols not in vocab.json become unk;
//   5. BOS + the first max_length - 2 ids + EOS, padded with the pad id.
// Bytes that are not UTF-8 read as U+FFFD (Python's errors="replace"), so
// step 2 drops them. Unicode properties come from ICU: a character assigned
// after the Unicode version of the Python that made the fixtures may be
// classed differently.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "diffusion/config.h"

namespace rsam::diffusion {

class ClipTokenizer {
 public:
  // rsam::Error (one line, naming the file) on a missing or corrupt file.
  static ClipTokenizer from_folder(const std::string& tokenizer_dir);
  // From the files' contents (special_tokens_map may be empty: absent).
  static ClipTokenizer from_json(const std::string& tokenizer_config, const std::string& special_tokens_map,
                                 const std::string& vocab, const std::string& merges,
                                 const std::string& origin = "tokenizer");

  // The model's input: max_length ids (see the header comment).
  std::vector<int64_t> encode(const std::string& prompt) const;
  // The tokens before ids, truncation and padding (transformers' tokenize()).
  std::vector<std::string> tokenize(const std::string& prompt) const;

  const ClipTokens& special() const { return special_; }
  size_t vocab_size() const { return vocab_.size(); }
  size_t merges() const { return ranks_.size(); }

 private:
  std::vector<std::string> bpe(const std::string& word) const;
  int64_t id_of(const std::string& token) const;

  ClipTokens special_;
  std::unordered_map<std::string, int64_t> vocab_;
  // "first second" -> rank (the symbols hold no whitespace).
  std::unordered_map<std::string, int> ranks_;
};

}  // namespace rsam::diffusion
