// Successful hot reloads (docs/SEMANTICS.md §4): v1 -> v2 in place, handles surviving the swap,
// the PREPARING/RELOADED pair, and requests the runtime refuses without any event.
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/status.h"
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
using ::testing::IsEmpty;
using ::testing::SizeIs;

const uint64_t kCounterContract = GuestContractId("test.counter", 1);

class RuntimeReloadTest : public RuntimeTest {
 protected:
  // Loads a copy of counter_v1 and remembers its handle; events recorded so far are
  // dropped so that each test sees only what the reload fired.
  void LoadCounterV1() {
    dir_ = Copy("counter_v1");
    ASSERT_THAT(runtime().LoadBundle(dir_).status(), IsOk());
    absl::StatusOr<core::ContractHandle> handle = runtime().Find(kCounterContract, 1);
    ASSERT_THAT(handle.status(), IsOk());
    handle_ = *handle;
    absl::StatusOr<int32_t> version = CallFn0(runtime(), handle_);
    ASSERT_THAT(version.status(), IsOk());
    ASSERT_EQ(*version, 1);
    recorder().Clear();
  }

  fs::path dir_;
  core::ContractHandle handle_;
};

TEST_F(RuntimeReloadTest, ReloadInPlaceFiresPreparingThenReloadedAndKeepsTheHandle) {
  ASSERT_NO_FATAL_FAILURE(LoadCounterV1());
  const uint64_t revision_before = runtime().registry().revision();
  const uint64_t seq_before = runtime().journal().last_seq();

  OverwriteArtifact(TestBundleDir("counter_v2"), dir_);
  absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundle(dir_);
  ASSERT_THAT(outcome.status(), IsOk());
  ASSERT_TRUE(outcome->ok()) << outcome->status;

  const std::vector<core::PhaseEvent> events = recorder().events();
  ASSERT_THAT(Describe(events), ElementsAre("PREPARING counter", "RELOADED counter"));
  const core::PhaseEvent& preparing = events[0];
  const core::PhaseEvent& reloaded = events[1];
  for (const core::PhaseEvent* e : {&preparing, &reloaded}) {
    SCOPED_TRACE(Describe(*e));
    EXPECT_EQ(e->bundle_id, BundleId("counter"));
    EXPECT_EQ(e->bundle_name, "counter");
    EXPECT_NE(e->reload_id, 0u);
    EXPECT_EQ(e->reload_id, outcome->reload_id);
    EXPECT_EQ(e->root_reload_id, e->reload_id) << "a primary reload is its own root";
    EXPECT_EQ(e->parent_reload_id, 0u);
    EXPECT_EQ(e->reason, ErrorReason::kUnspecified);
    EXPECT_EQ(e->host_epoch, runtime().host_epoch());
  }
  EXPECT_EQ(preparing.seq, seq_before + 1);
  EXPECT_EQ(reloaded.seq, preparing.seq + 1);
  EXPECT_EQ(reloaded.bundle_version, (core::Version{2, 0, 0}));
  EXPECT_EQ(preparing.live_instances, 0u);

  // The outcome carries the same events.
  ASSERT_THAT(outcome->events, SizeIs(2));
  EXPECT_EQ(outcome->events[0].seq, preparing.seq);
  EXPECT_EQ(outcome->events[1].seq, reloaded.seq);

  // Revision moved; the handle taken before the reload is still the contract's handle.
  EXPECT_GT(outcome->registry_revision, revision_before);
  EXPECT_GT(runtime().registry().revision(), revision_before);
  absl::StatusOr<core::ContractHandle> found = runtime().Find(kCounterContract, 1);
  ASSERT_THAT(found.status(), IsOk());
  EXPECT_EQ(found->index, handle_.index);
  EXPECT_EQ(found->generation, handle_.generation);
  absl::StatusOr<int32_t> version = CallFn0(runtime(), handle_);
  ASSERT_THAT(version.status(), IsOk());
  EXPECT_EQ(*version, 2);

  EXPECT_THAT(log().Warnings(), IsEmpty()) << ToString(log().Warnings());
}

