// DiscoverAndLoad (docs/SEMANTICS.md §9): one level deep, dependency order, cycles and
// unsatisfied dependencies refused before anything loads.
#include <filesystem>
#include <map>
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
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::vector<std::string> Names(const std::vector<core::BundleInfo>& bundles) {
  std::vector<std::string> names;
  for (const core::BundleInfo& b : bundles) names.push_back(b.name);
  return names;
}

using RuntimeDiscoveryTest = RuntimeTest;

TEST_F(RuntimeDiscoveryTest, LoadsBundlesInDependencyOrderAndIgnoresTheRest) {
  const fs::path root = bundles() / "root";
  // Directory names deliberately sort against the dependency order.
  CopyBundle(TestBundleDir("chain_c"), root / "1-chain_c");
  CopyBundle(TestBundleDir("chain_a"), root / "3-chain_a");
  CopyBundle(TestBundleDir("chain_b"), root / "2-chain_b");
  fs::copy_file(TestBundleDir("counter_v1") / "libcounter.so", root / "libflat.so");
  fs::create_directories(root / "empty");

  absl::StatusOr<std::vector<core::BundleInfo>> loaded = runtime().DiscoverAndLoad({root});
  ASSERT_THAT(loaded.status(), IsOk());
  EXPECT_THAT(Names(*loaded), ElementsAre("chain_a", "chain_b", "chain_c"));
  EXPECT_THAT(Describe(recorder().events()),
              ElementsAre("LOADED chain_a", "LOADED chain_b", "LOADED chain_c"));
  EXPECT_EQ(runtime().ListBundles().size(), 3u);
  // Providers were published before their dependents' init ran.
  for (const char* contract : {"chain.a", "chain.b", "chain.c"}) {
    absl::StatusOr<int32_t> value = CallFn0(runtime(), contract, 1);
    ASSERT_THAT(value.status(), IsOk()) << contract;
    EXPECT_EQ(*value, 1) << contract;
  }
}

// Bundle names can sort against the dependency order too: rename chain_a's bundle (and
// recompute its id) so that a name sort would put it last.
TEST_F(RuntimeDiscoveryTest, OrderFollowsDependenciesNotNames) {
  const fs::path root = bundles() / "root";
  const fs::path provider = CopyBundle(TestBundleDir("chain_a"), root / "chain_a");
  ASSERT_TRUE(ReplaceInFile(provider / "manifest.toml", DecimalId(BundleId("chain_a")),
                            DecimalId(BundleId("zz_provider"))));
  ASSERT_TRUE(ReplaceInFile(provider / "manifest.toml", "\"chain_a\"", "\"zz_provider\""));
  CopyBundle(TestBundleDir("chain_b"), root / "chain_b");

  absl::StatusOr<std::vector<core::BundleInfo>> loaded = runtime().DiscoverAndLoad({root});
  ASSERT_THAT(loaded.status(), IsOk());
  EXPECT_THAT(Names(*loaded), ElementsAre("zz_provider", "chain_b"));
  absl::StatusOr<int32_t> found_during_init = CallFn0(runtime(), "chain.b", 1);
  ASSERT_THAT(found_during_init.status(), IsOk());
  EXPECT_EQ(*found_during_init, 1);
}

TEST_F(RuntimeDiscoveryTest, DependenciesMayComeFromAnotherRoot) {
  const fs::path providers = bundles() / "providers";
  const fs::path dependents = bundles() / "dependents";
  CopyBundle(TestBundleDir("chain_a"), providers / "chain_a");
  CopyBundle(TestBundleDir("chain_b"), dependents / "chain_b");

  absl::StatusOr<std::vector<core::BundleInfo>> loaded =
      runtime().DiscoverAndLoad({dependents, providers});
  ASSERT_THAT(loaded.status(), IsOk());
  EXPECT_THAT(Names(*loaded), ElementsAre("chain_a", "chain_b"));
}

