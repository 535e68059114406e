// Identity hashing (docs/SEMANTICS.md §1, §2): FNV-1a 64 golden values, contract id prefixes and
// the two id print formats.
#include "polyplug/core/ids.h"

#include <cstdint>
#include <string>

#include "gtest/gtest.h"

namespace polyplug::core {
namespace {

// The hash is constexpr so that ids can be computed at compile time; the goldens are
// checked there too.
static_assert(Fnv1a64("") == kFnvOffsetBasis);
static_assert(Fnv1a64("my-bundle") == 0xfe6226876e3a35b2ULL);
static_assert(BundleId("polyplug-core") == 0x6ef4aee714f5f991ULL);

TEST(Fnv1a64Test, MatchesReferenceGoldenValues) {
  EXPECT_EQ(Fnv1a64("my-bundle"), 0xfe6226876e3a35b2ULL);
  EXPECT_EQ(Fnv1a64("polyplug-core"), 0x6ef4aee714f5f991ULL);
  EXPECT_EQ(Fnv1a64("image.decode@1"), 0xa1ba05dd7da18569ULL);
}

TEST(Fnv1a64Test, EmptyInputIsOffsetBasis) {
  EXPECT_EQ(Fnv1a64(""), 0xcbf29ce484222325ULL);
  EXPECT_EQ(kFnvOffsetBasis, 0xcbf29ce484222325ULL);
  EXPECT_EQ(kFnvPrime, 0x00000100000001B3ULL);
}

TEST(Fnv1a64Test, HashesBytesAboveAsciiAsUnsigned) {
  // "é" in UTF-8 is 0xC3 0xA9; a signed char would sign-extend into the xor.
  uint64_t expected = kFnvOffsetBasis;
  for (uint8_t byte : {uint8_t{0xC3}, uint8_t{0xA9}}) {
    expected ^= byte;
    expected *= kFnvPrime;
  }
  EXPECT_EQ(Fnv1a64("\xC3\xA9"), expected);
}

TEST(Fnv1a64Test, IsCaseAndTerminatorSensitive) {
  EXPECT_NE(Fnv1a64("My-Bundle"), Fnv1a64("my-bundle"));
  EXPECT_NE(Fnv1a64(std::string("my-bundle\0", 10)), Fnv1a64("my-bundle"));
}

TEST(BundleIdTest, IsFnvOfTheName) {
  EXPECT_EQ(BundleId("my-bundle"), 0xfe6226876e3a35b2ULL);
  EXPECT_EQ(BundleId("reload_plugin_v1"), 16808897324254478442ULL);
}

TEST(GuestContractIdTest, HashesPrefixedNameAndDecimalMajor) {
  EXPECT_EQ(GuestContractId("image.decode", 1), Fnv1a64("guest_contract:image.decode@1"));
  EXPECT_EQ(GuestContractId("image.decode", 1), 18154885241241252316ULL);
  // polyplug's own test fixture pairs reload.test@1 with this id.
  EXPECT_EQ(GuestContractId("reload.test", 1), 4871652249423578378ULL);
  EXPECT_EQ(GuestContractId("x", 10), Fnv1a64("guest_contract:x@10"));
  EXPECT_EQ(GuestContractId("x", 0), Fnv1a64("guest_contract:x@0"));
  EXPECT_EQ(GuestContractId("x", 4294967295u), Fnv1a64("guest_contract:x@4294967295"));
}

TEST(GuestContractIdTest, MajorIsPartOfTheId) {
  EXPECT_NE(GuestContractId("image.decode", 1), GuestContractId("image.decode", 2));
}

TEST(HostContractIdTest, HashesPrefixedNameAndDecimalMajor) {
  EXPECT_EQ(HostContractId("image.decode", 1), Fnv1a64("host_contract:image.decode@1"));
  EXPECT_EQ(HostContractId("image.decode", 1), 15196939018754466312ULL);
  EXPECT_EQ(HostContractId("log", 12), Fnv1a64("host_contract:log@12"));
}

TEST(ContractIdTest, HostAndGuestIdSpacesAreDisjoint) {
  EXPECT_NE(GuestContractId("image.decode", 1), HostContractId("image.decode", 1));
  // Neither is the un-prefixed hash.
  EXPECT_NE(GuestContractId("image.decode", 1), 0xa1ba05dd7da18569ULL);
  EXPECT_NE(HostContractId("image.decode", 1), 0xa1ba05dd7da18569ULL);
}

TEST(FormatBundleIdTest, IsLowerCaseHexWithoutPadding) {
  EXPECT_EQ(FormatBundleId(0xfe6226876e3a35b2ULL), "0xfe6226876e3a35b2");
  EXPECT_EQ(FormatBundleId(0x6ef4aee714f5f991ULL), "0x6ef4aee714f5f991");
  EXPECT_EQ(FormatBundleId(0x1f), "0x1f");
  EXPECT_EQ(FormatBundleId(0), "0x0");
  EXPECT_EQ(FormatBundleId(UINT64_MAX), "0xffffffffffffffff");
}

TEST(FormatContractIdTest, IsSixteenUpperCaseHexDigits) {
  EXPECT_EQ(FormatContractId(0xa1ba05dd7da18569ULL), "0xA1BA05DD7DA18569");
  EXPECT_EQ(FormatContractId(0x1f), "0x000000000000001F");
  EXPECT_EQ(FormatContractId(0), "0x0000000000000000");
  EXPECT_EQ(FormatContractId(UINT64_MAX), "0xFFFFFFFFFFFFFFFF");
}

}  // namespace
}  // namespace polyplug::core
