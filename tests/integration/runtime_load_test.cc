// Loading real bundles: publication, LOADED events, ListBundles and the enforcement window.
#include <filesystem>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "polyplug/core/ids.h"
#include "polyplug/core/runtime.h"
#include "support/bundle_fixture.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
using core::BundleId;
using core::ErrorReason;
using core::GuestContractId;
using core::Phase;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

using RuntimeLoadTest = RuntimeTest;

TEST_F(RuntimeLoadTest, LoadCounterPublishesContractAndFiresLoaded) {
  const fs::path dir = Copy("counter_v1");
  const uint64_t revision_before = runtime().registry().revision();

  absl::StatusOr<core::BundleInfo> info = runtime().LoadBundle(dir);
  ASSERT_THAT(info.status(), IsOk());
  EXPECT_EQ(info->name, "counter");
  EXPECT_EQ(info->id, BundleId("counter"));
  EXPECT_EQ(info->version, (core::Version{1, 0, 0}));
  EXPECT_THAT(info->provides, ElementsAre("test.counter@1"));
  EXPECT_THAT(info->slots, SizeIs(1));
  EXPECT_GT(runtime().registry().revision(), revision_before);

  const std::vector<core::PhaseEvent> events = recorder().events();
  ASSERT_THAT(Describe(events), ElementsAre("LOADED counter"));
  const core::PhaseEvent& loaded = events[0];
  EXPECT_EQ(loaded.bundle_id, BundleId("counter"));
  EXPECT_EQ(loaded.bundle_version, (core::Version{1, 0, 0}));
  EXPECT_EQ(loaded.seq, 1u);
  EXPECT_EQ(loaded.host_epoch, runtime().host_epoch());
  EXPECT_EQ(loaded.reason, ErrorReason::kUnspecified);

  absl::StatusOr<core::ContractHandle> handle =
      runtime().Find(GuestContractId("test.counter", 1), 1);
  ASSERT_THAT(handle.status(), IsOk());
  EXPECT_FALSE(handle->is_null());
  EXPECT_EQ(*handle, info->slots[0]);
  absl::StatusOr<int32_t> version = CallFn0(runtime(), *handle);
  ASSERT_THAT(version.status(), IsOk());
  EXPECT_EQ(*version, 1);
}

TEST_F(RuntimeLoadTest, LoadedEventIsJournaledAndSeenThroughTheAbiView) {
  ASSERT_THAT(runtime().LoadBundle(Copy("counter_v1")).status(), IsOk());

  absl::StatusOr<std::vector<core::PhaseEvent>> journaled = runtime().journal().ReadAfter(0);
  ASSERT_THAT(journaled.status(), IsOk());
  ASSERT_THAT(Describe(*journaled), ElementsAre("LOADED counter"));
  EXPECT_EQ(runtime().journal().last_seq(), 1u);

  const std::vector<RecordedPhase> recorded = recorder().recorded();
  ASSERT_THAT(recorded, SizeIs(1));
  EXPECT_EQ(recorded[0].event.seq, (*journaled)[0].seq);
  EXPECT_EQ(recorded[0].abi_phase_type, POLYPLUG_PHASE_LOADED);
  EXPECT_EQ(recorded[0].abi_bundle_id, BundleId("counter"));
  EXPECT_EQ(recorded[0].abi_bundle_name, "counter");
  EXPECT_FALSE(recorded[0].abi_reason.has_value()) << "reason is absent unless FAILED";
}

TEST_F(RuntimeLoadTest, ListBundlesShowsTheLoadedVersion) {
  const fs::path dir = Copy("counter_v1");
  ASSERT_THAT(runtime().LoadBundle(dir).status(), IsOk());

  const std::vector<core::BundleInfo> bundles = runtime().ListBundles();
  ASSERT_THAT(bundles, SizeIs(1));
  EXPECT_EQ(bundles[0].name, "counter");
  EXPECT_EQ(bundles[0].id, BundleId("counter"));
  EXPECT_EQ(bundles[0].version, (core::Version{1, 0, 0}));
  EXPECT_EQ(bundles[0].version.ToString(), "1.0.0");
  EXPECT_EQ(bundles[0].loader, "native");
  EXPECT_TRUE(fs::equivalent(bundles[0].dir, dir)) << bundles[0].dir;
  EXPECT_THAT(bundles[0].artifact.filename().string(), HasSubstr("libcounter"));
  EXPECT_EQ(bundles[0].reload_count, 0u);

  absl::StatusOr<core::BundleInfo> by_name = runtime().GetBundle("counter");
  ASSERT_THAT(by_name.status(), IsOk());
  EXPECT_EQ(by_name->version, (core::Version{1, 0, 0}));
  EXPECT_THAT(runtime().GetBundle("nope").status(), HasReason(ErrorReason::kBundleNotFound));
}

TEST_F(RuntimeLoadTest, LoadAcceptsAFileInsideTheBundleDirectory) {
  const fs::path dir = Copy("counter_v1");
  ASSERT_THAT(runtime().LoadBundle(dir / "manifest.toml").status(), IsOk());
  absl::StatusOr<int32_t> version = CallFn0(runtime(), "test.counter", 1);
  ASSERT_THAT(version.status(), IsOk());
  EXPECT_EQ(*version, 1);
}

