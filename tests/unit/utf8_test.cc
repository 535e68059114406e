// IsWellFormedUtf8: the one UTF-8 check names and paths go through (RFC 3629, as Rust's
// str accepts it).
#include "core/src/utf8.h"

#include <string>

#include "gtest/gtest.h"

namespace polyplug::core {
namespace {

TEST(Utf8Test, AcceptsWellFormedText) {
  EXPECT_TRUE(IsWellFormedUtf8(""));
  EXPECT_TRUE(IsWellFormedUtf8("manifest.toml"));
  EXPECT_TRUE(IsWellFormedUtf8("caf\xC3\xA9"));           // U+00E9
  EXPECT_TRUE(IsWellFormedUtf8("\xE2\x82\xAC"));          // U+20AC
  EXPECT_TRUE(IsWellFormedUtf8("\xF0\x9F\x98\x80"));      // U+1F600
  EXPECT_TRUE(IsWellFormedUtf8("\xF4\x8F\xBF\xBF"));      // U+10FFFF, the last
  EXPECT_TRUE(IsWellFormedUtf8(std::string("a\0b", 3)));  // NUL is a code point
}

TEST(Utf8Test, RefusesWhatRustRefuses) {
  EXPECT_FALSE(IsWellFormedUtf8("\x80"));              // a continuation byte alone
  EXPECT_FALSE(IsWellFormedUtf8("\xC3"));              // cut short
  EXPECT_FALSE(IsWellFormedUtf8("\xE2\x82"));          // cut short
  EXPECT_FALSE(IsWellFormedUtf8("\xC0\xAF"));          // overlong '/'
  EXPECT_FALSE(IsWellFormedUtf8("\xE0\x80\xAF"));      // overlong '/'
  EXPECT_FALSE(IsWellFormedUtf8("\xED\xA0\x80"));      // U+D800, a surrogate
  EXPECT_FALSE(IsWellFormedUtf8("\xF4\x90\x80\x80"));  // past U+10FFFF
  EXPECT_FALSE(IsWellFormedUtf8("\xFF"));
  EXPECT_FALSE(IsWellFormedUtf8("ok\xC3("));  // a bad continuation
}

}  // namespace
}  // namespace polyplug::core
