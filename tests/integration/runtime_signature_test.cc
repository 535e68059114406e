// The signature policy in the runtime (docs/SIGNING.md): every load and every reload checks
// the bundle's signature right after its manifest. Under each policy and for each kind of
// bundle (unsigned, tampered, signed for another bundle, signed by an untrusted key, good):
// what a load gives, and what a reload gives (a refusal is FAILED before PREPARING, and the
// running version stays live). Then the bind of the bytes loaded to the bytes verified,
// and the directory a BundleSource::files load verifies.
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "polyplug/core/bundle_signature.h"
#include "polyplug/core/ids.h"
#include "polyplug/core/runtime.h"
#include "support/bundle_fixture.h"

namespace polyplug::core {
// For gtest's names of parameters.
void PrintTo(SignaturePolicy policy, std::ostream* os) { *os << SignaturePolicyName(policy); }
}  // namespace polyplug::core

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
using core::ErrorReason;
using core::GuestContractId;
using core::SignaturePolicy;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

const uint64_t kCounterContract = GuestContractId("test.counter", 1);

enum class BundleState { kUnsigned, kTampered, kSignedForAnotherBundle, kUntrustedKey, kGood };

std::string StateName(BundleState state) {
  switch (state) {
    case BundleState::kUnsigned:
      return "Unsigned";
    case BundleState::kTampered:
      return "Tampered";
    case BundleState::kSignedForAnotherBundle:
      return "SignedForAnotherBundle";
    case BundleState::kUntrustedKey:
      return "UntrustedKey";
    case BundleState::kGood:
      return "Good";
  }
  return "?";
}

void PrintTo(BundleState state, std::ostream* os) { *os << StateName(state); }

// What kRequired refuses each state with (kUnspecified: nothing).
ErrorReason RequiredReason(BundleState state) {
  switch (state) {
    case BundleState::kUnsigned:
      return ErrorReason::kUnsignedBundle;
    case BundleState::kTampered:
    case BundleState::kSignedForAnotherBundle:
      return ErrorReason::kSignatureInvalid;
    case BundleState::kUntrustedKey:
      return ErrorReason::kUntrustedSigningKey;
    case BundleState::kGood:
      break;
  }
  return ErrorReason::kUnspecified;
}

core::SigningKey NewKey() {
  absl::StatusOr<core::SigningKey> key = core::GenerateSigningKey();
  EXPECT_TRUE(key.ok()) << key.status();
  return *key;
}

void Sign(const fs::path& dir, const core::SigningKey& key) {
  absl::StatusOr<core::BundleSignature> signature = core::SignBundle(dir, key);
  ASSERT_TRUE(signature.ok()) << signature.status();
}

// CallFn0's value (the counter's version), or -1 with a test failure.
template <typename Target>
int32_t Fn0(const core::Runtime& runtime, Target target) {
  absl::StatusOr<int32_t> value = CallFn0(runtime, target);
  EXPECT_TRUE(value.ok()) << value.status();
  return value.ok() ? *value : -1;
}

void AppendByte(const fs::path& file) {
  std::ofstream out(file, std::ios::binary | std::ios::app);
  out.put('\0');
  ASSERT_TRUE(out.good()) << "cannot append to " << file;
}

class RuntimeSignatureTest : public RuntimeTest {
 protected:
  // A runtime with `policy`, trusting trusted_ (pinned) unless `pin` is false.
  void CreateWithPolicy(SignaturePolicy policy, bool pin = true,
                        core::LogLevel max_log_level = core::LogLevel::kWarn,
                        core::LogSink sink = nullptr) {
    core::RuntimeOptions options;
    options.signature_policy = policy;
    if (pin) options.trusted_keys = {trusted_.public_key()};
    options.max_log_level = max_log_level;
    options.log_sink = std::move(sink);
    CreateRuntimeWith(std::move(options));
  }