TEST_F(RuntimeDiscoveryTest, ACycleIsRefusedAndNothingLoads) {
  const fs::path root = bundles() / "root";
  CopyBundle(TestBundleDir("cycle_x"), root / "cycle_x");
  CopyBundle(TestBundleDir("cycle_y"), root / "cycle_y");
  CopyBundle(TestBundleDir("counter_v1"), root / "counter");  // innocent bystander

  absl::StatusOr<std::vector<core::BundleInfo>> loaded = runtime().DiscoverAndLoad({root});
  EXPECT_THAT(loaded.status(), HasReason(ErrorReason::kDependencyCycle));
  EXPECT_THAT(std::string(loaded.status().message()), HasSubstr("cycle_x"));
  EXPECT_THAT(std::string(loaded.status().message()), HasSubstr("cycle_y"));
  EXPECT_THAT(recorder().events(), IsEmpty());
  EXPECT_THAT(runtime().ListBundles(), IsEmpty());
  EXPECT_THAT(runtime().registry().List(), IsEmpty());
  EXPECT_EQ(CountFilesUnder(state().path()), 0u);
}

TEST_F(RuntimeDiscoveryTest, AnUnsatisfiedDependencyIsRefusedAndNothingLoads) {
  const fs::path root = bundles() / "root";
  CopyBundle(TestBundleDir("chain_b"), root / "chain_b");
  CopyBundle(TestBundleDir("counter_v1"), root / "counter");

  absl::StatusOr<std::vector<core::BundleInfo>> loaded = runtime().DiscoverAndLoad({root});
  EXPECT_THAT(loaded.status(), HasReason(ErrorReason::kUnsatisfiedDependency));
  EXPECT_THAT(std::string(loaded.status().message()), HasSubstr("chain.a@1"));
  EXPECT_THAT(std::string(loaded.status().message()), HasSubstr("chain_b"));
  EXPECT_THAT(recorder().events(), IsEmpty());
  EXPECT_THAT(runtime().ListBundles(), IsEmpty());
}

// What polyplug-host does at start: one broken dependency graph does not keep the other
// bundles of the roots from loading.
TEST_F(RuntimeDiscoveryTest, SkippingUnloadableBundlesLoadsTheRest) {
  const fs::path root = bundles() / "root";
  CopyBundle(TestBundleDir("cycle_x"), root / "cycle_x");
  CopyBundle(TestBundleDir("cycle_y"), root / "cycle_y");
  CopyBundle(TestBundleDir("chain_b"), root / "chain_b");  // chain.a@1 is nowhere
  CopyBundle(TestBundleDir("chain_c"), root / "chain_c");  // needs chain_b
  CopyBundle(TestBundleDir("counter_v1"), root / "counter");

  absl::StatusOr<std::vector<core::BundleInfo>> loaded =
      runtime().DiscoverAndLoad({root}, /*skip_unloadable=*/true);
  ASSERT_THAT(loaded.status(), IsOk());
  ASSERT_EQ(loaded->size(), 1u);
  EXPECT_EQ(loaded->at(0).name, "counter");
  EXPECT_THAT(Describe(recorder().events()), ElementsAre("LOADED counter"));
  const std::string log_text = ToString(log().Warnings());
  EXPECT_THAT(log_text, HasSubstr("[DEPENDENCY_CYCLE] dependency cycle among bundles cycle_x, "
                                  "cycle_y"));
  EXPECT_THAT(log_text, HasSubstr("[UNSATISFIED_DEPENDENCY]"));
  EXPECT_THAT(log_text, HasSubstr("chain.a@1"));
  EXPECT_THAT(log_text, HasSubstr("not loading \"chain_c\""));
}