TEST_F(RuntimeReloadTest, ReloadUpdatesTheBundleListing) {
  ASSERT_NO_FATAL_FAILURE(LoadCounterV1());
  OverwriteArtifact(TestBundleDir("counter_v2"), dir_);
  absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundle(dir_);
  ASSERT_THAT(outcome.status(), IsOk());
  ASSERT_TRUE(outcome->ok()) << outcome->status;

  absl::StatusOr<core::BundleInfo> info = runtime().GetBundle("counter");
  ASSERT_THAT(info.status(), IsOk());
  EXPECT_EQ(info->version, (core::Version{2, 0, 0}));
  EXPECT_EQ(info->reload_count, 1u);
  ASSERT_THAT(info->slots, SizeIs(1));
  EXPECT_EQ(info->slots[0], handle_);
}

TEST_F(RuntimeReloadTest, ReloadByNameWorks) {
  ASSERT_NO_FATAL_FAILURE(LoadCounterV1());
  OverwriteArtifact(TestBundleDir("counter_v2"), dir_);
  absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundleByName("counter");
  ASSERT_THAT(outcome.status(), IsOk());
  ASSERT_TRUE(outcome->ok()) << outcome->status;
  EXPECT_THAT(Describe(recorder().events()), ElementsAre("PREPARING counter", "RELOADED counter"));
  absl::StatusOr<int32_t> version = CallFn0(runtime(), handle_);
  ASSERT_THAT(version.status(), IsOk());
  EXPECT_EQ(*version, 2);
}

TEST_F(RuntimeReloadTest, ReloadThroughAFileInsideTheBundleWorks) {
  ASSERT_NO_FATAL_FAILURE(LoadCounterV1());
  OverwriteArtifact(TestBundleDir("counter_v2"), dir_);
  absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundle(dir_ / "manifest.toml");
  ASSERT_THAT(outcome.status(), IsOk());
  ASSERT_TRUE(outcome->ok()) << outcome->status;
  absl::StatusOr<int32_t> version = CallFn0(runtime(), handle_);
  ASSERT_THAT(version.status(), IsOk());
  EXPECT_EQ(*version, 2);
}

TEST_F(RuntimeReloadTest, ReloadBackAndForthRunsTheCodeOnDiskEachTime) {
  ASSERT_NO_FATAL_FAILURE(LoadCounterV1());
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(round);
    for (auto [target, expected] : {std::pair{"counter_v2", 2}, std::pair{"counter_v1", 1}}) {
      OverwriteArtifact(TestBundleDir(target), dir_);
      absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundle(dir_);
      ASSERT_THAT(outcome.status(), IsOk());
      ASSERT_TRUE(outcome->ok()) << outcome->status;
      absl::StatusOr<int32_t> version = CallFn0(runtime(), handle_);
      ASSERT_THAT(version.status(), IsOk());
      EXPECT_EQ(*version, expected) << target;
    }
  }
  // Every reload got its own id, and the seqs of the whole run are consecutive.
  const std::vector<core::PhaseEvent> events = recorder().events();
  ASSERT_THAT(events, SizeIs(12));
  for (size_t i = 1; i < events.size(); ++i) EXPECT_EQ(events[i].seq, events[i - 1].seq + 1);
  for (size_t i = 2; i < events.size(); i += 2) {
    EXPECT_NE(events[i].reload_id, events[i - 2].reload_id);
  }
  EXPECT_EQ(runtime().GetBundle("counter")->reload_count, 6u);
}