  // Puts the bundle in `dir` (its files already in place, unsigned) into `state`.
  void MakeState(const fs::path& dir, BundleState state) {
    fs::remove(dir / "bundle.sig");
    switch (state) {
      case BundleState::kUnsigned:
        return;
      case BundleState::kTampered:
        Sign(dir, trusted_);
        AppendByte(dir / "libcounter.so");  // still loads: trailing bytes are ignored
        return;
      case BundleState::kSignedForAnotherBundle: {
        const fs::path other = CopyTestBundle("chain_a", other_.path() / StateName(state));
        Sign(other, trusted_);
        fs::copy_file(other / "bundle.sig", dir / "bundle.sig");
        return;
      }
      case BundleState::kUntrustedKey:
        Sign(dir, untrusted_);
        return;
      case BundleState::kGood:
        Sign(dir, trusted_);
        return;
    }
  }

  // The Warn lines of scope "signature".
  std::vector<LogLine> SignatureWarnings() {
    std::vector<LogLine> lines;
    for (const LogLine& line : log().Warnings()) {
      if (line.scope == "signature") lines.push_back(line);
    }
    return lines;
  }

  core::SigningKey trusted_ = NewKey();
  core::SigningKey untrusted_ = NewKey();
  TempDir other_;
};

class RuntimeSignaturePolicyTest
    : public RuntimeSignatureTest,
      public ::testing::WithParamInterface<std::tuple<SignaturePolicy, BundleState>> {};

TEST_P(RuntimeSignaturePolicyTest, Load) {
  const auto [policy, bundle_state] = GetParam();
  CreateWithPolicy(policy);
  const fs::path dir = Copy("counter_v1");
  MakeState(dir, bundle_state);
  ASSERT_FALSE(HasFailure());

  absl::StatusOr<core::BundleInfo> loaded = runtime().LoadBundle(dir);
  const ErrorReason refused = RequiredReason(bundle_state);
  if (policy == SignaturePolicy::kRequired && refused != ErrorReason::kUnspecified) {
    EXPECT_THAT(loaded.status(), HasReason(refused));
    EXPECT_THAT(loaded.status().message(), HasSubstr(dir.string()));
    if (bundle_state == BundleState::kUntrustedKey) {
      EXPECT_THAT(loaded.status().message(),
                  HasSubstr(core::PublicKeyToHex(untrusted_.public_key())));
    }
    EXPECT_THAT(recorder().events(), IsEmpty());
    EXPECT_FALSE(runtime().GetBundle("counter").ok());
    EXPECT_EQ(CountFilesUnder(state().path()), 0u) << "nothing staged";
    return;
  }
  ASSERT_THAT(loaded.status(), IsOk());
  EXPECT_EQ(Fn0(runtime(), kCounterContract), 1);
  const bool verified = policy != SignaturePolicy::kOff && bundle_state == BundleState::kGood;
  const std::string key = verified ? core::PublicKeyToHex(trusted_.public_key()) : "";
  EXPECT_EQ(loaded->signing_key, key);
  ASSERT_THAT(recorder().events(), SizeIs(1));
  EXPECT_EQ(recorder().events()[0].signing_key, key);
  if (policy == SignaturePolicy::kWarn && refused != ErrorReason::kUnspecified) {
    const std::vector<LogLine> warnings = SignatureWarnings();
    ASSERT_THAT(warnings, SizeIs(1)) << ToString(log().lines());
    EXPECT_THAT(warnings[0].message, HasSubstr("bundle \"counter\" in " + dir.string()));
    EXPECT_THAT(warnings[0].message, HasSubstr(absl::StrCat("[", core::ReasonToken(refused), "]")));
    EXPECT_THAT(warnings[0].message, HasSubstr("loading it anyway"));
  } else {
    EXPECT_THAT(SignatureWarnings(), IsEmpty()) << ToString(log().lines());
  }
}

