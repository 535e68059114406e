// Load failures (docs/SEMANTICS.md §3): each returns the precise reason, publishes nothing,
// fires no event, leaves no private copy behind, and a good bundle loads afterwards.
#include <filesystem>
#include <functional>
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
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

struct LoadFailureCase {
  std::string name;
  // Prepares a bundle directory under `root` and returns the path to load.
  std::function<fs::path(const fs::path& root)> prepare;
  ErrorReason reason;
  std::vector<std::string> message_parts;
};

void PrintTo(const LoadFailureCase& c, std::ostream* os) { *os << c.name; }

std::function<fs::path(const fs::path&)> Plain(std::string target) {
  return [target](const fs::path& root) { return CopyTestBundle(target, root); };
}

std::vector<LoadFailureCase> Cases() {
  return {
      {"NoInit", Plain("no_init"), ErrorReason::kInitSymbolMissing, {"no_init"}},
      {"WrongAbi", Plain("wrong_abi"), ErrorReason::kAbiMismatch, {"wrong_abi"}},
      {"InitFails",
       Plain("init_fails"),
       ErrorReason::kInitFailed,
       {"init_fails: refused on purpose"}},
      {"InitThrows", Plain("init_throws"), ErrorReason::kInitFailed, {"thrown on purpose"}},
      {"ProvidesExtra",
       Plain("provides_extra"),
       ErrorReason::kProvidesMismatch,
       {"test.undeclared"}},
      {"ProvidesMissing",
       Plain("provides_missing"),
       ErrorReason::kProvidesMismatch,
       {"test.declared_b"}},
      {"FileEscapesWithDotDot",
       [](const fs::path& root) {
         const fs::path dir = CopyTestBundle("counter_v1", root);
         // The target exists, so only confinement can reject it.
         fs::copy_file(dir / "libcounter.so", root / "x.so");
         ReplaceInFile(dir / "manifest.toml", "\"libcounter.so\"", "\"../x.so\"");
         return dir;
       },
       ErrorReason::kArtifactPathEscape,
       {"../x.so"}},
      {"FileIsASymlinkLeadingOut",
       [](const fs::path& root) {
         const fs::path dir = CopyTestBundle("counter_v1", root);
         fs::create_directories(root / "outside");
         fs::rename(dir / "libcounter.so", root / "outside" / "libcounter.so");
         fs::create_symlink(root / "outside" / "libcounter.so", dir / "libcounter.so");
         return dir;
       },
       ErrorReason::kArtifactPathEscape,
       {"libcounter.so"}},
      {"ArtifactMissing",
       [](const fs::path& root) {
         const fs::path dir = CopyTestBundle("counter_v1", root);
         fs::remove(dir / "libcounter.so");
         return dir;
       },
       ErrorReason::kArtifactMissing,
       {"libcounter.so"}},
      {"ArtifactIsNotElf",
       [](const fs::path& root) {
         const fs::path dir = CopyTestBundle("counter_v1", root);
         WriteFile(dir / "libcounter.so", "#!/bin/sh\necho this is not a shared object\n");
         return dir;
       },
       ErrorReason::kArtifactNotLoadable,
       {}},
      {"ArtifactIsTruncated",
       [](const fs::path& root) {
         const fs::path dir = CopyTestBundle("counter_v1", root);
         WriteFile(dir / "libcounter.so", ReadFile(dir / "libcounter.so").substr(0, 64));
         return dir;
       },
       ErrorReason::kArtifactNotLoadable,
       {}},
      {"TamperedId",
       [](const fs::path& root) {
         const fs::path dir = CopyTestBundle("counter_v1", root);
         ReplaceInFile(dir / "manifest.toml", DecimalId(BundleId("counter")), "12345");
         return dir;
       },
       ErrorReason::kBundleTampered,
       {HexId(BundleId("counter")), HexId(12345)}},
      {"MalformedManifest",
       [](const fs::path& root) {
         const fs::path dir = CopyTestBundle("counter_v1", root);
         WriteFile(dir / "manifest.toml", "loader = \"native\"\nname = [unterminated\n");
         return dir;
       },
       ErrorReason::kManifestInvalid,
       {"manifest.toml"}},
      {"NoManifest",
       [](const fs::path& root) {
         const fs::path dir = CopyTestBundle("counter_v1", root);
         fs::remove(dir / "manifest.toml");
         return dir;
       },
       ErrorReason::kManifestInvalid,
       {"manifest.toml"}},
      {"UnknownLoader",
       [](const fs::path& root) {
         const fs::path dir = CopyTestBundle("counter_v1", root);
         ReplaceInFile(dir / "manifest.toml", "\"native\"", "\"lua\"");
         return dir;
       },
       ErrorReason::kNoLoader,
       {"lua"}},
  };
}