TEST_F(RuntimeReloadTest, ReloadOfUnchangedFilesSucceeds) {
  ASSERT_NO_FATAL_FAILURE(LoadCounterV1());
  absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundle(dir_);
  ASSERT_THAT(outcome.status(), IsOk());
  EXPECT_TRUE(outcome->ok()) << outcome->status;
  absl::StatusOr<int32_t> version = CallFn0(runtime(), handle_);
  ASSERT_THAT(version.status(), IsOk());
  EXPECT_EQ(*version, 1);
}

TEST_F(RuntimeReloadTest, HotReloadDisabledRefusesWithoutAnyEvent) {
  ASSERT_NO_FATAL_FAILURE(CreateRuntime(/*hot_reload_enabled=*/false));
  ASSERT_NO_FATAL_FAILURE(LoadCounterV1());
  EXPECT_FALSE(runtime().hot_reload_enabled());
  const uint64_t seq_before = runtime().journal().last_seq();
  const uint64_t revision_before = runtime().registry().revision();
  OverwriteArtifact(TestBundleDir("counter_v2"), dir_);

  EXPECT_THAT(runtime().ReloadBundle(dir_).status(), HasReason(ErrorReason::kHotReloadDisabled));
  EXPECT_THAT(runtime().ReloadBundleByName("counter").status(),
              HasReason(ErrorReason::kHotReloadDisabled));

  EXPECT_THAT(recorder().events(), IsEmpty());
  EXPECT_EQ(runtime().journal().last_seq(), seq_before);
  EXPECT_EQ(runtime().registry().revision(), revision_before);
  absl::StatusOr<int32_t> version = CallFn0(runtime(), handle_);
  ASSERT_THAT(version.status(), IsOk());
  EXPECT_EQ(*version, 1);

  // Unload does not need hot reload (docs/SEMANTICS.md §6).
  EXPECT_THAT(runtime().UnloadBundle("counter", core::UnloadMode::kRefuseIfInUse).status(), IsOk());
}

TEST_F(RuntimeReloadTest, ReloadOfAnUnknownBundleIsBundleNotFoundWithoutAnyEvent) {
  ASSERT_NO_FATAL_FAILURE(LoadCounterV1());
  const fs::path other = Copy("chain_a");  // on disk, never loaded

  EXPECT_THAT(runtime().ReloadBundleByName("nope").status(),
              HasReason(ErrorReason::kBundleNotFound));
  EXPECT_THAT(runtime().ReloadBundle(other).status(), HasReason(ErrorReason::kBundleNotFound));
  EXPECT_THAT(recorder().events(), IsEmpty());
  EXPECT_THAT(runtime().Find(GuestContractId("chain.a", 1), 1).status(),
              HasReason(ErrorReason::kContractNotFound));
}

TEST_F(RuntimeReloadTest, ReloadAfterUnloadIsBundleNotFound) {
  ASSERT_NO_FATAL_FAILURE(LoadCounterV1());
  ASSERT_THAT(runtime().UnloadBundle("counter", core::UnloadMode::kRefuseIfInUse).status(), IsOk());
  recorder().Clear();
  EXPECT_THAT(runtime().ReloadBundle(dir_).status(), HasReason(ErrorReason::kBundleNotFound));
  EXPECT_THAT(runtime().ReloadBundleByName("counter").status(),
              HasReason(ErrorReason::kBundleNotFound));
  EXPECT_THAT(recorder().events(), IsEmpty());
}