TEST_P(RuntimeSignaturePolicyTest, Reload) {
  const auto [policy, bundle_state] = GetParam();
  CreateWithPolicy(policy);
  const fs::path dir = Copy("counter_v1");
  Sign(dir, trusted_);
  ASSERT_THAT(runtime().LoadBundle(dir).status(), IsOk());
  absl::StatusOr<core::ContractHandle> handle = runtime().Find(kCounterContract, 1);
  ASSERT_THAT(handle.status(), IsOk());
  const std::string v1_key =
      policy == SignaturePolicy::kOff ? "" : core::PublicKeyToHex(trusted_.public_key());
  recorder().Clear();
  log().Clear();

  OverwriteArtifact(TestBundleDir("counter_v2"), dir);
  MakeState(dir, bundle_state);
  ASSERT_FALSE(HasFailure());
  absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundle(dir);
  ASSERT_THAT(outcome.status(), IsOk()) << "a refusal is an outcome, not a request error";

  const ErrorReason refused = RequiredReason(bundle_state);
  if (policy == SignaturePolicy::kRequired && refused != ErrorReason::kUnspecified) {
    EXPECT_THAT(outcome->status, HasReason(refused));
    // FAILED alone: the reload never started, so no instance had to be dropped.
    ASSERT_THAT(Describe(recorder().events()), ElementsAre("FAILED counter"));
    const core::PhaseEvent failed = recorder().events()[0];
    EXPECT_EQ(failed.reason, refused);
    EXPECT_THAT(failed.message, HasSubstr(dir.string()));
    EXPECT_EQ(failed.bundle_version, (core::Version{1, 0, 0}));
    // v1 is live, behind the same handle, still signed as it was.
    EXPECT_EQ(Fn0(runtime(), *handle), 1);
    absl::StatusOr<core::BundleInfo> info = runtime().GetBundle("counter");
    ASSERT_THAT(info.status(), IsOk());
    EXPECT_EQ(info->version, (core::Version{1, 0, 0}));
    EXPECT_EQ(info->signing_key, v1_key);
    EXPECT_EQ(info->reload_count, 0u);
    return;
  }
  EXPECT_TRUE(outcome->ok()) << outcome->status;
  EXPECT_THAT(Describe(recorder().events()), ElementsAre("PREPARING counter", "RELOADED counter"));
  EXPECT_EQ(Fn0(runtime(), *handle), 2);
  const bool verified = policy != SignaturePolicy::kOff && bundle_state == BundleState::kGood;
  const std::string key = verified ? core::PublicKeyToHex(trusted_.public_key()) : "";
  EXPECT_EQ(recorder().events().back().signing_key, key);
  EXPECT_EQ(runtime().GetBundle("counter")->signing_key, key);
  if (policy == SignaturePolicy::kWarn && refused != ErrorReason::kUnspecified) {
    const std::vector<LogLine> warnings = SignatureWarnings();
    ASSERT_THAT(warnings, SizeIs(1)) << ToString(log().lines());
    EXPECT_THAT(warnings[0].message, HasSubstr(absl::StrCat("[", core::ReasonToken(refused), "]")));
    EXPECT_THAT(warnings[0].message, HasSubstr("reloading it anyway"));
  } else {
    EXPECT_THAT(SignatureWarnings(), IsEmpty()) << ToString(log().lines());
  }
}

INSTANTIATE_TEST_SUITE_P(
    PolicyAndBundle, RuntimeSignaturePolicyTest,
    ::testing::Combine(::testing::Values(SignaturePolicy::kOff, SignaturePolicy::kWarn,
                                         SignaturePolicy::kRequired),
                       ::testing::Values(BundleState::kUnsigned, BundleState::kTampered,
                                         BundleState::kSignedForAnotherBundle,
                                         BundleState::kUntrustedKey, BundleState::kGood)),
    [](const ::testing::TestParamInfo<std::tuple<SignaturePolicy, BundleState>>& info) {
      std::string policy(core::SignaturePolicyName(std::get<0>(info.param)));
      policy[0] = static_cast<char>(policy[0] - 'a' + 'A');
      return policy + StateName(std::get<1>(info.param));
    });

