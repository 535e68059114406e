// manifest.toml parsing and validation (docs/WRITING_BUNDLES.md §5).
#include "polyplug/core/manifest.h"

#include <stdlib.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "polyplug/core/error.h"
#include "polyplug/core/ids.h"
#include "unit/status_matchers.h"

namespace polyplug::core {
namespace {

namespace fs = std::filesystem;

using ::polyplug::testing::HasReason;
using ::polyplug::testing::IsOk;
using ::polyplug::testing::MessageMatches;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

// A path that appears nowhere else in the manifests, so finding it in a message proves
// the message names the file.
const fs::path kPath = fs::path("bundles") / "under_test" / "manifest.toml";

// "reload_plugin_v1" hashes above INT64_MAX, like most real ids.
constexpr uint64_t kBundleIdAboveInt64Max = 16808897324254478442ULL;
constexpr char kIdAboveInt64Max[] = "16808897324254478442";
// guest_contract_id("reload.test", 1) and ("image.decode", 1); the latter is above INT64_MAX.
constexpr uint64_t kReloadTestContractId = 4871652249423578378ULL;
constexpr uint64_t kImageDecodeContractId = 18154885241241252316ULL;

constexpr char kFullManifest[] = R"toml(
# A manifest using every field polyplug knows, plus some it does not.
loader = "native"
name = "reload_plugin_v1"
id = 16808897324254478442
version = "1.2.3"
file = "libreload_plugin.so"
provides = ["reload.test@1", "image.decode@1.4.0", "plain"]
needs_reinit_on_dep_reload = true
bundle_dependencies = ["base", "core@1.0"]
runtime = "rust"              # an old key: ignored
some_future_key = [1, 2, 3]   # unknown: ignored

[function_count]
"reload.test@1" = 3
"image.decode@1" = 12

[some_future_table]
nested = { deep = true }

[[dependency]]
kind = "bundle"
contract = "reload.test@1"
min_version = "1.0"
bundle = "reload_plugin_v1"
contract_id = 4871652249423578378
bundle_id = 16808897324254478442

[[dependency]]
kind = "contract"
contract = "image.decode"
min_version = "1.0"
contract_id = 18154885241241252316
unknown_in_dependency = "ignored"
)toml";

// A minimal valid manifest; `extra` lines are appended at top level.
std::string ValidManifest(absl::string_view extra = "") {
  return absl::StrCat("loader = \"native\"\nname = \"reload_plugin_v1\"\nid = ", kIdAboveInt64Max,
                      "\nversion = \"1.0.0\"\nfile = \"libplugin.so\"\n", extra);
}

// Builds a manifest from top-level key lines (no tables).
std::string ManifestOf(const std::vector<std::string>& lines) {
  return absl::StrJoin(lines, "\n") + "\n";
}

// Parses then validates, as loading does: the first error of either.
absl::Status ParseAndValidate(absl::string_view text) {
  absl::StatusOr<Manifest> manifest = ParseManifest(text, kPath);
  if (!manifest.ok()) return manifest.status();
  return ValidateManifest(*manifest);
}

// An error for `text` that carries `reason` and names the file and `field`.
::testing::Matcher<absl::Status> ErrorNaming(ErrorReason reason, std::string field) {
  return AllOf(HasReason(reason),
               MessageMatches(AllOf(HasSubstr(kPath.string()), HasSubstr(field))));
}

// ------------------------------------------------------------------------------------
// Parsing

TEST(ParseManifestTest, ParsesEveryField) {
  ASSERT_OK_AND_ASSIGN(Manifest manifest, ParseManifest(kFullManifest, kPath));
  EXPECT_EQ(manifest.path, kPath);
  EXPECT_EQ(manifest.loader, "native");
  EXPECT_EQ(manifest.name, "reload_plugin_v1");
  EXPECT_EQ(manifest.id, kBundleIdAboveInt64Max);
  EXPECT_EQ(manifest.version_text, "1.2.3");
  EXPECT_EQ(manifest.version, (Version{1, 2, 3}));
  EXPECT_EQ(manifest.file, "libreload_plugin.so");
  EXPECT_TRUE(manifest.needs_reinit_on_dep_reload);

  ASSERT_EQ(manifest.provides.size(), 3u);
  EXPECT_EQ(manifest.provides[0].name, "reload.test");
  EXPECT_EQ(manifest.provides[0].major(), 1u);
  EXPECT_EQ(manifest.provides[1].name, "image.decode");
  ASSERT_TRUE(manifest.provides[1].version.has_value());
  EXPECT_EQ(*manifest.provides[1].version, (Version{1, 4, 0}));
  EXPECT_EQ(manifest.provides[2].name, "plain");
  EXPECT_FALSE(manifest.provides[2].version.has_value());

  EXPECT_THAT(manifest.function_count,
              UnorderedElementsAre(Pair("reload.test@1", 3u), Pair("image.decode@1", 12u)));

  ASSERT_EQ(manifest.bundle_dependencies.size(), 2u);
  EXPECT_EQ(manifest.bundle_dependencies[0].name, "base");
  EXPECT_FALSE(manifest.bundle_dependencies[0].version.has_value());
  EXPECT_EQ(manifest.bundle_dependencies[1].name, "core");
  ASSERT_TRUE(manifest.bundle_dependencies[1].version.has_value());
  EXPECT_EQ(*manifest.bundle_dependencies[1].version, (Version{1, 0, 0}));

  ASSERT_EQ(manifest.dependencies.size(), 2u);
  const ManifestDependency& by_bundle = manifest.dependencies[0];
  EXPECT_EQ(by_bundle.kind, "bundle");
  EXPECT_EQ(by_bundle.contract, "reload.test@1");
  EXPECT_EQ(by_bundle.min_version, "1.0");
  EXPECT_EQ(by_bundle.bundle, "reload_plugin_v1");
  EXPECT_EQ(by_bundle.contract_id, kReloadTestContractId);
  EXPECT_EQ(by_bundle.bundle_id, kBundleIdAboveInt64Max);
  const ManifestDependency& by_contract = manifest.dependencies[1];
  EXPECT_EQ(by_contract.kind, "contract");
  EXPECT_EQ(by_contract.contract, "image.decode");
  EXPECT_EQ(by_contract.min_version, "1.0");
  EXPECT_FALSE(by_contract.bundle.has_value());
  EXPECT_FALSE(by_contract.bundle_id.has_value());
  EXPECT_EQ(by_contract.contract_id, kImageDecodeContractId);

  EXPECT_OK(ValidateManifest(manifest));
}

TEST(ParseManifestTest, OptionalFieldsDefault) {
  ASSERT_OK_AND_ASSIGN(
      Manifest manifest,
      ParseManifest(
          ManifestOf({"loader = \"native\"", "name = \"reload_plugin_v1\"",
                      absl::StrCat("id = ", kIdAboveInt64Max), "file = \"libplugin.so\""}),
          kPath));
  EXPECT_EQ(manifest.version, (Version{0, 0, 0}));
  EXPECT_THAT(manifest.provides, IsEmpty());
  EXPECT_THAT(manifest.function_count, IsEmpty());
  EXPECT_FALSE(manifest.needs_reinit_on_dep_reload);
  EXPECT_THAT(manifest.bundle_dependencies, IsEmpty());
  EXPECT_THAT(manifest.dependencies, IsEmpty());
  EXPECT_THAT(manifest.DeclaredContractIds(), IsEmpty());
  EXPECT_OK(ValidateManifest(manifest));
}

TEST(ParseManifestTest, IdAboveInt64MaxParsesExactly) {
  ASSERT_OK_AND_ASSIGN(Manifest manifest, ParseManifest(ValidManifest(), kPath));
  EXPECT_EQ(manifest.id, kBundleIdAboveInt64Max);
  EXPECT_EQ(manifest.id, BundleId("reload_plugin_v1"));
}

TEST(ParseManifestTest, LargestU64IdParsesExactly) {
  ASSERT_OK_AND_ASSIGN(Manifest manifest,
                       ParseManifest(ManifestOf({"loader = \"native\"", "name = \"x\"",
                                                 "id = 18446744073709551615", "file = \"a.so\""}),
                                     kPath));
  EXPECT_EQ(manifest.id, UINT64_MAX);
}

TEST(ParseManifestTest, IdsInDependencyTablesAboveInt64MaxParseExactly) {
  const std::string text = ValidManifest(
      "[[dependency]]\n"
      "kind = \"bundle\"\n"
      "contract = \"image.decode@1\"\n"
      "min_version = \"1.0\"\n"
      "bundle = \"reload_plugin_v1\"\n"
      "contract_id = 18154885241241252316\n"
      "bundle_id = 16808897324254478442\n");
  ASSERT_OK_AND_ASSIGN(Manifest manifest, ParseManifest(text, kPath));
  ASSERT_EQ(manifest.dependencies.size(), 1u);
  EXPECT_EQ(manifest.dependencies[0].contract_id, kImageDecodeContractId);
  EXPECT_EQ(manifest.dependencies[0].bundle_id, kBundleIdAboveInt64Max);
}

TEST(ParseManifestTest, UnknownKeysAreIgnored) {
  const std::string text = ValidManifest(
      "bundle_name = \"old style\"\n"
      "frobnicate = 3.5\n"
      "[totally_unknown]\n"
      "x = 1\n");
  ASSERT_OK_AND_ASSIGN(Manifest manifest, ParseManifest(text, kPath));
  EXPECT_EQ(manifest.name, "reload_plugin_v1");
  EXPECT_OK(ValidateManifest(manifest));
}

TEST(ParseManifestTest, MalformedTomlNamesTheFile) {
  const absl::Status status =
      ParseManifest("loader = \"native\"\nname = [unterminated\n", kPath).status();
  EXPECT_THAT(status, HasReason(ErrorReason::kManifestInvalid));
  EXPECT_THAT(status, MessageMatches(HasSubstr(kPath.string())));
}

TEST(ParseManifestTest, MalformedVersionIsRejected) {
  EXPECT_THAT(ParseAndValidate(ManifestOf({"loader = \"native\"", "name = \"reload_plugin_v1\"",
                                           absl::StrCat("id = ", kIdAboveInt64Max),
                                           "version = \"1.x\"", "file = \"libplugin.so\""})),
              ErrorNaming(ErrorReason::kManifestInvalid, "version"));
}

TEST(ParseManifestTest, NegativeIdIsAnError) {
  EXPECT_THAT(ParseAndValidate(ManifestOf({"loader = \"native\"", "name = \"reload_plugin_v1\"",
                                           "id = -1", "file = \"libplugin.so\""})),
              ErrorNaming(ErrorReason::kManifestInvalid, "id"));
}

TEST(ParseManifestTest, StringIdIsAnError) {
  EXPECT_THAT(ParseAndValidate(ManifestOf({"loader = \"native\"", "name = \"reload_plugin_v1\"",
                                           absl::StrCat("id = \"", kIdAboveInt64Max, "\""),
                                           "file = \"libplugin.so\""})),
              ErrorNaming(ErrorReason::kManifestInvalid, "id"));
}

TEST(ParseManifestTest, IdAboveU64MaxIsAnError) {
  EXPECT_THAT(ParseAndValidate(ManifestOf({"loader = \"native\"", "name = \"x\"",
                                           "id = 18446744073709551616", "file = \"a.so\""})),
              HasReason(ErrorReason::kManifestInvalid));
}

TEST(ParseManifestTest, NegativeDependencyContractIdIsAnError) {
  EXPECT_THAT(ParseAndValidate(ValidManifest("[[dependency]]\n"
                                             "kind = \"contract\"\n"
                                             "contract = \"image.decode\"\n"
                                             "min_version = \"1.0\"\n"
                                             "contract_id = -5\n")),
              ErrorNaming(ErrorReason::kManifestInvalid, "contract_id"));
}

// ------------------------------------------------------------------------------------
// Platform-specific `file`

TEST(ParseManifestTest, HostPlatformIsOsDotArch) {
  const std::string platform(HostPlatform());
  EXPECT_EQ(std::count(platform.begin(), platform.end(), '.'), 1) << platform;
#if defined(__linux__) && defined(__x86_64__)
  EXPECT_EQ(platform, "linux.x86_64");
#elif defined(__linux__) && defined(__aarch64__)
  EXPECT_EQ(platform, "linux.aarch64");
#endif
}

TEST(ParseManifestTest, PlatformFileTablePicksTheHostPlatform) {
  const std::string text =
      ValidManifest().substr(0, ValidManifest().find("file = ")) +
      absl::StrCat("[file]\n", HostPlatform(), " = \"libhost.so\"\n",
                   "windows.x86_64 = \"plugin.dll\"\n", "macos.aarch64 = \"libplugin.dylib\"\n");
  ASSERT_OK_AND_ASSIGN(Manifest manifest, ParseManifest(text, kPath));
  EXPECT_EQ(manifest.file, "libhost.so");
  EXPECT_OK(ValidateManifest(manifest));
}

// TOML scopes keys written after [file] into it; non-table ones are not platforms.
TEST(ParseManifestTest, PlatformFileTableSkipsNonTableSiblings) {
  const std::string text = ValidManifest().substr(0, ValidManifest().find("file = ")) +
                           absl::StrCat("[file]\n", "stray = \"not a platform\"\n", HostPlatform(),
                                        " = \"libhost.so\"\n");
  ASSERT_OK_AND_ASSIGN(Manifest manifest, ParseManifest(text, kPath));
  EXPECT_EQ(manifest.file, "libhost.so");
}

TEST(ParseManifestTest, PlatformFileTableWithoutTheHostPlatformListsTheAvailableOnes) {
  const std::string text = ValidManifest().substr(0, ValidManifest().find("file = ")) +
                           "[file]\n"
                           "windows.x86_64 = \"plugin.dll\"\n"
                           "macos.aarch64 = \"libplugin.dylib\"\n";
  const absl::Status status = ParseAndValidate(text);
  EXPECT_THAT(status, HasReason(ErrorReason::kManifestInvalid));
  EXPECT_THAT(status, MessageMatches(AllOf(
                          HasSubstr(kPath.string()),
                          HasSubstr(absl::StrCat("no file entry for platform ", HostPlatform())),
                          HasSubstr("windows.x86_64"), HasSubstr("macos.aarch64"))));
}

// ------------------------------------------------------------------------------------
// Validation, rule by rule in polyplug's order

TEST(ValidateManifestTest, Rule1MissingLoader) {
  EXPECT_THAT(ParseAndValidate(
                  ManifestOf({"name = \"reload_plugin_v1\"",
                              absl::StrCat("id = ", kIdAboveInt64Max), "file = \"libplugin.so\""})),
              ErrorNaming(ErrorReason::kManifestInvalid, "loader"));
}

TEST(ValidateManifestTest, Rule1EmptyLoader) {
  EXPECT_THAT(ParseAndValidate(
                  ManifestOf({"loader = \"\"", "name = \"reload_plugin_v1\"",
                              absl::StrCat("id = ", kIdAboveInt64Max), "file = \"libplugin.so\""})),
              ErrorNaming(ErrorReason::kManifestInvalid, "loader"));
}

TEST(ValidateManifestTest, Rule2MissingName) {
  EXPECT_THAT(
      ParseAndValidate(ManifestOf({"loader = \"native\"", absl::StrCat("id = ", kIdAboveInt64Max),
                                   "file = \"libplugin.so\""})),
      ErrorNaming(ErrorReason::kManifestInvalid, "name"));
}

TEST(ValidateManifestTest, Rule3MissingFile) {
  EXPECT_THAT(ParseAndValidate(ManifestOf({"loader = \"native\"", "name = \"reload_plugin_v1\"",
                                           absl::StrCat("id = ", kIdAboveInt64Max)})),
              ErrorNaming(ErrorReason::kManifestInvalid, "file"));
}

TEST(ValidateManifestTest, Rule3WhitespaceOnlyFile) {
  EXPECT_THAT(
      ParseAndValidate(ManifestOf({"loader = \"native\"", "name = \"reload_plugin_v1\"",
                                   absl::StrCat("id = ", kIdAboveInt64Max), "file = \"   \""})),
      ErrorNaming(ErrorReason::kManifestInvalid, "file"));
}

TEST(ValidateManifestTest, Rule4IdZero) {
  EXPECT_THAT(ParseAndValidate(ManifestOf({"loader = \"native\"", "name = \"reload_plugin_v1\"",
                                           "id = 0", "file = \"libplugin.so\""})),
              ErrorNaming(ErrorReason::kManifestInvalid, "id"));
}

TEST(ValidateManifestTest, Rule4IdMissing) {
  EXPECT_THAT(ParseAndValidate(ManifestOf({"loader = \"native\"", "name = \"reload_plugin_v1\"",
                                           "file = \"libplugin.so\""})),
              ErrorNaming(ErrorReason::kManifestInvalid, "id"));
}

TEST(ValidateManifestTest, Rule5TamperedIdNamesExpectedAndFound) {
  const absl::Status status = ParseAndValidate(
      ManifestOf({"loader = \"native\"", "name = \"my-bundle\"",
                  absl::StrCat("id = ", kIdAboveInt64Max), "file = \"libplugin.so\""}));
  EXPECT_THAT(status, HasReason(ErrorReason::kBundleTampered));
  // Runtime messages print bundle ids as lower-case hex, as polyplug does.
  EXPECT_THAT(status, MessageMatches(AllOf(HasSubstr(kPath.string()), HasSubstr("my-bundle"),
                                           HasSubstr(FormatBundleId(BundleId("my-bundle"))),
                                           HasSubstr(FormatBundleId(kBundleIdAboveInt64Max)))));
}

TEST(ValidateManifestTest, Rule6BadProvidesEntry) {
  for (const char* bad : {"", "@1", "x@", "x@abc"}) {
    SCOPED_TRACE(absl::StrCat("provides entry '", bad, "'"));
    EXPECT_THAT(
        ParseAndValidate(ValidManifest(absl::StrCat("provides = [\"ok@1\", \"", bad, "\"]\n"))),
        ErrorNaming(ErrorReason::kManifestInvalid, "provides"));
  }
}

TEST(ValidateManifestTest, Rule6BadBundleDependencyEntry) {
  EXPECT_THAT(ParseAndValidate(ValidManifest("bundle_dependencies = [\"core@abc\"]\n")),
              ErrorNaming(ErrorReason::kManifestInvalid, "bundle_dependencies"));
}

TEST(ValidateManifestTest, Rule7DependencyContractIdMismatch) {
  const std::string text =
      ValidManifest(absl::StrCat("[[dependency]]\n"
                                 "kind = \"contract\"\n"
                                 "contract = \"image.decode@1\"\n"
                                 "min_version = \"1.0\"\n"
                                 "contract_id = ",
                                 GuestContractId("image.decode", 2), "\n"));
  EXPECT_THAT(ParseAndValidate(text), ErrorNaming(ErrorReason::kManifestInvalid, "contract_id"));
}

TEST(ValidateManifestTest, Rule7MatchingOrAbsentContractIdIsAccepted) {
  const std::string text =
      ValidManifest(absl::StrCat("[[dependency]]\n"
                                 "kind = \"contract\"\n"
                                 "contract = \"image.decode@1\"\n"
                                 "min_version = \"1.0\"\n"
                                 "contract_id = ",
                                 GuestContractId("image.decode", 1),
                                 "\n"
                                 "[[dependency]]\n"
                                 "kind = \"contract\"\n"
                                 "contract = \"other\"\n"
                                 "min_version = \"3.1\"\n"
                                 "contract_id = 0\n"));
  EXPECT_OK(ParseAndValidate(text));
}

// Rules are checked in order, so a manifest breaking several reports the first: its error
// is exactly the error of a manifest breaking only that rule.
class ValidationOrderTest : public ::testing::Test {
 protected:
  // The error of `both` (breaking an earlier and a later rule) equals the error of
  // `earlier_only` (breaking just the earlier rule).
  static void ExpectEarlierRuleReported(const std::vector<std::string>& both,
                                        const std::vector<std::string>& earlier_only) {
    const absl::Status earlier = ParseAndValidate(ManifestOf(earlier_only));
    ASSERT_FALSE(earlier.ok());
    EXPECT_EQ(ParseAndValidate(ManifestOf(both)), earlier);
  }
};

TEST_F(ValidationOrderTest, LoaderBeforeName) {
  ExpectEarlierRuleReported({absl::StrCat("id = ", kIdAboveInt64Max), "file = \"libplugin.so\""},
                            {"name = \"reload_plugin_v1\"", absl::StrCat("id = ", kIdAboveInt64Max),
                             "file = \"libplugin.so\""});
}

TEST_F(ValidationOrderTest, NameBeforeFile) {
  ExpectEarlierRuleReported(
      {"loader = \"native\"", absl::StrCat("id = ", kIdAboveInt64Max)},
      {"loader = \"native\"", absl::StrCat("id = ", kIdAboveInt64Max), "file = \"libplugin.so\""});
}

TEST_F(ValidationOrderTest, FileBeforeIdZero) {
  ExpectEarlierRuleReported({"loader = \"native\"", "name = \"reload_plugin_v1\"", "id = 0"},
                            {"loader = \"native\"", "name = \"reload_plugin_v1\"",
                             absl::StrCat("id = ", kIdAboveInt64Max)});
}

TEST_F(ValidationOrderTest, IdZeroBeforeTampering) {
  // Id 0 never equals a name's hash, yet it is reported as missing, not tampered.
  EXPECT_THAT(ParseAndValidate(ManifestOf({"loader = \"native\"", "name = \"reload_plugin_v1\"",
                                           "id = 0", "file = \"libplugin.so\""})),
              AllOf(HasReason(ErrorReason::kManifestInvalid),
                    Not(HasReason(ErrorReason::kBundleTampered))));
}

TEST_F(ValidationOrderTest, TamperingBeforeProvidesGrammar) {
  ExpectEarlierRuleReported(
      {"loader = \"native\"", "name = \"my-bundle\"", absl::StrCat("id = ", kIdAboveInt64Max),
       "file = \"libplugin.so\"", "provides = [\"x@abc\"]"},
      {"loader = \"native\"", "name = \"my-bundle\"", absl::StrCat("id = ", kIdAboveInt64Max),
       "file = \"libplugin.so\""});
}

TEST_F(ValidationOrderTest, ProvidesGrammarBeforeDependencyIds) {
  const std::vector<std::string> bad_provides = {
      "loader = \"native\"", "name = \"reload_plugin_v1\"", absl::StrCat("id = ", kIdAboveInt64Max),
      "file = \"libplugin.so\"", "provides = [\"@1\"]"};
  std::vector<std::string> both = bad_provides;
  both.insert(both.end(), {"[[dependency]]", "kind = \"contract\"", "contract = \"image.decode\"",
                           "min_version = \"1.0\"", "contract_id = 12345"});
  ExpectEarlierRuleReported(both, bad_provides);
}

// ------------------------------------------------------------------------------------
// Declared dependencies

TEST(ManifestDependencyTest, DeclaredContractIdPrefersTheExplicitId) {
  ManifestDependency dependency;
  dependency.contract = "image.decode";
  dependency.min_version = "1.0";
  dependency.contract_id = 42;
  EXPECT_EQ(dependency.DeclaredContractId(), 42u);
}

TEST(ManifestDependencyTest, DeclaredContractIdComputedFromMinVersionMajor) {
  ManifestDependency dependency;
  dependency.contract = "image.decode";
  dependency.min_version = "2.3";
  EXPECT_EQ(dependency.DeclaredContractId(), GuestContractId("image.decode", 2));
}

TEST(ManifestDependencyTest, DeclaredContractIdUsesTheBareContractName) {
  ManifestDependency dependency;
  dependency.contract = "image.decode@1";
  dependency.min_version = "1.0";
  EXPECT_EQ(dependency.DeclaredContractId(), GuestContractId("image.decode", 1));
}

TEST(ManifestDependencyTest, DeclaredContractIdFromAtMajorWithoutMinVersion) {
  ManifestDependency dependency;
  dependency.contract = "image.decode@3";
  EXPECT_EQ(dependency.DeclaredContractId(), GuestContractId("image.decode", 3));
}

TEST(ManifestTest, DeclaredContractIdsCoverEveryDependency) {
  const std::string text =
      ValidManifest(absl::StrCat("[[dependency]]\n"
                                 "kind = \"contract\"\n"
                                 "contract = \"image.decode\"\n"
                                 "min_version = \"1.0\"\n"
                                 "[[dependency]]\n"
                                 "kind = \"contract\"\n"
                                 "contract = \"image.encode@2\"\n"
                                 "min_version = \"2.1\"\n"
                                 "contract_id = 0\n"
                                 "[[dependency]]\n"
                                 "kind = \"bundle\"\n"
                                 "contract = \"reload.test@1\"\n"
                                 "min_version = \"1.0\"\n"
                                 "bundle = \"reload_plugin_v1\"\n"
                                 "bundle_id = ",
                                 kIdAboveInt64Max,
                                 "\n"
                                 "contract_id = ",
                                 kReloadTestContractId, "\n"));
  ASSERT_OK_AND_ASSIGN(Manifest manifest, ParseManifest(text, kPath));
  ASSERT_OK(ValidateManifest(manifest));
  EXPECT_THAT(manifest.DeclaredContractIds(),
              UnorderedElementsAre(GuestContractId("image.decode", 1),
                                   GuestContractId("image.encode", 2), kReloadTestContractId));
}

// ------------------------------------------------------------------------------------
// LoadManifest

class ScopedTempDir {
 public:
  ScopedTempDir() {
    std::string pattern = (fs::path(::testing::TempDir()) / "polyplug_manifest_XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed for " << pattern;
    path_ = pattern;
  }
  ~ScopedTempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void WriteFile(const fs::path& path, absl::string_view contents) {
  std::ofstream out(path, std::ios::binary);
  out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  ASSERT_TRUE(out.good()) << "could not write " << path;
}

TEST(LoadManifestTest, LoadsFromTheBundleDirectory) {
  ScopedTempDir dir;
  ASSERT_NO_FATAL_FAILURE(WriteFile(dir.path() / "manifest.toml", kFullManifest));
  ASSERT_OK_AND_ASSIGN(Manifest manifest, LoadManifest(dir.path()));
  EXPECT_EQ(manifest.name, "reload_plugin_v1");
  EXPECT_EQ(manifest.id, kBundleIdAboveInt64Max);
  EXPECT_TRUE(fs::equivalent(manifest.dir, dir.path()));
  EXPECT_TRUE(fs::equivalent(manifest.path, dir.path() / "manifest.toml"));
}

TEST(LoadManifestTest, LoadsTheManifestOfTheBundleContainingAFile) {
  ScopedTempDir dir;
  ASSERT_NO_FATAL_FAILURE(WriteFile(dir.path() / "manifest.toml", kFullManifest));
  ASSERT_NO_FATAL_FAILURE(WriteFile(dir.path() / "libreload_plugin.so", "not really ELF"));
  ASSERT_OK_AND_ASSIGN(Manifest manifest, LoadManifest(dir.path() / "libreload_plugin.so"));
  EXPECT_EQ(manifest.name, "reload_plugin_v1");
  EXPECT_TRUE(fs::equivalent(manifest.dir, dir.path()));
}

TEST(LoadManifestTest, ValidatesWhatItLoads) {
  ScopedTempDir dir;
  ASSERT_NO_FATAL_FAILURE(
      WriteFile(dir.path() / "manifest.toml",
                ManifestOf({"loader = \"native\"", "name = \"my-bundle\"",
                            absl::StrCat("id = ", kIdAboveInt64Max), "file = \"libplugin.so\""})));
  EXPECT_THAT(LoadManifest(dir.path()), HasReason(ErrorReason::kBundleTampered));
}

TEST(LoadManifestTest, MissingManifestIsAnErrorNamingThePath) {
  ScopedTempDir dir;
  const auto result = LoadManifest(dir.path());
  EXPECT_THAT(result, HasReason(ErrorReason::kManifestInvalid));
  EXPECT_THAT(result, MessageMatches(HasSubstr((dir.path() / "manifest.toml").string())));
}

TEST(LoadManifestTest, MissingDirectoryIsAnError) {
  ScopedTempDir dir;
  EXPECT_THAT(LoadManifest(dir.path() / "does_not_exist"), Not(IsOk()));
}

TEST(LoadManifestTest, RejectsAManifestLargerThanTheLimit) {
  ScopedTempDir dir;
  // Valid TOML, so only the size can be what rejects it.
  std::string text = ValidManifest();
  text += "# ";
  text.append(kMaxManifestBytes, 'x');
  text += "\n";
  ASSERT_GT(text.size(), kMaxManifestBytes);
  ASSERT_NO_FATAL_FAILURE(WriteFile(dir.path() / "manifest.toml", text));
  const auto result = LoadManifest(dir.path());
  EXPECT_THAT(result, HasReason(ErrorReason::kManifestInvalid));
  EXPECT_THAT(result, MessageMatches(HasSubstr(dir.path().string())));
}

TEST(LoadManifestTest, AcceptsAManifestJustUnderTheLimit) {
  ScopedTempDir dir;
  std::string text = ValidManifest();
  text += "# ";
  text.append(kMaxManifestBytes - text.size() - 1, 'x');
  text += "\n";
  ASSERT_EQ(text.size(), kMaxManifestBytes);
  ASSERT_NO_FATAL_FAILURE(WriteFile(dir.path() / "manifest.toml", text));
  EXPECT_THAT(LoadManifest(dir.path()), IsOk());
}

}  // namespace
}  // namespace polyplug::core