// The runtime header: a listener may look contracts up but may not start another
// mutation on the same runtime (REENTRANT_CALL).
TEST_F(RuntimeReloadTest, PhaseCallbackMayLookUpButNotMutate) {
  ASSERT_NO_FATAL_FAILURE(LoadCounterV1());
  absl::Status lookup_in_callback = absl::UnknownError("callback never ran");
  absl::Status reload_in_callback = absl::UnknownError("callback never ran");
  absl::Status unload_in_callback = absl::UnknownError("callback never ran");
  const core::EventJournal::ListenerId id =
      runtime().AddPhaseCallback([&](const PolyplugReloadPhase&, const core::PhaseEvent& event) {
        if (event.phase != Phase::kPreparing) return;
        lookup_in_callback = CallFn0(runtime(), handle_).status();
        reload_in_callback = runtime().ReloadBundleByName("counter").status();
        unload_in_callback =
            runtime().UnloadBundle("counter", core::UnloadMode::kRefuseIfInUse).status();
      });
  absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundle(dir_);
  runtime().RemovePhaseCallback(id);

  ASSERT_THAT(outcome.status(), IsOk());
  EXPECT_TRUE(outcome->ok()) << outcome->status;
  EXPECT_THAT(lookup_in_callback, IsOk());
  EXPECT_THAT(reload_in_callback, HasReason(ErrorReason::kReentrantCall));
  EXPECT_THAT(unload_in_callback, HasReason(ErrorReason::kReentrantCall));
  EXPECT_THAT(Describe(recorder().events()), ElementsAre("PREPARING counter", "RELOADED counter"));
  absl::StatusOr<int32_t> version = CallFn0(runtime(), handle_);
  ASSERT_THAT(version.status(), IsOk());
  EXPECT_EQ(*version, 1);
}

// polyplug's own pattern: v1/ and v2/ directories of one bundle name. Reloading with the
// path of v2/ replaces the loaded v1 and the bundle now lives in v2/.
TEST_F(RuntimeReloadTest, ReloadFromASiblingDirectoryOfTheSameBundleMovesItThere) {
  const fs::path v1 = CopyBundle(TestBundleDir("counter_v1"), bundles() / "v1");
  const fs::path v2 = CopyBundle(TestBundleDir("counter_v2"), bundles() / "v2");
  ASSERT_THAT(runtime().LoadBundle(v1).status(), IsOk());
  absl::StatusOr<core::ContractHandle> handle = runtime().Find(kCounterContract, 1);
  ASSERT_THAT(handle.status(), IsOk());
  recorder().Clear();

  // Loading v2/ beside the loaded v1/ is refused, and the message says what to do instead.
  absl::StatusOr<core::BundleInfo> twice = runtime().LoadBundle(v2);
  EXPECT_THAT(twice.status(), HasReason(ErrorReason::kBundleAlreadyLoaded));
  EXPECT_THAT(std::string(twice.status().message()), ::testing::HasSubstr("reload"));

  absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundle(v2);
  ASSERT_THAT(outcome.status(), IsOk());
  ASSERT_TRUE(outcome->ok()) << outcome->status;
  const std::vector<core::PhaseEvent> events = recorder().events();
  ASSERT_THAT(Describe(events), ElementsAre("PREPARING counter", "RELOADED counter"));
  EXPECT_EQ(events[0].bundle_version, (core::Version{1, 0, 0}));
  EXPECT_EQ(events[1].bundle_version, (core::Version{2, 0, 0}));
  absl::StatusOr<core::BundleInfo> info = runtime().GetBundle("counter");
  ASSERT_THAT(info.status(), IsOk());
  EXPECT_EQ(info->dir, v2);
  EXPECT_EQ(info->artifact, v2 / "libcounter.so");
  absl::StatusOr<int32_t> version = CallFn0(runtime(), *handle);
  ASSERT_THAT(version.status(), IsOk());
  EXPECT_EQ(*version, 2) << "the same handle runs v2/'s code";

  // Reloads by name now read v2/; and v1/ can be taken back the same way.
  ASSERT_TRUE(runtime().ReloadBundleByName("counter")->ok());
  EXPECT_EQ(runtime().GetBundle("counter")->dir, v2);
  EXPECT_EQ(*CallFn0(runtime(), *handle), 2);
  ASSERT_TRUE(runtime().ReloadBundle(v1 / "manifest.toml")->ok());
  EXPECT_EQ(runtime().GetBundle("counter")->dir, v1);
  EXPECT_EQ(*CallFn0(runtime(), *handle), 1);
}