TEST_F(RuntimeSignatureTest, WithoutTrustedKeysAnyValidSignatureLoads) {
  CreateWithPolicy(SignaturePolicy::kRequired, /*pin=*/false);
  const fs::path dir = Copy("counter_v1");
  Sign(dir, untrusted_);
  absl::StatusOr<core::BundleInfo> loaded = runtime().LoadBundle(dir);
  ASSERT_THAT(loaded.status(), IsOk());
  EXPECT_EQ(loaded->signing_key, core::PublicKeyToHex(untrusted_.public_key()));
}

TEST_F(RuntimeSignatureTest, ARefusedReloadKeepsTheInstancesOfTheRunningVersion) {
  CreateWithPolicy(SignaturePolicy::kRequired);
  const fs::path dir = Copy("counter_v1");
  Sign(dir, trusted_);
  ASSERT_THAT(runtime().LoadBundle(dir).status(), IsOk());
  absl::StatusOr<core::ContractHandle> handle = runtime().Find(kCounterContract, 1);
  ASSERT_THAT(handle.status(), IsOk());
  absl::StatusOr<const PolyplugGuestContractInterface*> iface;
  absl::StatusOr<PolyplugGuestContractInstance> instance;
  {
    core::ReadPin pin = runtime().Pin();
    iface = runtime().Resolve(*handle);
    ASSERT_THAT(iface.status(), IsOk());
    instance = runtime().CreateInstance(**iface, PolyplugBytesView{nullptr, 0});
    ASSERT_THAT(instance.status(), IsOk());
  }

  // A rebuild that nobody signed again: refused, and nobody was told to drop the instance.
  OverwriteArtifact(TestBundleDir("counter_v2"), dir);
  absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundle(dir);
  ASSERT_THAT(outcome.status(), IsOk());
  EXPECT_THAT(outcome->status, HasReason(ErrorReason::kSignatureInvalid));
  EXPECT_THAT(Describe(outcome->events), ElementsAre("FAILED counter"));
  {
    core::ReadPin call_pin = runtime().Pin();
    iface = runtime().Resolve(*handle);
    ASSERT_THAT(iface.status(), IsOk());
    int64_t count = -1;
    PolyplugAbiError err{POLYPLUG_ABI_OK, {nullptr, 0}};
    (*iface)->functions[1](*instance, nullptr, &count, &err);
    EXPECT_EQ(err.code, POLYPLUG_ABI_OK);
    EXPECT_EQ(count, 1) << "the instance made on v1 still counts";
    runtime().DestroyInstance(**iface, *instance);
  }

  // Signed, the same files go through.
  Sign(dir, trusted_);
  recorder().Clear();
  outcome = runtime().ReloadBundle(dir);
  ASSERT_THAT(outcome.status(), IsOk());
  EXPECT_TRUE(outcome->ok()) << outcome->status;
  EXPECT_THAT(Describe(recorder().events()), ElementsAre("PREPARING counter", "RELOADED counter"));
  EXPECT_EQ(Fn0(runtime(), *handle), 2);
}

TEST_F(RuntimeSignatureTest, ACascadeChecksEachDependentItReloads) {
  CreateWithPolicy(SignaturePolicy::kRequired);
  const fs::path a = Copy("chain_a");
  const fs::path b = Copy("chain_b");
  Sign(a, trusted_);
  Sign(b, trusted_);
  ASSERT_THAT(runtime().LoadBundle(a).status(), IsOk());
  ASSERT_THAT(runtime().LoadBundle(b).status(), IsOk());
  recorder().Clear();

  fs::remove(b / "bundle.sig");
  absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundle(a);
  ASSERT_THAT(outcome.status(), IsOk());
  EXPECT_TRUE(outcome->ok()) << outcome->status;
  EXPECT_THAT(Describe(recorder().events()),
              ElementsAre("PREPARING chain_a", "FAILED chain_b", "RELOADED chain_a"));
  EXPECT_EQ(recorder().events()[1].reason, ErrorReason::kUnsignedBundle);
  EXPECT_EQ(runtime().GetBundle("chain_b")->reload_count, 0u);
}

