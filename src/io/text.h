// Bytes shown to people or written into JSON: file names on Linux are bytes,
// not necessarily UTF-8, and the JSON writer throws on invalid UTF-8.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace rsam::io {

// Length of the valid UTF-8 sequence at s[i] (RFC 3629: no overlong forms, no
// surrogates, nothing above U+10FFFF), 0 if there is none.
size_t utf8_length(const std::string& s, size_t i);
bool is_utf8(const std::string& s);
// `s` with every byte that is not part of valid UTF-8 written as \xNN, and
// with `controls` also control characters (for one-line messages). The
// result is always valid UTF-8.
std::string escape_bytes(const std::string& s, bool controls = true);

// Plain string helpers, kept here once.
// "a,,b" -> {"a", "", "b"} ("" -> {""}); with skip_empty: {"a", "b"} ("" -> {}).
std::vector<std::string> split(const std::string& s, char sep, bool skip_empty = false);
std::string lower(std::string s);  // ASCII only

}  // namespace rsam::io