TEST_F(RuntimeReloadTest, ReloadFromASiblingDirectoryThatFailsLeavesTheBundleWhereItWas) {
  const fs::path v1 = CopyBundle(TestBundleDir("counter_v1"), bundles() / "v1");
  const fs::path v2 = CopyBundle(TestBundleDir("counter_v2"), bundles() / "v2");
  WriteFile(v2 / "libcounter.so", "not a library");
  ASSERT_THAT(runtime().LoadBundle(v1).status(), IsOk());
  recorder().Clear();

  absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundle(v2);
  ASSERT_THAT(outcome.status(), IsOk());
  EXPECT_THAT(outcome->status, HasReason(ErrorReason::kArtifactNotLoadable));
  EXPECT_THAT(Describe(recorder().events()), ElementsAre("PREPARING counter", "FAILED counter"));
  EXPECT_EQ(runtime().GetBundle("counter")->dir, v1);
  EXPECT_EQ(*CallFn0(runtime(), kCounterContract), 1);
}

// A path naming a file that does not exist is not taken as its directory: the reload fails
// before PREPARING and the message names the path.
TEST_F(RuntimeReloadTest, ReloadOfAMissingFileInsideABundleNamesIt) {
  ASSERT_NO_FATAL_FAILURE(LoadCounterV1());
  const fs::path missing = dir_ / "libcounter-typo.so";

  absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundle(missing);
  ASSERT_THAT(outcome.status(), IsOk());
  EXPECT_THAT(outcome->status, HasReason(ErrorReason::kArtifactMissing));
  EXPECT_THAT(std::string(outcome->status.message()), ::testing::HasSubstr(missing.string()));
  const std::vector<core::PhaseEvent> events = recorder().events();
  ASSERT_THAT(Describe(events), ElementsAre("FAILED counter"));
  EXPECT_EQ(events[0].reason, ErrorReason::kArtifactMissing);
  EXPECT_EQ(*CallFn0(runtime(), handle_), 1);
  EXPECT_EQ(runtime().GetBundle("counter")->reload_count, 0u);

  // Outside any bundle directory it is a request error that names it, with no event.
  recorder().Clear();
  const fs::path nowhere = bundles() / "no-such-dir" / "libcounter.so";
  absl::StatusOr<core::ReloadOutcome> refused = runtime().ReloadBundle(nowhere);
  EXPECT_THAT(refused.status(), HasReason(ErrorReason::kBundleNotFound));
  EXPECT_THAT(std::string(refused.status().message()), ::testing::HasSubstr(nowhere.string()));
  EXPECT_THAT(recorder().events(), IsEmpty());
}

// A bundle's identity is its name: a manifest that renames the loaded bundle fails its
// reload (MANIFEST_INVALID), and the loaded version stays.
TEST_F(RuntimeReloadTest, ReloadOfAManifestThatRenamesTheBundleIsManifestInvalid) {
  ASSERT_NO_FATAL_FAILURE(LoadCounterV1());
  ASSERT_TRUE(ReplaceInFile(dir_ / "manifest.toml", "name = \"counter\"", "name = \"tally\""));
  ASSERT_TRUE(ReplaceInFile(dir_ / "manifest.toml", DecimalId(BundleId("counter")),
                            DecimalId(BundleId("tally"))));

  absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundle(dir_);
  ASSERT_THAT(outcome.status(), IsOk());
  EXPECT_THAT(outcome->status, HasReason(ErrorReason::kManifestInvalid));
  EXPECT_THAT(std::string(outcome->status.message()), ::testing::HasSubstr("tally"));
  ASSERT_THAT(Describe(recorder().events()), ElementsAre("FAILED counter"));
  EXPECT_THAT(runtime().GetBundle("tally").status(), HasReason(ErrorReason::kBundleNotFound));
  EXPECT_EQ(*CallFn0(runtime(), handle_), 1);
}

}  // namespace
}  // namespace polyplug::test