TEST_F(RuntimeSignatureTest, PolicyOutOfRangeIsAConfigurationError) {
  core::RuntimeOptions options;
  options.signature_policy = static_cast<SignaturePolicy>(3);
  EXPECT_THAT(core::Runtime::Create(options).status(), HasReason(ErrorReason::kInvalidArgument));
}

// A log sink that runs `act` once, on the mutating thread, when the runtime says the
// signature was verified: between the check and the load, where a rewrite would race.
core::LogSink ActAfterVerification(LogRecorder& log, std::function<void()> act) {
  auto done = std::make_shared<bool>(false);
  core::LogSink record = log.Sink();
  return [record, act = std::move(act), done](core::LogLevel level, absl::string_view scope,
                                              absl::string_view message) {
    record(level, scope, message);
    if (!*done && scope == "signature" && absl::StrContains(message, "bundle.sig verified")) {
      *done = true;
      act();
    }
  };
}

TEST_F(RuntimeSignatureTest, AnArtifactChangedAfterTheCheckIsNotLoaded) {
  const fs::path dir = Copy("counter_v1");
  Sign(dir, trusted_);
  CreateWithPolicy(SignaturePolicy::kRequired, true, core::LogLevel::kInfo,
                   ActAfterVerification(log(), [&] {
                     fs::copy_file(TestBundleDir("counter_v2") / "libcounter.so",
                                   dir / "libcounter.so", fs::copy_options::overwrite_existing);
                   }));
  absl::StatusOr<core::BundleInfo> loaded = runtime().LoadBundle(dir);
  EXPECT_THAT(loaded.status(), HasReason(ErrorReason::kSignatureInvalid));
  EXPECT_THAT(loaded.status().message(),
              HasSubstr("the artifact changed after its signature was checked"));
  EXPECT_THAT(loaded.status().message(), HasSubstr((dir / "libcounter.so").string()));
  EXPECT_FALSE(runtime().GetBundle("counter").ok());
}

TEST_F(RuntimeSignatureTest, AnArtifactChangedAfterTheCheckOfAReloadFiresFailedBeforePreparing) {
  const fs::path dir = Copy("counter_v1");
  Sign(dir, trusted_);
  bool armed = false;
  CreateWithPolicy(SignaturePolicy::kRequired, true, core::LogLevel::kInfo,
                   [&, record = log().Sink()](core::LogLevel level, absl::string_view scope,
                                              absl::string_view message) {
                     record(level, scope, message);
                     if (armed && absl::StrContains(message, "bundle.sig verified")) {
                       armed = false;
                       AppendByte(dir / "libcounter.so");
                     }
                   });
  ASSERT_THAT(runtime().LoadBundle(dir).status(), IsOk());
  OverwriteArtifact(TestBundleDir("counter_v2"), dir);
  Sign(dir, trusted_);
  armed = true;
  absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundle(dir);
  ASSERT_THAT(outcome.status(), IsOk());
  EXPECT_THAT(outcome->status, HasReason(ErrorReason::kSignatureInvalid));
  EXPECT_THAT(Describe(outcome->events), ElementsAre("FAILED counter"));
  EXPECT_FALSE(outcome->events[0].artifact_sha256.empty()) << "the bytes tried are named";
  EXPECT_EQ(Fn0(runtime(), kCounterContract), 1);
}

TEST_F(RuntimeSignatureTest, UnderWarnAChangedArtifactIsAWarning) {
  const fs::path dir = Copy("counter_v1");
  Sign(dir, trusted_);
  CreateWithPolicy(SignaturePolicy::kWarn, true, core::LogLevel::kInfo,
                   ActAfterVerification(log(), [&] { AppendByte(dir / "libcounter.so"); }));
  absl::StatusOr<core::BundleInfo> loaded = runtime().LoadBundle(dir);
  ASSERT_THAT(loaded.status(), IsOk());
  EXPECT_EQ(loaded->signing_key, "") << "what loaded is not what was signed";
  const std::vector<LogLine> warnings = SignatureWarnings();
  ASSERT_THAT(warnings, SizeIs(1));
  EXPECT_THAT(warnings[0].message, HasSubstr("[SIGNATURE_INVALID]"));
  EXPECT_THAT(warnings[0].message, HasSubstr("the artifact changed after its signature"));
}

