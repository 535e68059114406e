// Failed hot reloads (docs/SEMANTICS.md §4): each leaves v1 live and callable through the handle
// taken before, reports the precise reason, fires FAILED (preceded by PREPARING only when
// the failure happens after PREPARING, i.e. once the new image is being opened and
// initialised), and does not prevent a later good reload.
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
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
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

const uint64_t kCounterContract = GuestContractId("test.counter", 1);

struct ReloadFailureCase {
  std::string name;
  // Damages the loaded copy of counter_v1 at `dir` before the reload.
  std::function<void(const fs::path& dir)> damage;
  ErrorReason reason;
  std::vector<std::string> events;
  std::vector<std::string> message_parts;
};

void PrintTo(const ReloadFailureCase& c, std::ostream* os) { *os << c.name; }

void CopyLibraryOverCounter(absl::string_view target, const fs::path& dir) {
  fs::copy_file(TestBundleDir(target) / absl::StrCat("lib", target, ".so"), dir / "libcounter.so",
                fs::copy_options::overwrite_existing);
}

const std::vector<std::string> kFailedOnly = {"FAILED counter"};
const std::vector<std::string> kPreparingThenFailed = {"PREPARING counter", "FAILED counter"};

std::vector<ReloadFailureCase> Cases() {
  return {
      {"TamperedId",
       [](const fs::path& dir) {
         ReplaceInFile(dir / "manifest.toml", DecimalId(BundleId("counter")), "12345");
       },
       ErrorReason::kBundleTampered,
       kFailedOnly,
       {HexId(BundleId("counter")), HexId(12345)}},
      {"MalformedToml",
       [](const fs::path& dir) {
         WriteFile(dir / "manifest.toml", "name = \"counter\"\nthis is [not toml\n");
       },
       ErrorReason::kManifestInvalid,
       kFailedOnly,
       {"manifest.toml"}},
      {"ArtifactDeleted",
       [](const fs::path& dir) { fs::remove(dir / "libcounter.so"); },
       ErrorReason::kArtifactMissing,
       kFailedOnly,
       {"libcounter.so"}},
      {"ArtifactPathEscape",
       [](const fs::path& dir) {
         fs::copy_file(dir / "libcounter.so", dir.parent_path() / "x.so");
         ReplaceInFile(dir / "manifest.toml", "\"libcounter.so\"", "\"../x.so\"");
       },
       ErrorReason::kArtifactPathEscape,
       kFailedOnly,
       {"../x.so"}},
      {"ArtifactIsText",
       [](const fs::path& dir) { WriteFile(dir / "libcounter.so", "not a shared object\n"); },
       ErrorReason::kArtifactNotLoadable,
       kPreparingThenFailed,
       {}},
      {"ArtifactTruncated",
       [](const fs::path& dir) {
         WriteFile(dir / "libcounter.so", ReadFile(dir / "libcounter.so").substr(0, 64));
       },
       ErrorReason::kArtifactNotLoadable,
       kPreparingThenFailed,
       {}},
      {"AbiMismatch",
       [](const fs::path& dir) { CopyLibraryOverCounter("wrong_abi", dir); },
       ErrorReason::kAbiMismatch,
       kPreparingThenFailed,
       {}},
      {"InitSymbolMissing",
       [](const fs::path& dir) { CopyLibraryOverCounter("no_init", dir); },
       ErrorReason::kInitSymbolMissing,
       kPreparingThenFailed,
       {}},
      // init_fails registers its contract and then fails: the failure of init wins over
      // the mismatch with the counter manifest's provides.
      {"InitFails",
       [](const fs::path& dir) { CopyLibraryOverCounter("init_fails", dir); },
       ErrorReason::kInitFailed,
       kPreparingThenFailed,
       {"init_fails: refused on purpose"}},
      {"InitThrows",
       [](const fs::path& dir) { CopyLibraryOverCounter("init_throws", dir); },
       ErrorReason::kInitFailed,
       kPreparingThenFailed,
       {"thrown on purpose"}},
      {"ProvidesMismatch",
       [](const fs::path& dir) { CopyLibraryOverCounter("chain_a", dir); },
       ErrorReason::kProvidesMismatch,
       kPreparingThenFailed,
       {"chain.a"}},
  };
}

class RuntimeReloadFailureTest : public RuntimeTest,
                                 public ::testing::WithParamInterface<ReloadFailureCase> {};