class RuntimeLoadFailureTest : public RuntimeTest,
                               public ::testing::WithParamInterface<LoadFailureCase> {};

TEST_P(RuntimeLoadFailureTest, FailsPublishingNothingAndAGoodBundleStillLoads) {
  const LoadFailureCase& c = GetParam();
  // Under a subdirectory, so that the good counter_v1 copied below does not collide.
  const fs::path path = c.prepare(bundles() / "bad");
  ASSERT_FALSE(HasFailure()) << "preparing the bundle failed";
  const uint64_t revision_before = runtime().registry().revision();

  absl::StatusOr<core::BundleInfo> loaded = runtime().LoadBundle(path);
  EXPECT_THAT(loaded.status(), HasReason(c.reason));
  for (const std::string& part : c.message_parts) {
    EXPECT_THAT(std::string(loaded.status().message()), HasSubstr(part));
  }

  EXPECT_THAT(recorder().events(), IsEmpty());
  EXPECT_EQ(runtime().journal().last_seq(), 0u);
  EXPECT_THAT(runtime().ListBundles(), IsEmpty());
  EXPECT_THAT(runtime().registry().List(), IsEmpty());
  EXPECT_EQ(runtime().registry().revision(), revision_before);
  EXPECT_EQ(CountFilesUnder(state().path()), 0u) << "a failed load left its private copy";

  ASSERT_THAT(runtime().LoadBundle(Copy("counter_v1")).status(), IsOk());
  absl::StatusOr<int32_t> version = CallFn0(runtime(), "test.counter", 1);
  ASSERT_THAT(version.status(), IsOk());
  EXPECT_EQ(*version, 1);
  EXPECT_THAT(Describe(recorder().events()), ElementsAre("LOADED counter"));
}

INSTANTIATE_TEST_SUITE_P(Bundles, RuntimeLoadFailureTest, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<LoadFailureCase>& info) {
                           return info.param.name;
                         });

using RuntimeLoadTwiceTest = RuntimeTest;

TEST_F(RuntimeLoadTwiceTest, LoadingTheSameBundleTwiceIsRefused) {
  const fs::path dir = Copy("counter_v1");
  ASSERT_THAT(runtime().LoadBundle(dir).status(), IsOk());
  absl::StatusOr<core::ContractHandle> handle =
      runtime().Find(GuestContractId("test.counter", 1), 1);
  ASSERT_THAT(handle.status(), IsOk());
  recorder().Clear();
  const uint64_t revision_before = runtime().registry().revision();

  EXPECT_THAT(runtime().LoadBundle(dir).status(), HasReason(ErrorReason::kBundleAlreadyLoaded));
  // Another copy of the same bundle has the same name, hence the same id.
  const fs::path second = CopyBundle(TestBundleDir("counter_v2"), bundles() / "second");
  EXPECT_THAT(runtime().LoadBundle(second).status(), HasReason(ErrorReason::kBundleAlreadyLoaded));

  EXPECT_THAT(recorder().events(), IsEmpty());
  EXPECT_EQ(runtime().registry().revision(), revision_before);
  EXPECT_THAT(runtime().ListBundles(), SizeIs(1));
  EXPECT_THAT(runtime().registry().List(), SizeIs(1));
  EXPECT_EQ(CountFilesUnder(state().path()), 1u);
  absl::StatusOr<int32_t> version = CallFn0(runtime(), *handle);
  ASSERT_THAT(version.status(), IsOk());
  EXPECT_EQ(*version, 1);
}

}  // namespace
}  // namespace polyplug::test