TEST_F(RuntimeSignatureTest, AManifestChangedAfterTheCheckIsNotUsed) {
  const fs::path dir = Copy("counter_v1");
  Sign(dir, trusted_);
  CreateWithPolicy(
      SignaturePolicy::kRequired, true, core::LogLevel::kInfo,
      ActAfterVerification(log(), [&] { ReplaceInFile(dir / "manifest.toml", "1.0.0", "1.0.1"); }));
  absl::StatusOr<core::BundleInfo> loaded = runtime().LoadBundle(dir);
  EXPECT_THAT(loaded.status(), HasReason(ErrorReason::kSignatureInvalid));
  EXPECT_THAT(loaded.status().message(), HasSubstr("manifest.toml changed after its signature"));
}

// A BundleSource::files load verifies the directory the files are read from.
TEST_F(RuntimeSignatureTest, FilesLoadsVerifyTheCopyTheyAreReadFrom) {
  CreateWithPolicy(SignaturePolicy::kRequired);
  const fs::path dir = Copy("counter_v1");  // where the bundle lives: unsigned
  const fs::path copy = CopyTestBundle("counter_v1", other_.path() / "copy");

  // A copy of the manifest and artifact alone (what host crash recovery keeps): unsigned.
  absl::StatusOr<core::BundleInfo> loaded = runtime().LoadBundle(core::BundleSource{dir, copy});
  EXPECT_THAT(loaded.status(), HasReason(ErrorReason::kUnsignedBundle));
  EXPECT_THAT(loaded.status().message(), HasSubstr(copy.string()));

  // A copy of every file, bundle.sig included, loads though the directory is unsigned.
  Sign(copy, trusted_);
  loaded = runtime().LoadBundle(core::BundleSource{dir, copy});
  ASSERT_THAT(loaded.status(), IsOk());
  EXPECT_EQ(loaded->dir, dir);
  EXPECT_EQ(loaded->signing_key, core::PublicKeyToHex(trusted_.public_key()));
  ASSERT_THAT(runtime().UnloadBundle("counter", core::UnloadMode::kRefuseIfInUse).status(), IsOk());

  // And a signed directory does not vouch for an unsigned copy.
  Sign(dir, trusted_);
  fs::remove(copy / "bundle.sig");
  EXPECT_THAT(runtime().LoadBundle(core::BundleSource{dir, copy}).status(),
              HasReason(ErrorReason::kUnsignedBundle));
}

TEST_F(RuntimeSignatureTest, DiscoveryUnderRequiredSkipsUnsignedBundles) {
  CreateWithPolicy(SignaturePolicy::kRequired);
  const fs::path signed_dir = Copy("chain_a");
  Sign(signed_dir, trusted_);
  Copy("counter_v1");
  std::vector<core::NotLoaded> not_loaded;
  absl::StatusOr<std::vector<core::BundleInfo>> loaded =
      runtime().DiscoverAndLoad({bundles().path()}, /*skip_unloadable=*/true, &not_loaded);
  ASSERT_THAT(loaded.status(), IsOk());
  ASSERT_THAT(*loaded, SizeIs(1));
  EXPECT_EQ((*loaded)[0].name, "chain_a");
  ASSERT_THAT(not_loaded, SizeIs(1));
  EXPECT_EQ(not_loaded[0].name, "counter");
  EXPECT_THAT(not_loaded[0].status, HasReason(ErrorReason::kUnsignedBundle));
}

}  // namespace
}  // namespace polyplug::test
