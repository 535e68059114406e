// What the runtime knows and decides about the bytes it loads: the SHA-256 of each artifact
// (BundleInfo and events), admission (RuntimeOptions::admit_artifact, which
// polyplug-host --supervise uses to refuse versions that crashed it) before PREPARING, and
// loading a bundle from a kept copy of its files while it lives in its own directory
// (BundleSource, LoadAll).
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "polyplug/core/error.h"
#include "polyplug/core/ids.h"
#include "polyplug/core/runtime.h"
#include "support/bundle_fixture.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
using core::ErrorReason;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class RuntimeArtifactTest : public RuntimeTest {
 protected:
  // A runtime whose admission refuses the artifacts in `refused_` (by SHA-256).
  void CreateRefusingRuntime() {
    CreateRuntime(true, [this](const core::Manifest& manifest, absl::string_view sha256) {
      asked_.push_back(manifest.name + " " + std::string(sha256));
      if (!refused_.contains(std::string(sha256))) return absl::OkStatus();
      return core::MakeError(ErrorReason::kCrashed,
                             absl::StrCat("bundle \"", manifest.name, "\" is refused"));
    });
  }

  static std::string CounterSha(absl::string_view target) {
    return Sha256OfFile(TestBundleDir(target) / "libcounter.so");
  }

  std::set<std::string> refused_;
  std::vector<std::string> asked_;
};

TEST_F(RuntimeArtifactTest, WithoutHashingNoDigestIsReported) {
  auto info = runtime().LoadBundle(Copy("counter_v1"));
  ASSERT_THAT(info.status(), IsOk());
  EXPECT_EQ(info->artifact_sha256, "");
  EXPECT_EQ(recorder().events().at(0).artifact_sha256, "");
}

TEST_F(RuntimeArtifactTest, LoadAndReloadReportTheSha256OfTheBytesLoaded) {
  CreateRefusingRuntime();  // admits everything: refused_ is empty; admission hashes
  const fs::path dir = Copy("counter_v1");
  auto info = runtime().LoadBundle(dir);
  ASSERT_THAT(info.status(), IsOk());
  ASSERT_EQ(info->artifact_sha256.size(), 64u);
  EXPECT_EQ(info->artifact_sha256, CounterSha("counter_v1"));
  EXPECT_EQ(Sha256OfFile(info->image), info->artifact_sha256) << "the private copy is exact";
  EXPECT_NE(info->image, info->artifact);

  OverwriteArtifact(TestBundleDir("counter_v2"), dir);
  auto outcome = runtime().ReloadBundle(dir);
  ASSERT_THAT(outcome.status(), IsOk());
  ASSERT_TRUE(outcome->ok()) << outcome->status;
  const std::vector<core::PhaseEvent> events = recorder().events();
  ASSERT_THAT(Describe(events),
              ElementsAre("LOADED counter", "PREPARING counter", "RELOADED counter"));
  EXPECT_EQ(events[0].artifact_sha256, CounterSha("counter_v1"));
  EXPECT_EQ(events[2].artifact_sha256, CounterSha("counter_v2"));
  auto after = runtime().GetBundle("counter");
  ASSERT_THAT(after.status(), IsOk());
  EXPECT_EQ(after->artifact_sha256, CounterSha("counter_v2"));
}

TEST_F(RuntimeArtifactTest, AReloadRefusedByAdmissionFailsBeforePreparingAndKeepsTheOldVersion) {
  CreateRefusingRuntime();
  const fs::path dir = Copy("counter_v1");
  ASSERT_THAT(runtime().LoadBundle(dir).status(), IsOk());
  refused_.insert(CounterSha("counter_v2"));
  recorder().Clear();

  OverwriteArtifact(TestBundleDir("counter_v2"), dir);
  auto outcome = runtime().ReloadBundle(dir);
  ASSERT_THAT(outcome.status(), IsOk());
  EXPECT_THAT(outcome->status, HasReason(ErrorReason::kCrashed));
  const std::vector<core::PhaseEvent> events = recorder().events();
  ASSERT_THAT(Describe(events), ElementsAre("FAILED counter"));
  EXPECT_EQ(events[0].reason, ErrorReason::kCrashed);
  EXPECT_EQ(events[0].artifact_sha256, CounterSha("counter_v2"));
  EXPECT_THAT(events[0].message, HasSubstr("is refused"));
  EXPECT_EQ(CallFn0(runtime(), "test.counter", 1).value_or(0), 1);
  EXPECT_EQ(asked_.back(), "counter " + CounterSha("counter_v2"));
  // Nothing of the refused copy is left in the state directory but the live image.
  EXPECT_EQ(CountFilesUnder(state().path()), 1u);
}