// The bundles left out are also handed back with their reasons (for the host to turn into
// events), each once, whatever made it unloadable.
TEST_F(RuntimeDiscoveryTest, TheBundlesLeftOutAreReportedWithTheirReasons) {
  const fs::path root = bundles() / "root";
  CopyBundle(TestBundleDir("cycle_x"), root / "cycle_x");
  CopyBundle(TestBundleDir("cycle_y"), root / "cycle_y");
  CopyBundle(TestBundleDir("chain_b"), root / "chain_b");  // chain.a@1 is nowhere
  CopyBundle(TestBundleDir("chain_c"), root / "chain_c");  // needs chain_b
  CopyBundle(TestBundleDir("init_fails"), root / "init_fails");
  CopyBundle(TestBundleDir("counter_v1"), root / "counter");
  fs::create_directories(root / "garbled");
  WriteFile(root / "garbled" / "manifest.toml", "this is not toml");

  std::vector<core::NotLoaded> not_loaded;
  absl::StatusOr<std::vector<core::BundleInfo>> loaded =
      runtime().DiscoverAndLoad({root}, /*skip_unloadable=*/true, &not_loaded);
  ASSERT_THAT(loaded.status(), IsOk());
  ASSERT_EQ(loaded->size(), 1u);
  std::map<std::string, ErrorReason> reasons;
  for (const core::NotLoaded& n : not_loaded) {
    EXPECT_TRUE(reasons.emplace(n.name, core::ReasonOf(n.status)).second) << n.name << " twice";
    EXPECT_FALSE(n.dir.empty()) << n.name;
  }
  EXPECT_THAT(reasons, ::testing::UnorderedElementsAre(
                           ::testing::Pair("garbled", ErrorReason::kManifestInvalid),
                           ::testing::Pair("cycle_x", ErrorReason::kDependencyCycle),
                           ::testing::Pair("cycle_y", ErrorReason::kDependencyCycle),
                           ::testing::Pair("chain_b", ErrorReason::kUnsatisfiedDependency),
                           ::testing::Pair("chain_c", ErrorReason::kUnsatisfiedDependency),
                           ::testing::Pair("init_fails", ErrorReason::kInitFailed)));
}

TEST_F(RuntimeDiscoveryTest, ADependencyAlreadyLoadedSatisfiesDiscovery) {
  ASSERT_NO_FATAL_FAILURE(CopyAndLoad("chain_a"));
  recorder().Clear();
  const fs::path root = bundles() / "root";
  CopyBundle(TestBundleDir("chain_b"), root / "chain_b");

  absl::StatusOr<std::vector<core::BundleInfo>> loaded = runtime().DiscoverAndLoad({root});
  ASSERT_THAT(loaded.status(), IsOk());
  EXPECT_THAT(Names(*loaded), ElementsAre("chain_b"));
  absl::StatusOr<int32_t> found_during_init = CallFn0(runtime(), "chain.b", 1);
  ASSERT_THAT(found_during_init.status(), IsOk());
  EXPECT_EQ(*found_during_init, 1);
}

TEST_F(RuntimeDiscoveryTest, BundlesAlreadyLoadedAreSkipped) {
  ASSERT_NO_FATAL_FAILURE(CopyAndLoad("chain_a"));
  recorder().Clear();
  const fs::path root = bundles() / "root";
  CopyBundle(TestBundleDir("chain_a"), root / "chain_a");
  CopyBundle(TestBundleDir("chain_b"), root / "chain_b");

  absl::StatusOr<std::vector<core::BundleInfo>> loaded = runtime().DiscoverAndLoad({root});
  ASSERT_THAT(loaded.status(), IsOk());
  EXPECT_THAT(Describe(recorder().events()), ElementsAre("LOADED chain_b"));
  EXPECT_EQ(runtime().ListBundles().size(), 2u);

  // A second discovery of the same root loads nothing more.
  recorder().Clear();
  loaded = runtime().DiscoverAndLoad({root});
  ASSERT_THAT(loaded.status(), IsOk());
  EXPECT_THAT(recorder().events(), IsEmpty());
}

}  // namespace
}  // namespace polyplug::test