TEST_P(RuntimeReloadFailureTest, FailedReloadKeepsV1AndALaterGoodReloadWorks) {
  const ReloadFailureCase& c = GetParam();
  const fs::path dir = Copy("counter_v1");
  ASSERT_THAT(runtime().LoadBundle(dir).status(), IsOk());
  absl::StatusOr<core::ContractHandle> handle = runtime().Find(kCounterContract, 1);
  ASSERT_THAT(handle.status(), IsOk());
  recorder().Clear();
  const uint64_t revision_before = runtime().registry().revision();
  const size_t private_copies_before = CountFilesUnder(state().path());

  c.damage(dir);
  ASSERT_FALSE(HasFailure()) << "damaging the bundle failed";
  absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundle(dir);

  // A failure of the reload itself is an outcome, not a request error.
  ASSERT_THAT(outcome.status(), IsOk());
  EXPECT_FALSE(outcome->ok());
  EXPECT_THAT(outcome->status, HasReason(c.reason));
  for (const std::string& part : c.message_parts) {
    EXPECT_THAT(std::string(outcome->status.message()), HasSubstr(part));
  }

  const std::vector<RecordedPhase> recorded = recorder().recorded();
  std::vector<core::PhaseEvent> events;
  for (const RecordedPhase& r : recorded) events.push_back(r.event);
  ASSERT_THAT(Describe(events), ElementsAreArray(c.events));
  for (const core::PhaseEvent& e : events) {
    SCOPED_TRACE(Describe(e));
    EXPECT_EQ(e.bundle_id, BundleId("counter"));
    EXPECT_EQ(e.reload_id, outcome->reload_id);
    EXPECT_EQ(e.root_reload_id, e.reload_id);
    EXPECT_EQ(e.parent_reload_id, 0u);
  }
  const core::PhaseEvent& failed = events.back();
  EXPECT_EQ(failed.reason, c.reason);
  for (const std::string& part : c.message_parts) EXPECT_THAT(failed.message, HasSubstr(part));
  EXPECT_EQ(recorded.back().abi_phase_type, POLYPLUG_PHASE_FAILED);
  ASSERT_TRUE(recorded.back().abi_reason.has_value()) << "FAILED carries a reason";
  EXPECT_FALSE(recorded.back().abi_reason->empty());
  ASSERT_THAT(outcome->events, SizeIs(events.size()));
  EXPECT_EQ(outcome->events.back().seq, failed.seq);

  // v1 is still live behind the very same handle; nothing was published or left behind.
  absl::StatusOr<int32_t> version = CallFn0(runtime(), *handle);
  ASSERT_THAT(version.status(), IsOk());
  EXPECT_EQ(*version, 1);
  absl::StatusOr<core::ContractHandle> found = runtime().Find(kCounterContract, 1);
  ASSERT_THAT(found.status(), IsOk());
  EXPECT_EQ(*found, *handle);
  EXPECT_EQ(runtime().registry().revision(), revision_before);
  EXPECT_EQ(runtime().GetBundle("counter")->version, (core::Version{1, 0, 0}));
  EXPECT_EQ(CountFilesUnder(state().path()), private_copies_before);

  // A good reload afterwards goes through.
  recorder().Clear();
  OverwriteArtifact(TestBundleDir("counter_v2"), dir);
  absl::StatusOr<core::ReloadOutcome> good = runtime().ReloadBundle(dir);
  ASSERT_THAT(good.status(), IsOk());
  EXPECT_TRUE(good->ok()) << good->status;
  EXPECT_THAT(Describe(recorder().events()),
              ElementsAreArray({"PREPARING counter", "RELOADED counter"}));
  version = CallFn0(runtime(), *handle);
  ASSERT_THAT(version.status(), IsOk());
  EXPECT_EQ(*version, 2);
}

INSTANTIATE_TEST_SUITE_P(Damage, RuntimeReloadFailureTest, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<ReloadFailureCase>& info) {
                           return info.param.name;
                         });

using RuntimeReloadFailureSequenceTest = RuntimeTest;

TEST_F(RuntimeReloadFailureSequenceTest, SeveralFailuresInARowThenSuccess) {
  const fs::path dir = Copy("counter_v1");
  ASSERT_THAT(runtime().LoadBundle(dir).status(), IsOk());
  absl::StatusOr<core::ContractHandle> handle = runtime().Find(kCounterContract, 1);
  ASSERT_THAT(handle.status(), IsOk());

  for (const ReloadFailureCase& c : Cases()) {
    SCOPED_TRACE(c.name);
    OverwriteArtifact(TestBundleDir("counter_v1"), dir);
    c.damage(dir);
    absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundle(dir);
    ASSERT_THAT(outcome.status(), IsOk());
    EXPECT_THAT(outcome->status, HasReason(c.reason));
    absl::StatusOr<int32_t> version = CallFn0(runtime(), *handle);
    ASSERT_THAT(version.status(), IsOk());
    EXPECT_EQ(*version, 1);
    fs::remove(dir.parent_path() / "x.so");
  }
  OverwriteArtifact(TestBundleDir("counter_v2"), dir);
  absl::StatusOr<core::ReloadOutcome> good = runtime().ReloadBundle(dir);
  ASSERT_THAT(good.status(), IsOk());
  EXPECT_TRUE(good->ok()) << good->status;
  absl::StatusOr<int32_t> version = CallFn0(runtime(), *handle);
  ASSERT_THAT(version.status(), IsOk());
  EXPECT_EQ(*version, 2);
  EXPECT_EQ(runtime().GetBundle("counter")->reload_count, 1u);
  EXPECT_EQ(CountFilesUnder(state().path()), 1u);
}

}  // namespace
}  // namespace polyplug::test
