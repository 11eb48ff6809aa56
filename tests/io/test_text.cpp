// The shared string helpers and the logging hook.
#include <gtest/gtest.h>

#include "io/text.h"
#include "log.h"

namespace rsam::io {
namespace {

TEST(Text, SplitKeepsOrSkipsEmptyParts) {
  EXPECT_EQ(split("a,,b", ','), (std::vector<std::string>{"a", "", "b"}));
  EXPECT_EQ(split("", ','), (std::vector<std::string>{""}));
  EXPECT_EQ(split("a,,b,", ',', true), (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(split("", ',', true).empty());
  EXPECT_EQ(lower("Fog.PNG"), "fog.png");
}

TEST(Text, EscapesWhatIsNotUtf8) {
  EXPECT_TRUE(is_utf8("日本 é"));
  EXPECT_FALSE(is_utf8("b\xff"));
  EXPECT_FALSE(is_utf8("\xc0\xaf"));  // an overlong '/'
  EXPECT_EQ(escape_bytes("b\xff\n"), "b\\xff\\x0a");
  EXPECT_EQ(escape_bytes("b\xff\n", false), "b\\xff\n");
  EXPECT_TRUE(is_utf8(escape_bytes("\xed\xa0\x80 \xf4\x90\x80\x80")));  // a surrogate, past U+10FFFF
}

TEST(Log, ASinkReceivesLinesAndTheDefaultComesBack) {
  std::vector<std::pair<LogLevel, std::string>> got;
  set_log_sink([&](LogLevel l, const std::string& s) { got.emplace_back(l, s); });
  log_info("step 1");
  log_warning("slow BLAS");
  set_log_sink(nullptr);
  ::testing::internal::CaptureStderr();
  log_info("to stderr");
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "to stderr\n");
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].second, "step 1");
  EXPECT_EQ(got[1].first, LogLevel::Warning);
}

}  // namespace
}  // namespace rsam::io