TEST_F(RuntimeLoadTest, StatelessBundleLoadsAndAnswers) {
  ASSERT_THAT(runtime().LoadBundle(Copy("stateless")).status(), IsOk());
  absl::StatusOr<int32_t> answer = CallFn0(runtime(), "test.stateless", 1);
  ASSERT_THAT(answer.status(), IsOk());
  EXPECT_EQ(*answer, 42);
}

TEST_F(RuntimeLoadTest, CleanLoadAndUnloadLogNoWarnings) {
  ASSERT_THAT(runtime().LoadBundle(Copy("counter_v1")).status(), IsOk());
  ASSERT_THAT(runtime().UnloadBundle("counter", core::UnloadMode::kRefuseIfInUse).status(), IsOk());
  EXPECT_THAT(log().Warnings(), IsEmpty()) << ToString(log().Warnings());
}

// docs/SEMANTICS.md §3 step 6: inside polyplug_init only declared dependencies are visible.
TEST_F(RuntimeLoadTest, InitCannotSeeAnUndeclaredContractEvenWhenItIsLoaded) {
  ASSERT_THAT(runtime().LoadBundle(Copy("counter_v1")).status(), IsOk());
  ASSERT_THAT(runtime().LoadBundle(Copy("undeclared_lookup")).status(), IsOk());

  absl::StatusOr<int32_t> found_during_init = CallFn0(runtime(), "test.undeclared_lookup", 1);
  ASSERT_THAT(found_during_init.status(), IsOk());
  EXPECT_EQ(*found_during_init, 0) << "test.counter@1 leaked into an undeclared init lookup";

  // Outside the window the host sees everything.
  absl::StatusOr<int32_t> counter = CallFn0(runtime(), "test.counter", 1);
  ASSERT_THAT(counter.status(), IsOk());
  EXPECT_EQ(*counter, 1);
}

TEST_F(RuntimeLoadTest, InitSeesADeclaredDependency) {
  ASSERT_THAT(runtime().LoadBundle(Copy("chain_a")).status(), IsOk());
  ASSERT_THAT(runtime().LoadBundle(Copy("chain_b")).status(), IsOk());
  absl::StatusOr<int32_t> found_during_init = CallFn0(runtime(), "chain.b", 1);
  ASSERT_THAT(found_during_init.status(), IsOk());
  EXPECT_EQ(*found_during_init, 1);
}

// Explicit loads do not check dependencies (only discovery orders and checks them).
TEST_F(RuntimeLoadTest, LoadDoesNotRequireDependenciesToBeLoaded) {
  ASSERT_THAT(runtime().LoadBundle(Copy("chain_b")).status(), IsOk());
  absl::StatusOr<int32_t> found_during_init = CallFn0(runtime(), "chain.b", 1);
  ASSERT_THAT(found_during_init.status(), IsOk());
  EXPECT_EQ(*found_during_init, 0);
}

TEST_F(RuntimeLoadTest, FindOfAnUnknownContractIsContractNotFound) {
  ASSERT_THAT(runtime().LoadBundle(Copy("counter_v1")).status(), IsOk());
  EXPECT_THAT(runtime().Find(GuestContractId("test.counter", 2), 2).status(),
              HasReason(ErrorReason::kContractNotFound));
  EXPECT_THAT(runtime().Find(GuestContractId("test.nobody", 1), 1).status(),
              HasReason(ErrorReason::kContractNotFound));
  // min_major is a floor: 0 accepts any major.
  EXPECT_THAT(runtime().Find(GuestContractId("test.counter", 1), 0).status(), IsOk());
}

// The destructor tears bundles down silently (no events: listeners may be gone by then),
// but it must still close every library and remove every private copy.
TEST_F(RuntimeLoadTest, RuntimeDestructionUnloadsEverythingAndRemovesPrivateCopies) {
  ASSERT_THAT(runtime().LoadBundle(Copy("chain_a")).status(), IsOk());
  ASSERT_THAT(runtime().LoadBundle(Copy("chain_b")).status(), IsOk());
  ASSERT_THAT(runtime().LoadBundle(Copy("counter_v1")).status(), IsOk());
  ASSERT_EQ(CountFilesUnder(state().path()), 3u);

  DestroyRuntime();
  EXPECT_EQ(CountFilesUnder(state().path()), 0u);
  EXPECT_THAT(log().Warnings(), IsEmpty()) << ToString(log().Warnings());
}

// The contract version is given twice: in the descriptor and in the interface. A bundle
// that gives two different versions is refused, naming both, instead of one being picked.
TEST_F(RuntimeLoadTest, AContractVersionGivenTwiceDifferentlyIsRefused) {
  absl::StatusOr<core::BundleInfo> info = runtime().LoadBundle(Copy("version_mismatch"));
  EXPECT_THAT(info.status(), HasReason(ErrorReason::kInvalidArgument));
  const std::string message(info.status().message());
  EXPECT_THAT(message, HasSubstr("test.version_mismatch"));
  EXPECT_THAT(message, HasSubstr("1.5.0"));
  EXPECT_THAT(message, HasSubstr("1.0.0"));
  EXPECT_THAT(recorder().events(), IsEmpty());
  EXPECT_THAT(runtime().ListBundles(), IsEmpty());
}

}  // namespace
}  // namespace polyplug::test
