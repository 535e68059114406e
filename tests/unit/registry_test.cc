// Registry (docs/SEMANTICS.md §2): publication, lookup order, handle generations across reload
// swaps and removals, write validation, revisions, and lock-free reads under writes.
#include "polyplug/core/registry.h"

#include <atomic>
#include <cstdint>
#include <ostream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "polyplug/abi.h"
#include "polyplug/core/error.h"
#include "polyplug/core/ids.h"
#include "unit/status_matchers.h"

namespace polyplug::core {

void PrintTo(const ContractHandle& handle, std::ostream* os) {
  *os << "{index " << handle.index << ", generation " << handle.generation << "}";
}

namespace {

using ::polyplug::testing::HasReason;
using ::polyplug::testing::IsOk;
using ::polyplug::testing::MessageMatches;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;

const uint64_t kBundleA = BundleId("bundle_a");
const uint64_t kBundleB = BundleId("bundle_b");
const uint64_t kBundleC = BundleId("bundle_c");

// --- Hand-made provider interfaces: fn0 writes a marker identifying the version. ---

PolyplugAbiError Ok() { return PolyplugAbiError{POLYPLUG_ABI_OK, {nullptr, 0}}; }

PolyplugAbiError CreateStateless(void*, const PolyplugHostApi*, PolyplugBytesView,
                                 PolyplugGuestContractInstance* out) {
  out->data = nullptr;
  return Ok();
}

void DestroyNothing(void*, const PolyplugHostApi*, PolyplugGuestContractInstance) {}

template <int32_t kMarker>
void WriteMarker(PolyplugGuestContractInstance, const void*, void* out, PolyplugAbiError* err) {
  *static_cast<int32_t*>(out) = kMarker;
  *err = Ok();
}

PolyplugAbiError InvokeNothing(void*, PolyplugGuestContractInstance, PolyplugStringView,
                               PolyplugBytesView, const PolyplugByteSink*) {
  return Ok();
}

constexpr int32_t kMarkerV1 = 1;
constexpr int32_t kMarkerV2 = 2;
constexpr int32_t kMarkerOther = 7;

const PolyplugNativeFunction kFunctionsV1[] = {&WriteMarker<kMarkerV1>};
const PolyplugNativeFunction kFunctionsV2[] = {&WriteMarker<kMarkerV2>};
const PolyplugNativeFunction kFunctionsOther[] = {&WriteMarker<kMarkerOther>};

// user_data points at the marker the provider's fn0 writes, so a reader can cross-check
// that the interface it resolved is one consistent copy.
int32_t user_data_v1 = kMarkerV1;
int32_t user_data_v2 = kMarkerV2;
int32_t user_data_other = kMarkerOther;

struct ProviderSpec {
  std::string contract;
  Version version{1, 0, 0};
  int32_t marker = kMarkerV1;
  bool with_invoke = false;
  uint64_t contract_id_override = 0;  // 0: GuestContractId(contract, version.major)
};

Registration MakeRegistration(const ProviderSpec& spec) {
  Registration reg;
  reg.plugin_name = spec.contract + "-impl-" + std::to_string(spec.marker);
  reg.contract_name = spec.contract;
  reg.version = spec.version;
  PolyplugGuestContractInterface& iface = reg.iface;
  iface.contract_id = spec.contract_id_override != 0
                          ? spec.contract_id_override
                          : GuestContractId(spec.contract, spec.version.major);
  iface.contract_version = {spec.version.major, spec.version.minor, spec.version.patch};
  iface.dispatch_type = POLYPLUG_DISPATCH_NATIVE;
  iface.create_instance = &CreateStateless;
  iface.destroy_instance = &DestroyNothing;
  iface.function_count = 1;
  switch (spec.marker) {
    case kMarkerV1:
      iface.functions = kFunctionsV1;
      iface.user_data = &user_data_v1;
      break;
    case kMarkerV2:
      iface.functions = kFunctionsV2;
      iface.user_data = &user_data_v2;
      break;
    default:
      iface.functions = kFunctionsOther;
      iface.user_data = &user_data_other;
      break;
  }
  iface.invoke = spec.with_invoke ? &InvokeNothing : nullptr;
  return reg;
}

Registration Provider(std::string contract, int32_t marker = kMarkerV1,
                      Version version = {1, 0, 0}) {
  return MakeRegistration({std::move(contract), version, marker});
}

uint64_t IdOf(absl::string_view contract, uint32_t major = 1) {
  return GuestContractId(contract, major);
}

int32_t CallFn0(const PolyplugGuestContractInterface& iface) {
  int32_t out = 0;
  PolyplugAbiError err{};
  iface.functions[0](PolyplugGuestContractInstance{nullptr, iface.contract_id}, nullptr, &out,
                     &err);
  EXPECT_EQ(err.code, POLYPLUG_ABI_OK);
  return out;
}

// Resolves `handle` and calls its fn0 under a pin; -1 when it does not resolve.
int32_t ResolveAndCall(const Registry& registry, ContractHandle handle) {
  ReadPin pin = registry.Pin();
  auto iface = registry.Resolve(handle);
  if (!iface.ok()) return -1;
  return CallFn0(**iface);
}

std::vector<std::string> ContractNamesOf(const std::vector<ContractEntry>& entries) {
  std::vector<std::string> names;
  for (const ContractEntry& entry : entries) names.push_back(entry.contract_name);
  return names;
}

// ------------------------------------------------------------------------------------
// Publish, Find, Resolve, Describe

TEST(RegistryTest, EmptyRegistryFindsNothing) {
  Registry registry;
  EXPECT_EQ(registry.revision(), 0u);
  const auto found = registry.Find(IdOf("missing"), 0);
  EXPECT_THAT(found, HasReason(ErrorReason::kContractNotFound));
  // Registry errors print contract ids as 0x + 16 upper-case hex digits, as polyplug does.
  EXPECT_THAT(found, MessageMatches(HasSubstr(FormatContractId(IdOf("missing")))));
  EXPECT_THAT(registry.List(), IsEmpty());
}

TEST(RegistryTest, PublishReturnsOneHandlePerStagedProvider) {
  Registry registry;
  ASSERT_OK_AND_ASSIGN(std::vector<ContractHandle> handles,
                       registry.Publish(kBundleA, {Provider("alpha"), Provider("beta")}));
  ASSERT_THAT(handles, SizeIs(2));
  EXPECT_FALSE(handles[0].is_null());
  EXPECT_FALSE(handles[1].is_null());
  EXPECT_NE(handles[0].index, handles[1].index);

  ASSERT_OK_AND_ASSIGN(ContractHandle alpha, registry.Find(IdOf("alpha"), 0));
  ASSERT_OK_AND_ASSIGN(ContractHandle beta, registry.Find(IdOf("beta"), 0));
  EXPECT_EQ(alpha, handles[0]);
  EXPECT_EQ(beta, handles[1]);
}

TEST(RegistryTest, ResolveReturnsACopyOfTheRegisteredInterface) {
  Registry registry;
  ProviderSpec spec{"alpha", {1, 4, 2}, kMarkerV2, /*with_invoke=*/true};
  Registration reg = MakeRegistration(spec);
  ASSERT_OK_AND_ASSIGN(std::vector<ContractHandle> handles, registry.Publish(kBundleA, {reg}));
  ReadPin pin = registry.Pin();
  ASSERT_OK_AND_ASSIGN(const PolyplugGuestContractInterface* iface, registry.Resolve(handles[0]));
  ASSERT_NE(iface, nullptr);
  EXPECT_EQ(iface->contract_id, IdOf("alpha"));
  EXPECT_EQ(iface->contract_version.major, 1u);
  EXPECT_EQ(iface->contract_version.minor, 4u);
  EXPECT_EQ(iface->contract_version.patch, 2u);
  EXPECT_EQ(iface->user_data, &user_data_v2);
  EXPECT_EQ(iface->create_instance, &CreateStateless);
  EXPECT_EQ(iface->destroy_instance, &DestroyNothing);
  EXPECT_EQ(iface->invoke, &InvokeNothing);
  ASSERT_EQ(iface->function_count, 1u);
  EXPECT_EQ(CallFn0(*iface), kMarkerV2);
}

TEST(RegistryTest, DescribeReportsThePublishedEntry) {
  Registry registry;
  ProviderSpec spec{"alpha", {1, 4, 2}, kMarkerV1, /*with_invoke=*/true};
  ASSERT_OK_AND_ASSIGN(std::vector<ContractHandle> handles,
                       registry.Publish(kBundleA, {MakeRegistration(spec), Provider("beta")}));
  ASSERT_OK_AND_ASSIGN(ContractEntry alpha, registry.Describe(handles[0]));
  EXPECT_EQ(alpha.handle, handles[0]);
  EXPECT_EQ(alpha.contract_id, IdOf("alpha"));
  EXPECT_EQ(alpha.contract_name, "alpha");
  EXPECT_EQ(alpha.plugin_name, "alpha-impl-1");
  EXPECT_EQ(alpha.version, (Version{1, 4, 2}));
  EXPECT_EQ(alpha.bundle_id, kBundleA);
  EXPECT_TRUE(alpha.has_invoke);
  ASSERT_OK_AND_ASSIGN(ContractEntry beta, registry.Describe(handles[1]));
  EXPECT_FALSE(beta.has_invoke);
  EXPECT_THAT(registry.Describe(ContractHandle{}), HasReason(ErrorReason::kInvalidHandle));
}

TEST(RegistryTest, FindReturnsTheFirstProviderInRegistrationOrder) {
  Registry registry;
  ASSERT_OK_AND_ASSIGN(std::vector<ContractHandle> from_a,
                       registry.Publish(kBundleA, {Provider("shared", kMarkerV1)}));
  ASSERT_OK_AND_ASSIGN(std::vector<ContractHandle> from_b,
                       registry.Publish(kBundleB, {Provider("shared", kMarkerV2)}));
  ASSERT_OK_AND_ASSIGN(ContractHandle found, registry.Find(IdOf("shared"), 0));
  EXPECT_EQ(found, from_a[0]);
  EXPECT_EQ(ResolveAndCall(registry, found), kMarkerV1);
  // Once the first provider is gone the next one in order answers.
  EXPECT_EQ(registry.Remove(kBundleA), 1u);
  ASSERT_OK_AND_ASSIGN(ContractHandle next, registry.Find(IdOf("shared"), 0));
  EXPECT_EQ(next, from_b[0]);
}

TEST(RegistryTest, FindMinMajorIsAFloor) {
  Registry registry;
  ASSERT_OK(registry.Publish(kBundleA, {Provider("alpha", kMarkerV1, {1, 3, 0})}).status());
  EXPECT_THAT(registry.Find(IdOf("alpha"), 0), IsOk());
  EXPECT_THAT(registry.Find(IdOf("alpha"), 1), IsOk());
  const auto too_new = registry.Find(IdOf("alpha"), 2);
  EXPECT_THAT(too_new, HasReason(ErrorReason::kContractNotFound));
  EXPECT_THAT(too_new, MessageMatches(HasSubstr(FormatContractId(IdOf("alpha")))));
}

// The floor is checked per provider against its interface's major, so a later provider
// with a newer major answers a floor the first one does not meet.
TEST(RegistryTest, FindSkipsProvidersBelowTheFloor) {
  Registry registry;
  const uint64_t id = IdOf("codec");
  ProviderSpec old_major{"codec", {1, 0, 0}, kMarkerV1, false, id};
  ProviderSpec new_major{"codec", {2, 0, 0}, kMarkerV2, false, id};
  ASSERT_OK(registry.Publish(kBundleA, {MakeRegistration(old_major)}).status());
  ASSERT_OK_AND_ASSIGN(std::vector<ContractHandle> from_b,
                       registry.Publish(kBundleB, {MakeRegistration(new_major)}));
  ASSERT_OK_AND_ASSIGN(ContractHandle found, registry.Find(id, 2));
  EXPECT_EQ(found, from_b[0]);
}

TEST(RegistryTest, FindInBundleOnlyLooksAtThatBundle) {
  Registry registry;
  ASSERT_OK_AND_ASSIGN(std::vector<ContractHandle> from_a,
                       registry.Publish(kBundleA, {Provider("shared", kMarkerV1)}));
  ASSERT_OK_AND_ASSIGN(
      std::vector<ContractHandle> from_b,
      registry.Publish(kBundleB, {Provider("shared", kMarkerV2), Provider("only_b", kMarkerV2)}));
  ASSERT_OK_AND_ASSIGN(ContractHandle in_b, registry.FindInBundle(kBundleB, IdOf("shared"), 0));
  EXPECT_EQ(in_b, from_b[0]);
  ASSERT_OK_AND_ASSIGN(ContractHandle in_a, registry.FindInBundle(kBundleA, IdOf("shared"), 1));
  EXPECT_EQ(in_a, from_a[0]);
  EXPECT_THAT(registry.FindInBundle(kBundleA, IdOf("only_b"), 0),
              HasReason(ErrorReason::kContractNotFound));
  EXPECT_THAT(registry.FindInBundle(kBundleC, IdOf("shared"), 0),
              HasReason(ErrorReason::kContractNotFound));
  EXPECT_THAT(registry.FindInBundle(kBundleB, IdOf("shared"), 2),
              HasReason(ErrorReason::kContractNotFound));
}

TEST(RegistryTest, ResolveOutOfRangeIsInvalidHandle) {
  Registry registry;
  EXPECT_THAT(registry.Resolve(ContractHandle{0, 0}), HasReason(ErrorReason::kInvalidHandle));
  ASSERT_OK(registry.Publish(kBundleA, {Provider("alpha")}).status());
  EXPECT_THAT(registry.Resolve(ContractHandle{999, 0}), HasReason(ErrorReason::kInvalidHandle));
  EXPECT_THAT(registry.Resolve(ContractHandle{}), HasReason(ErrorReason::kInvalidHandle));
}

// ------------------------------------------------------------------------------------
// Remove and slot reuse

TEST(RegistryTest, RemoveVacatesEverySlotOfTheBundle) {
  Registry registry;
  ASSERT_OK_AND_ASSIGN(std::vector<ContractHandle> from_a,
                       registry.Publish(kBundleA, {Provider("alpha"), Provider("beta")}));
  ASSERT_OK(registry.Publish(kBundleB, {Provider("gamma")}).status());
  EXPECT_EQ(registry.Remove(kBundleA), 2u);
  EXPECT_THAT(registry.Find(IdOf("alpha"), 0), HasReason(ErrorReason::kContractNotFound));
  EXPECT_THAT(registry.Find(IdOf("beta"), 0), HasReason(ErrorReason::kContractNotFound));
  EXPECT_THAT(registry.Find(IdOf("gamma"), 0), IsOk());
  EXPECT_THAT(registry.ListBundle(kBundleA), IsEmpty());
  EXPECT_THAT(ContractNamesOf(registry.List()), ElementsAre("gamma"));
}

// A handle to a vacated slot is stale, not invalid: the generation check comes before the
// emptiness check, so callers learn their provider went away.
TEST(RegistryTest, RemoveBumpsTheGenerationSoOldHandlesAreStale) {
  Registry registry;
  ASSERT_OK_AND_ASSIGN(std::vector<ContractHandle> handles,
                       registry.Publish(kBundleA, {Provider("alpha")}));
  const ContractHandle old = handles[0];
  registry.Remove(kBundleA);
  EXPECT_THAT(registry.Resolve(old), HasReason(ErrorReason::kStaleHandle));
  EXPECT_THAT(registry.Describe(old), HasReason(ErrorReason::kStaleHandle));
  // The vacant slot at its current generation is simply empty.
  const ContractHandle current{old.index, old.generation + 1};
  EXPECT_THAT(registry.Resolve(current), HasReason(ErrorReason::kInvalidHandle));
}

TEST(RegistryTest, RemoveOfAnUnknownBundleVacatesNothing) {
  Registry registry;
  ASSERT_OK(registry.Publish(kBundleA, {Provider("alpha")}).status());
  EXPECT_EQ(registry.Remove(kBundleB), 0u);
  EXPECT_THAT(registry.Find(IdOf("alpha"), 0), IsOk());
}

TEST(RegistryTest, PublishReusesAVacantSlotWithTheNewGeneration) {
  Registry registry;
  ASSERT_OK_AND_ASSIGN(std::vector<ContractHandle> first,
                       registry.Publish(kBundleA, {Provider("alpha", kMarkerV1)}));
  ASSERT_OK(registry.Publish(kBundleB, {Provider("beta")}).status());
  registry.Remove(kBundleA);
  ASSERT_OK_AND_ASSIGN(std::vector<ContractHandle> reused,
                       registry.Publish(kBundleC, {Provider("other", kMarkerOther)}));
  ASSERT_THAT(reused, SizeIs(1));
  EXPECT_EQ(reused[0].index, first[0].index);
  EXPECT_EQ(reused[0].generation, first[0].generation + 1);
  // The old handle must not reach the new occupant.
  EXPECT_THAT(registry.Resolve(first[0]), HasReason(ErrorReason::kStaleHandle));
  EXPECT_EQ(ResolveAndCall(registry, reused[0]), kMarkerOther);
}

TEST(RegistryTest, RepublishingARemovedBundleGetsFreshHandles) {
  Registry registry;
  ASSERT_OK_AND_ASSIGN(std::vector<ContractHandle> first,
                       registry.Publish(kBundleA, {Provider("alpha")}));
  registry.Remove(kBundleA);
  ASSERT_OK_AND_ASSIGN(std::vector<ContractHandle> second,
                       registry.Publish(kBundleA, {Provider("alpha")}));
  EXPECT_NE(second[0], first[0]);
  EXPECT_THAT(registry.Resolve(first[0]), HasReason(ErrorReason::kStaleHandle));
  EXPECT_THAT(registry.Resolve(second[0]), IsOk());
}

// ------------------------------------------------------------------------------------
// Swap (hot reload)

TEST(RegistrySwapTest, KeepsIndexAndGenerationOfContractsStillProvided) {
  Registry registry;
  ASSERT_OK_AND_ASSIGN(std::vector<ContractHandle> old,
                       registry.Publish(kBundleA, {Provider("alpha", kMarkerV1)}));
  ASSERT_OK(registry.Swap(kBundleA, {Provider("alpha", kMarkerV2, {1, 1, 0})}));
  // The handle a caller held before the reload still works and reaches the new code.
  EXPECT_EQ(ResolveAndCall(registry, old[0]), kMarkerV2);
  ASSERT_OK_AND_ASSIGN(ContractHandle found, registry.Find(IdOf("alpha"), 1));
  EXPECT_EQ(found, old[0]);
  ASSERT_OK_AND_ASSIGN(ContractEntry entry, registry.Describe(old[0]));
  EXPECT_EQ(entry.version, (Version{1, 1, 0}));
  EXPECT_EQ(entry.bundle_id, kBundleA);
}

TEST(RegistrySwapTest, VacatesDroppedContractsAndAppendsNewOnes) {
  Registry registry;
  ASSERT_OK_AND_ASSIGN(std::vector<ContractHandle> old,
                       registry.Publish(kBundleA, {Provider("kept"), Provider("dropped")}));
  ASSERT_OK(registry.Swap(kBundleA, {Provider("kept", kMarkerV2), Provider("added", kMarkerV2)}));

  EXPECT_EQ(ResolveAndCall(registry, old[0]), kMarkerV2);
  EXPECT_THAT(registry.Resolve(old[1]), HasReason(ErrorReason::kStaleHandle));
  EXPECT_THAT(registry.Find(IdOf("dropped"), 0), HasReason(ErrorReason::kContractNotFound));

  ASSERT_OK_AND_ASSIGN(ContractHandle added, registry.Find(IdOf("added"), 0));
  EXPECT_NE(added.index, old[0].index);
  EXPECT_NE(added.index, old[1].index);
  EXPECT_EQ(ResolveAndCall(registry, added), kMarkerV2);

  std::vector<ContractEntry> entries = registry.ListBundle(kBundleA);
  EXPECT_THAT(ContractNamesOf(entries), ElementsAre("kept", "added"));
}

// Reload keeps the provider's place in the resolution order: it moves into its old slot.
TEST(RegistrySwapTest, KeepsResolutionOrderAmongProviders) {
  Registry registry;
  ASSERT_OK_AND_ASSIGN(std::vector<ContractHandle> from_a,
                       registry.Publish(kBundleA, {Provider("shared", kMarkerV1)}));
  ASSERT_OK(registry.Publish(kBundleB, {Provider("shared", kMarkerOther)}).status());
  ASSERT_OK(registry.Swap(kBundleA, {Provider("shared", kMarkerV2)}));
  ASSERT_OK_AND_ASSIGN(ContractHandle found, registry.Find(IdOf("shared"), 0));
  EXPECT_EQ(found, from_a[0]);
  EXPECT_EQ(ResolveAndCall(registry, found), kMarkerV2);
}

TEST(RegistrySwapTest, DoesNotTouchOtherBundles) {
  Registry registry;
  ASSERT_OK(registry.Publish(kBundleA, {Provider("alpha")}).status());
  ASSERT_OK_AND_ASSIGN(std::vector<ContractHandle> from_b,
                       registry.Publish(kBundleB, {Provider("beta", kMarkerOther)}));
  ASSERT_OK(registry.Swap(kBundleA, {Provider("alpha", kMarkerV2)}));
  EXPECT_EQ(ResolveAndCall(registry, from_b[0]), kMarkerOther);
  EXPECT_THAT(ContractNamesOf(registry.ListBundle(kBundleB)), ElementsAre("beta"));
}

// The registry alone: a reload of a bundle that has no slots yet is not rejected; its
// contracts simply publish.
TEST(RegistrySwapTest, OfABundleWithoutSlotsPublishesItsContracts) {
  Registry registry;
  ASSERT_OK(registry.Swap(kBundleA, {Provider("alpha", kMarkerV2)}));
  ASSERT_OK_AND_ASSIGN(ContractHandle found, registry.Find(IdOf("alpha"), 0));
  EXPECT_EQ(ResolveAndCall(registry, found), kMarkerV2);
}

TEST(RegistrySwapTest, ThatFailsLeavesTheOldProvidersLive) {
  Registry registry;
  ASSERT_OK(registry.Publish(kBundleA, {Provider("other_name")}).status());
  ASSERT_OK_AND_ASSIGN(std::vector<ContractHandle> old,
                       registry.Publish(kBundleB, {Provider("alpha", kMarkerV1)}));
  const uint64_t revision = registry.revision();

  EXPECT_THAT(registry.Swap(kBundleB, {Provider("alpha", kMarkerV2), Provider("alpha")}),
              HasReason(ErrorReason::kDuplicateProvider));
  ProviderSpec colliding{"alpha_renamed", {1, 0, 0}, kMarkerV2, false, IdOf("other_name")};
  EXPECT_THAT(registry.Swap(kBundleB, {MakeRegistration(colliding)}),
              HasReason(ErrorReason::kContractIdCollision));

  EXPECT_EQ(registry.revision(), revision);
  EXPECT_EQ(ResolveAndCall(registry, old[0]), kMarkerV1);
  EXPECT_THAT(ContractNamesOf(registry.ListBundle(kBundleB)), ElementsAre("alpha"));
}

// ------------------------------------------------------------------------------------
// Write validation

TEST(RegistryTest, ContractIdCollisionAcrossBundles) {
  Registry registry;
  ASSERT_OK(registry.Publish(kBundleA, {Provider("alpha")}).status());
  const uint64_t revision = registry.revision();
  ProviderSpec impostor{"not_alpha", {1, 0, 0}, kMarkerV2, false, IdOf("alpha")};
  const auto result = registry.Publish(kBundleB, {Provider("beta"), MakeRegistration(impostor)});
  EXPECT_THAT(result, HasReason(ErrorReason::kContractIdCollision));
  EXPECT_THAT(result, MessageMatches(AllOf(HasSubstr(FormatContractId(IdOf("alpha"))),
                                           HasSubstr("alpha"), HasSubstr("not_alpha"))));
  // Nothing of bundle B was published, not even its valid provider.
  EXPECT_EQ(registry.revision(), revision);
  EXPECT_THAT(registry.Find(IdOf("beta"), 0), HasReason(ErrorReason::kContractNotFound));
  EXPECT_THAT(registry.ListBundle(kBundleB), IsEmpty());
}

TEST(RegistryTest, ContractIdCollisionWithinOneBatch) {
  Registry registry;
  ProviderSpec impostor{"not_alpha", {1, 0, 0}, kMarkerV2, false, IdOf("alpha")};
  EXPECT_THAT(registry.Publish(kBundleA, {Provider("alpha"), MakeRegistration(impostor)}),
              HasReason(ErrorReason::kContractIdCollision));
  EXPECT_THAT(registry.List(), IsEmpty());
}

TEST(RegistryTest, SameContractFromTwoBundlesIsNotACollision) {
  Registry registry;
  ASSERT_OK(registry.Publish(kBundleA, {Provider("alpha")}).status());
  EXPECT_OK(registry.Publish(kBundleB, {Provider("alpha", kMarkerV2)}).status());
  EXPECT_THAT(registry.List(), SizeIs(2));
}

TEST(RegistryTest, DuplicateProviderWhenOneBundleStagesAContractTwice) {
  Registry registry;
  const auto result =
      registry.Publish(kBundleA, {Provider("beta"), Provider("alpha"), Provider("alpha")});
  EXPECT_THAT(result, HasReason(ErrorReason::kDuplicateProvider));
  EXPECT_THAT(result, MessageMatches(HasSubstr("alpha")));
  EXPECT_EQ(registry.revision(), 0u);
  EXPECT_THAT(registry.List(), IsEmpty());
}

TEST(RegistryTest, PublishForABundleThatAlreadyHasSlotsPublishesNothing) {
  Registry registry;
  ASSERT_OK(registry.Publish(kBundleA, {Provider("alpha")}).status());
  const uint64_t revision = registry.revision();
  EXPECT_THAT(registry.Publish(kBundleA, {Provider("beta")}), Not(IsOk()));
  EXPECT_THAT(registry.Publish(kBundleA, {Provider("alpha")}), Not(IsOk()));
  EXPECT_EQ(registry.revision(), revision);
  EXPECT_THAT(registry.Find(IdOf("beta"), 0), HasReason(ErrorReason::kContractNotFound));
  EXPECT_THAT(ContractNamesOf(registry.ListBundle(kBundleA)), ElementsAre("alpha"));
}

TEST(RegistryTest, CheckReportsProblemsWithoutPublishing) {
  Registry registry;
  ASSERT_OK(registry.Publish(kBundleA, {Provider("alpha")}).status());
  const uint64_t revision = registry.revision();
  EXPECT_OK(registry.Check(kBundleB, {Provider("beta"), Provider("alpha")}));
  EXPECT_THAT(registry.Check(kBundleB, {Provider("beta"), Provider("beta")}),
              HasReason(ErrorReason::kDuplicateProvider));
  ProviderSpec impostor{"not_alpha", {1, 0, 0}, kMarkerV2, false, IdOf("alpha")};
  EXPECT_THAT(registry.Check(kBundleB, {MakeRegistration(impostor)}),
              HasReason(ErrorReason::kContractIdCollision));
  EXPECT_EQ(registry.revision(), revision);
  EXPECT_THAT(registry.Find(IdOf("beta"), 0), HasReason(ErrorReason::kContractNotFound));
}

// ------------------------------------------------------------------------------------
// Revision, List

TEST(RegistryTest, RevisionBumpsExactlyOncePerWrite) {
  Registry registry;
  uint64_t revision = registry.revision();
  ASSERT_OK(registry.Publish(kBundleA, {Provider("alpha"), Provider("beta")}).status());
  EXPECT_EQ(registry.revision(), revision + 1);
  revision = registry.revision();
  ASSERT_OK(registry.Swap(kBundleA, {Provider("alpha", kMarkerV2), Provider("gamma")}));
  EXPECT_EQ(registry.revision(), revision + 1);
  revision = registry.revision();
  ASSERT_EQ(registry.Remove(kBundleA), 2u);
  EXPECT_EQ(registry.revision(), revision + 1);
}

TEST(RegistryTest, ReadsDoNotBumpTheRevision) {
  Registry registry;
  ASSERT_OK_AND_ASSIGN(std::vector<ContractHandle> handles,
                       registry.Publish(kBundleA, {Provider("alpha")}));
  const uint64_t revision = registry.revision();
  (void)registry.Find(IdOf("alpha"), 0);
  (void)registry.Resolve(handles[0]);
  (void)registry.List();
  (void)registry.Check(kBundleB, {Provider("beta")});
  EXPECT_EQ(registry.revision(), revision);
}

TEST(RegistryTest, ListIsInSlotOrderAndListBundleFilters) {
  Registry registry;
  ASSERT_OK_AND_ASSIGN(std::vector<ContractHandle> from_a,
                       registry.Publish(kBundleA, {Provider("alpha"), Provider("beta")}));
  ASSERT_OK_AND_ASSIGN(std::vector<ContractHandle> from_b,
                       registry.Publish(kBundleB, {Provider("gamma", kMarkerV2, {1, 2, 0})}));

  const std::vector<ContractEntry> all = registry.List();
  ASSERT_THAT(ContractNamesOf(all), ElementsAre("alpha", "beta", "gamma"));
  for (size_t i = 1; i < all.size(); ++i) EXPECT_LT(all[i - 1].handle.index, all[i].handle.index);
  EXPECT_EQ(all[0].handle, from_a[0]);
  EXPECT_EQ(all[0].bundle_id, kBundleA);
  EXPECT_EQ(all[2].handle, from_b[0]);
  EXPECT_EQ(all[2].bundle_id, kBundleB);
  EXPECT_EQ(all[2].contract_id, IdOf("gamma"));
  EXPECT_EQ(all[2].version, (Version{1, 2, 0}));

  EXPECT_THAT(ContractNamesOf(registry.ListBundle(kBundleA)), ElementsAre("alpha", "beta"));
  EXPECT_THAT(ContractNamesOf(registry.ListBundle(kBundleB)), ElementsAre("gamma"));
  EXPECT_THAT(registry.ListBundle(kBundleC), IsEmpty());
}

// ------------------------------------------------------------------------------------
// Concurrency: lock-free readers against writers.

// Readers find and call through the interface under a pin while writers reload, remove
// and republish. Every call must land in a provider version that really was published:
// a reader using a freed or half-written interface would see another marker, a
// mismatched user_data or contract id, or crash (and trip ASan/TSan builds).
TEST(RegistryConcurrencyTest, ReadersSeeOnlyPublishedProvidersWhileWritersChurn) {
  constexpr int kReaders = 4;
  // Readers keep going while any writer runs, between these bounds, so that reads and
  // writes really overlap however the threads get scheduled.
  constexpr int kMinReaderIterations = 2000;
  constexpr int kMaxReaderIterations = 2000000;
  constexpr int kWriterIterations = 500;
  constexpr int kWriters = 2;

  Registry registry;
  const uint64_t swapped_id = IdOf("conc.swapped");
  const uint64_t churned_id = IdOf("conc.churned");
  ASSERT_OK_AND_ASSIGN(std::vector<ContractHandle> swapped,
                       registry.Publish(kBundleA, {Provider("conc.swapped", kMarkerV1)}));
  ASSERT_OK(registry.Publish(kBundleB, {Provider("conc.churned", kMarkerOther)}).status());
  const ContractHandle swapped_handle = swapped[0];

  std::atomic<int> failures{0};
  std::atomic<int> churned_calls{0};
  std::atomic<int> writers_running{kWriters};
  std::atomic<bool> start{false};
  auto await_start = [&start] {
    while (!start.load(std::memory_order_acquire)) std::this_thread::yield();
  };
  auto fail = [&failures](const std::string& what) {
    if (failures.fetch_add(1) < 10) ADD_FAILURE() << what;
  };

  std::vector<std::thread> threads;
  for (int r = 0; r < kReaders; ++r) {
    threads.emplace_back([&] {
      await_start();
      for (int i = 0; i < kMaxReaderIterations; ++i) {
        if (i >= kMinReaderIterations && writers_running.load(std::memory_order_acquire) == 0) {
          break;
        }
        ReadPin pin = registry.Pin();
        // Bundle A is only ever swapped, so its contract is always findable and the
        // handle never changes.
        auto found = registry.Find(swapped_id, 1);
        if (!found.ok()) {
          fail("swapped contract not found: " + found.status().ToString());
          continue;
        }
        if (!(*found == swapped_handle)) fail("swap moved the handle");
        auto iface = registry.Resolve(*found);
        if (!iface.ok()) {
          fail("swapped handle did not resolve: " + iface.status().ToString());
          continue;
        }
        const PolyplugGuestContractInterface& swapped_iface = **iface;
        const int32_t value = CallFn0(swapped_iface);
        if (value != kMarkerV1 && value != kMarkerV2) {
          fail("swapped call returned " + std::to_string(value));
        } else if (swapped_iface.user_data !=
                       (value == kMarkerV1 ? &user_data_v1 : &user_data_v2) ||
                   swapped_iface.contract_id != swapped_id) {
          fail("swapped interface is not one consistent version");
        }

        // Bundle B comes and goes; when found it may already be stale by Resolve.
        auto churned = registry.Find(churned_id, 1);
        if (!churned.ok()) {
          if (ReasonOf(churned.status()) != ErrorReason::kContractNotFound) {
            fail("unexpected churned Find error: " + churned.status().ToString());
          }
          continue;
        }
        auto churned_iface = registry.Resolve(*churned);
        if (!churned_iface.ok()) {
          const ErrorReason reason = ReasonOf(churned_iface.status());
          if (reason != ErrorReason::kStaleHandle && reason != ErrorReason::kInvalidHandle) {
            fail("unexpected churned Resolve error: " + churned_iface.status().ToString());
          }
          continue;
        }
        if (CallFn0(**churned_iface) != kMarkerOther ||
            (*churned_iface)->user_data != &user_data_other) {
          fail("churned call reached the wrong provider");
        }
        churned_calls.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  threads.emplace_back([&] {
    await_start();
    for (int i = 0; i < kWriterIterations; ++i) {
      const int32_t marker = i % 2 == 0 ? kMarkerV2 : kMarkerV1;
      const Version version{1, static_cast<uint32_t>(marker), 0};
      absl::Status status = registry.Swap(kBundleA, {Provider("conc.swapped", marker, version)});
      if (!status.ok()) fail("Swap failed: " + status.ToString());
    }
    writers_running.fetch_sub(1, std::memory_order_release);
  });
  threads.emplace_back([&] {
    await_start();
    for (int i = 0; i < kWriterIterations; ++i) {
      if (registry.Remove(kBundleB) != 1) fail("Remove did not vacate exactly one slot");
      auto published = registry.Publish(kBundleB, {Provider("conc.churned", kMarkerOther)});
      if (!published.ok()) fail("Publish failed: " + published.status().ToString());
    }
    writers_running.fetch_sub(1, std::memory_order_release);
  });
  start.store(true, std::memory_order_release);
  for (std::thread& thread : threads) thread.join();

  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(registry.revision(), 2u + 3u * kWriterIterations);
  EXPECT_EQ(ResolveAndCall(registry, swapped_handle), kMarkerV1);  // the last Swap wrote v1
  // Not asserted (it depends on scheduling), but reported: how often readers caught the
  // churned provider between a Remove and the next Publish.
  RecordProperty("churned_calls", churned_calls.load());
}

}  // namespace
}  // namespace polyplug::core
