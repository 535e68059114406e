// abi.h's id helpers for C bundles (polyplug_fnv1a64, polyplug_bundle_id,
// polyplug_guest_contract_id) against identity.hpp's Fnv1a64, BundleId and GuestContractId,
// both as compiled here (C++20) and as compiled from C (abi_ids_c.c).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "gtest/gtest.h"
#include "polyplug/abi.h"
#include "polyplug/identity.hpp"

extern "C" {
uint64_t polyplug_test_c_fnv1a64(const char* bytes, size_t len, uint64_t seed);
uint64_t polyplug_test_c_bundle_id(const char* name, size_t len);
uint64_t polyplug_test_c_guest_contract_id(const char* name, size_t len, uint32_t major);
uint64_t polyplug_test_c_offset_basis(void);
}

namespace polyplug {
namespace {

using namespace std::string_view_literals;

// Names with bytes above 0x7F (a signed char would sign-extend into the xor), an embedded
// NUL (the length counts, not a terminator), a separator in the name, and the empty name.
const std::vector<std::string_view>& Names() {
  static const auto* names = new std::vector<std::string_view>{
      ""sv,
      "a"sv,
      "my-bundle"sv,
      "polyplug-core"sv,
      "greeter"sv,
      "example.greeter"sv,
      "test.counter"sv,
      "caf\xC3\xA9.\xC3\xA9t\xC3\xA9"sv,
      "\xFF\x80"sv,
      "with\0nul"sv,
      "a@b"sv,
  };
  return *names;
}

constexpr uint32_t kMajors[] = {0, 1, 2, 9, 10, 11, 42, 99, 100, 1000, 65536, 4294967295u};

TEST(AbiIdsTest, BundleIdMatchesTheReferenceGoldenValues) {
  EXPECT_EQ(polyplug_bundle_id("my-bundle", 9), 0xfe6226876e3a35b2ULL);
  EXPECT_EQ(polyplug_bundle_id("polyplug-core", 13), 0x6ef4aee714f5f991ULL);
  EXPECT_EQ(polyplug_bundle_id("", 0), 0xcbf29ce484222325ULL);
  EXPECT_EQ(polyplug_bundle_id(nullptr, 0), 0xcbf29ce484222325ULL);
  EXPECT_EQ(polyplug_test_c_bundle_id("my-bundle", 9), 0xfe6226876e3a35b2ULL);
  EXPECT_EQ(polyplug_test_c_bundle_id("polyplug-core", 13), 0x6ef4aee714f5f991ULL);
  EXPECT_EQ(polyplug_test_c_bundle_id("", 0), 0xcbf29ce484222325ULL);
  EXPECT_EQ(polyplug_test_c_bundle_id(nullptr, 0), 0xcbf29ce484222325ULL);
  // The ids docs/WRITING_BUNDLES.md prints in its manifests.
  EXPECT_EQ(polyplug_test_c_bundle_id("greeter", 7), 8256090817518882973ULL);
  EXPECT_EQ(polyplug_test_c_bundle_id("shouter", 7), 5092011336745753173ULL);
  EXPECT_EQ(polyplug_test_c_guest_contract_id("example.greeter", 15, 1), 13594414881126601513ULL);
}

TEST(AbiIdsTest, ConstantsAreIdentityHpps) {
  EXPECT_EQ(uint64_t{POLYPLUG_FNV1A64_OFFSET_BASIS}, kFnvOffsetBasis);
  EXPECT_EQ(uint64_t{POLYPLUG_FNV1A64_PRIME}, kFnvPrime);
  EXPECT_EQ(polyplug_test_c_offset_basis(), kFnvOffsetBasis);
}

TEST(AbiIdsTest, BundleIdEqualsIdentityHpp) {
  for (std::string_view name : Names()) {
    SCOPED_TRACE(std::string(name));
    EXPECT_EQ(polyplug_bundle_id(name.data(), name.size()), BundleId(name));
    EXPECT_EQ(polyplug_test_c_bundle_id(name.data(), name.size()), BundleId(name));
  }
}

TEST(AbiIdsTest, GuestContractIdEqualsIdentityHpp) {
  for (std::string_view name : Names()) {
    for (uint32_t major : kMajors) {
      SCOPED_TRACE(std::string(name) + "@" + std::to_string(major));
      const uint64_t expected = GuestContractId(name, major);
      EXPECT_EQ(polyplug_guest_contract_id(name.data(), name.size(), major), expected);
      EXPECT_EQ(polyplug_test_c_guest_contract_id(name.data(), name.size(), major), expected);
      // Spelled out: the hash of the whole string, major in decimal.
      const std::string text = "guest_contract:" + std::string(name) + "@" + std::to_string(major);
      EXPECT_EQ(expected, Fnv1a64(text));
    }
  }
  // Minor and patch never enter the id, and majors that share digits differ.
  EXPECT_NE(polyplug_test_c_guest_contract_id("x", 1, 1),
            polyplug_test_c_guest_contract_id("x", 1, 11));
  EXPECT_NE(polyplug_test_c_guest_contract_id("x", 1, 10),
            polyplug_test_c_guest_contract_id("x", 1, 1));
  // A guest contract id is not the host contract id of the same name and major.
  EXPECT_NE(polyplug_test_c_guest_contract_id("x", 1, 1), HostContractId("x", 1));
}

TEST(AbiIdsTest, LengthsNotTerminatorsDelimitNames) {
  // A view into a longer buffer, as PolyplugStringView gives it: only `len` bytes count.
  const char buffer[] = "greeter-and-more";
  EXPECT_EQ(polyplug_test_c_bundle_id(buffer, 7), BundleId("greeter"));
  EXPECT_EQ(polyplug_test_c_guest_contract_id(buffer, 7, 3), GuestContractId("greeter", 3));
}

TEST(AbiIdsTest, Fnv1a64ChainsLikeIdentityHpp) {
  for (std::string_view a : Names()) {
    for (std::string_view b : Names()) {
      const std::string whole = std::string(a) + std::string(b);
      const uint64_t first = polyplug_test_c_fnv1a64(a.data(), a.size(), kFnvOffsetBasis);
      EXPECT_EQ(first, Fnv1a64(a));
      EXPECT_EQ(polyplug_test_c_fnv1a64(b.data(), b.size(), first), Fnv1a64(whole));
      EXPECT_EQ(polyplug_fnv1a64(b.data(), b.size(), Fnv1a64(a)), Fnv1a64(b, Fnv1a64(a)));
    }
  }
}

}  // namespace
}  // namespace polyplug