TEST_F(RuntimeArtifactTest, ALoadRefusedByAdmissionReturnsTheErrorAndPublishesNothing) {
  CreateRefusingRuntime();
  refused_.insert(CounterSha("counter_v1"));
  const fs::path dir = Copy("counter_v1");
  auto info = runtime().LoadBundle(dir);
  EXPECT_THAT(info.status(), HasReason(ErrorReason::kCrashed));
  EXPECT_TRUE(recorder().events().empty());
  EXPECT_TRUE(runtime().ListBundles().empty());
  EXPECT_EQ(CountFilesUnder(state().path()), 0u);
}

TEST_F(RuntimeArtifactTest, ABundleLoadedFromAKeptCopyLivesInItsOwnDirectory) {
  CreateRefusingRuntime();  // for the digest
  // Its directory holds v2 now; the kept copy holds v1, which is what loads.
  const fs::path dir = Copy("counter_v1");
  OverwriteArtifact(TestBundleDir("counter_v2"), dir);
  TempDir kept;
  const fs::path copy = CopyBundle(TestBundleDir("counter_v1"), kept.path() / "counter");
  auto info = runtime().LoadBundle(core::BundleSource{dir, copy});
  ASSERT_THAT(info.status(), IsOk());
  EXPECT_EQ(info->dir, fs::canonical(dir));
  EXPECT_EQ(info->version.ToString(), "1.0.0");
  EXPECT_EQ(info->artifact_sha256, CounterSha("counter_v1"));
  EXPECT_EQ(CallFn0(runtime(), "test.counter", 1).value_or(0), 1);

  // Reloads read the bundle's own directory.
  auto outcome = runtime().ReloadBundleByName("counter");
  ASSERT_THAT(outcome.status(), IsOk());
  ASSERT_TRUE(outcome->ok()) << outcome->status;
  EXPECT_EQ(CallFn0(runtime(), "test.counter", 1).value_or(0), 2);
  auto path_reload = runtime().ReloadBundle(dir);
  ASSERT_THAT(path_reload.status(), IsOk());
  EXPECT_TRUE(path_reload->ok());
}

TEST_F(RuntimeArtifactTest, LoadAllOrdersKeptCopiesByDependencyAndSkipsWhatCannotLoad) {
  TempDir kept;
  const fs::path a = Copy("chain_a");
  const fs::path b = Copy("chain_b");
  const fs::path c = Copy("chain_c");
  const fs::path b_copy = CopyBundle(TestBundleDir("chain_b"), kept.path() / "chain_b");
  const fs::path broken = kept.path() / "missing";
  // Dependents first in the list: the order comes from the manifests.
  auto loaded =
      runtime().LoadAll({{c, {}}, {b, b_copy}, {a, {}}, {bundles().path() / "nothing", broken}},
                        /*skip_unloadable=*/true);
  ASSERT_THAT(loaded.status(), IsOk());
  std::vector<std::string> names;
  for (const core::BundleInfo& info : *loaded) names.push_back(info.name);
  EXPECT_THAT(names, ElementsAre("chain_a", "chain_b", "chain_c"));
  EXPECT_EQ((*loaded)[1].dir, fs::canonical(b));
  EXPECT_FALSE(
      log()
          .Matching(core::LogLevel::kWarn, "skipping " + (bundles().path() / "nothing").string())
          .empty())
      << "a source whose manifest cannot be read is logged: " << ToString(log().lines());
}

}  // namespace
}  // namespace polyplug::test
