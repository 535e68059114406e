// Versions and contract references (docs/WRITING_BUNDLES.md §5 `provides`).
#include "polyplug/core/version.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "unit/status_matchers.h"

namespace polyplug::core {
namespace {

using ::polyplug::testing::IsOk;
using ::testing::Not;

TEST(ParseVersionTest, AcceptsMajorMinor) {
  ASSERT_OK_AND_ASSIGN(Version version, ParseVersion("1.2"));
  EXPECT_EQ(version, (Version{1, 2, 0}));
}

TEST(ParseVersionTest, AcceptsMajorMinorPatch) {
  ASSERT_OK_AND_ASSIGN(Version version, ParseVersion("1.2.3"));
  EXPECT_EQ(version, (Version{1, 2, 3}));
}

TEST(ParseVersionTest, IgnoresComponentsAfterPatch) {
  ASSERT_OK_AND_ASSIGN(Version version, ParseVersion("1.2.3.4"));
  EXPECT_EQ(version, (Version{1, 2, 3}));
}

TEST(ParseVersionTest, EmptyIsZero) {
  ASSERT_OK_AND_ASSIGN(Version version, ParseVersion(""));
  EXPECT_EQ(version, (Version{0, 0, 0}));
}

TEST(ParseVersionTest, AcceptsMultiDigitComponents) {
  ASSERT_OK_AND_ASSIGN(Version version, ParseVersion("10.20.300"));
  EXPECT_EQ(version, (Version{10, 20, 300}));
}

TEST(ParseVersionTest, RejectsBareMajor) { EXPECT_THAT(ParseVersion("1"), Not(IsOk())); }

TEST(ParseVersionTest, RejectsPreReleaseSuffix) {
  EXPECT_THAT(ParseVersion("1.2-beta"), Not(IsOk()));
  EXPECT_THAT(ParseVersion("1.2.3-rc1"), Not(IsOk()));
}

TEST(ParseVersionTest, RejectsRangeOperators) {
  EXPECT_THAT(ParseVersion(">=1.0"), Not(IsOk()));
  EXPECT_THAT(ParseVersion("^1.0"), Not(IsOk()));
}

TEST(ParseVersionTest, RejectsNonNumericComponents) {
  EXPECT_THAT(ParseVersion("a.b"), Not(IsOk()));
  EXPECT_THAT(ParseVersion("1.b"), Not(IsOk()));
}

TEST(VersionTest, ToStringPrintsAllThreeComponents) {
  EXPECT_EQ((Version{1, 2, 3}).ToString(), "1.2.3");
  EXPECT_EQ((Version{0, 0, 0}).ToString(), "0.0.0");
}

TEST(VersionTest, OrdersByMajorMinorPatch) {
  EXPECT_LT((Version{1, 2, 3}), (Version{1, 2, 4}));
  EXPECT_LT((Version{1, 2, 9}), (Version{1, 3, 0}));
  EXPECT_LT((Version{1, 9, 9}), (Version{2, 0, 0}));
}

TEST(IsCompatibleWithTest, SameMajorAndAtLeastTheRequiredMinor) {
  EXPECT_TRUE((Version{1, 2, 0}).IsCompatibleWith(Version{1, 2, 0}));
  EXPECT_TRUE((Version{1, 3, 0}).IsCompatibleWith(Version{1, 2, 0}));
}

TEST(IsCompatibleWithTest, PatchDoesNotMatter) {
  EXPECT_TRUE((Version{1, 2, 0}).IsCompatibleWith(Version{1, 2, 7}));
}

TEST(IsCompatibleWithTest, OlderMinorIsIncompatible) {
  EXPECT_FALSE((Version{1, 1, 9}).IsCompatibleWith(Version{1, 2, 0}));
}

TEST(IsCompatibleWithTest, DifferentMajorIsIncompatibleEitherWay) {
  EXPECT_FALSE((Version{2, 0, 0}).IsCompatibleWith(Version{1, 0, 0}));
  EXPECT_FALSE((Version{1, 5, 0}).IsCompatibleWith(Version{2, 0, 0}));
}

TEST(ParseContractRefTest, BareNameHasNoVersion) {
  ASSERT_OK_AND_ASSIGN(ContractRef ref, ParseContractRef("image.decode"));
  EXPECT_EQ(ref.name, "image.decode");
  EXPECT_FALSE(ref.version.has_value());
  EXPECT_EQ(ref.major(), 0u);
  EXPECT_EQ(ref.ToString(), "image.decode");
}

TEST(ParseContractRefTest, AcceptsBareMajor) {
  ASSERT_OK_AND_ASSIGN(ContractRef ref, ParseContractRef("image.decode@1"));
  EXPECT_EQ(ref.name, "image.decode");
  ASSERT_TRUE(ref.version.has_value());
  EXPECT_EQ(*ref.version, (Version{1, 0, 0}));
  EXPECT_EQ(ref.major(), 1u);
  EXPECT_EQ(ref.ToString(), "image.decode@1");
}

TEST(ParseContractRefTest, AcceptsFullVersion) {
  ASSERT_OK_AND_ASSIGN(ContractRef ref, ParseContractRef("x@1.2.3"));
  EXPECT_EQ(ref.name, "x");
  ASSERT_TRUE(ref.version.has_value());
  EXPECT_EQ(*ref.version, (Version{1, 2, 3}));
  EXPECT_EQ(ref.major(), 1u);
  // Only the major identifies a contract, so that is all ToString keeps.
  EXPECT_EQ(ref.ToString(), "x@1");
}

TEST(ParseContractRefTest, AcceptsMajorMinor) {
  ASSERT_OK_AND_ASSIGN(ContractRef ref, ParseContractRef("core@2.5"));
  EXPECT_EQ(ref.name, "core");
  ASSERT_TRUE(ref.version.has_value());
  EXPECT_EQ(*ref.version, (Version{2, 5, 0}));
}

TEST(ParseContractRefTest, RejectsEmpty) { EXPECT_THAT(ParseContractRef(""), Not(IsOk())); }

TEST(ParseContractRefTest, RejectsEmptyName) { EXPECT_THAT(ParseContractRef("@1"), Not(IsOk())); }

TEST(ParseContractRefTest, RejectsEmptyVersionAfterAt) {
  EXPECT_THAT(ParseContractRef("x@"), Not(IsOk()));
}

TEST(ParseContractRefTest, RejectsUnparseableVersion) {
  EXPECT_THAT(ParseContractRef("x@abc"), Not(IsOk()));
  EXPECT_THAT(ParseContractRef("x@1.2-beta"), Not(IsOk()));
}

}  // namespace
}  // namespace polyplug::core
