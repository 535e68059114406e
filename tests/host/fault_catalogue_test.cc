// The fault catalogue (docs/RELIABILITY.md): one test per bad input, driven through a real
// polyplug-host over gRPC. Each test checks what the user sees (gRPC code, [REASON] token,
// polyplug-reason trailer, the part of the message naming the file or field) and that the host
// keeps serving: the counter bundle loaded at start still answers FindContract and a remote
// Invoke of "version", GetHostInfo works, and after a failed reload the previous version is
// the one answering.
//
// Nothing sleeps: the tests wait on responses, stream messages, FIFOs and the host's health
// and log.
#include <fcntl.h>
#include <grpcpp/generic/generic_stub.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "host/host_calls.h"
#include "host/host_fixture.h"
#include "host/host_process_fixture.h"
#include "polyplug/core/ids.h"
#include "polyplug/host/v1/host.grpc.pb.h"
#include "support/bundle_fixture.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::polyplug::host::v1;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ServingStatus = grpc::health::v1::HealthCheckResponse;

// Error messages must name the problem without echoing a huge input back: far below gRPC's
// default 8 KiB limit on the metadata a client accepts.
constexpr size_t kMaxErrorMessageBytes = 2048;
constexpr size_t kOneMegabyte = 1 << 20;

// ---------------------------------------------------------------------------------------
// Small helpers

// Removes every line of the file that starts with `prefix`; records a failure if none does.
void RemoveLinesStartingWith(const fs::path& path, absl::string_view prefix) {
  std::string kept;
  bool removed = false;
  for (absl::string_view line : absl::StrSplit(ReadFile(path), '\n')) {
    if (absl::StartsWith(line, prefix)) {
      removed = true;
      continue;
    }
    absl::StrAppend(&kept, line, "\n");
  }
  EXPECT_TRUE(removed) << path << " has no line starting with " << prefix;
  WriteFile(path, kept);
}

// Rewrites the ELF header's e_machine (offset 18, little-endian) to another architecture:
// aarch64 on an x86_64 host, x86_64 anywhere else.
void PatchElfMachine(const fs::path& path) {
  std::string bytes = ReadFile(path);
  ASSERT_GT(bytes.size(), 20u) << path;
  constexpr unsigned char kX86_64 = 62, kAarch64 = 183;
  const unsigned char machine = static_cast<unsigned char>(bytes[18]);
  bytes[18] = static_cast<char>(machine == kX86_64 ? kAarch64 : kX86_64);
  bytes[19] = 0;
  fs::remove(path);
  WriteFile(path, bytes);
}

// Protobuf wire format, to send requests the generated code would not produce.
std::string Varint(uint64_t value) {
  std::string out;
  while (value >= 0x80) {
    out.push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
  return out;
}
std::string VarintField(uint32_t number, uint64_t value) {
  return Varint(uint64_t{number} << 3 | 0) + Varint(value);
}
std::string BytesField(uint32_t number, absl::string_view bytes) {
  return absl::StrCat(Varint(uint64_t{number} << 3 | 2), Varint(bytes.size()), bytes);
}

// What a bad bundle is applied to: a bundle directory inside the root, its library's file
// name, its bundle name, and a directory outside every bundle root.
struct Target {
  fs::path dir;
  std::string library;
  std::string name;
  fs::path outside;

  fs::path manifest() const { return dir / "manifest.toml"; }
};

// Copies the library of test bundle `source` over the target's library, so that the
// target's manifest now describes that code.
std::function<void(const Target&)> LibraryOf(std::string source) {
  return [source](const Target& t) {
    fs::path library;
    for (const fs::directory_entry& e : fs::directory_iterator(TestBundleDir(source))) {
      if (e.path().extension() == ".so") library = e.path();
    }
    ASSERT_FALSE(library.empty()) << "test bundle " << source << " has no library";
    fs::remove(t.dir / t.library);
    fs::copy_file(library, t.dir / t.library);
  };
}

// One row of the catalogue that concerns a bundle's files: how to break a bundle, and what
// LoadBundle (a gRPC error) and Reload (a FAILED response) must then say.
struct BundleFault {
  std::string name;
  std::function<void(const Target&)> corrupt;
  grpc::StatusCode code;  // of LoadBundle
  v1::FailureReason reason;
  // Each must appear in the message. "$MANIFEST" and "$LIBRARY" stand for the target's
  // manifest and library paths.
  std::vector<std::string> message_parts;
  // Reload refuses the request before PREPARING (a gRPC error with `code` and `reason`, no
  // phase event) instead of reporting a FAILED reload: docs/SEMANTICS.md §4 step 4, the loader.
  bool reload_refused = false;
};

void PrintTo(const BundleFault& fault, std::ostream* os) { *os << fault.name; }

std::string TokenOf(v1::FailureReason reason) {
  return v1::FailureReason_Name(reason).substr(std::string("FAILURE_REASON_").size());
}

std::vector<BundleFault> BundleFaults() {
  using C = grpc::StatusCode;
  return {
      {"MalformedToml",
       [](const Target& t) {
         WriteFile(t.manifest(), "loader = \"native\"\nname = [unterminated\n");
       },
       C::INVALID_ARGUMENT,
       v1::FAILURE_REASON_MANIFEST_INVALID,
       {"$MANIFEST:2:", "invalid TOML"}},
      {"MissingId",
       [](const Target& t) { RemoveLinesStartingWith(t.manifest(), "id = "); },
       C::INVALID_ARGUMENT,
       v1::FAILURE_REASON_MANIFEST_INVALID,
       {"$MANIFEST", "field 'id'", "0 or missing"}},
      {"ZeroId",
       [](const Target& t) {
         ReplaceInFile(t.manifest(), "id = " + DecimalId(core::BundleId(t.name)), "id = 0");
       },
       C::INVALID_ARGUMENT,
       v1::FAILURE_REASON_MANIFEST_INVALID,
       {"$MANIFEST", "field 'id'", "0 or missing"}},
      {"TamperedId",
       [](const Target& t) {
         ReplaceInFile(t.manifest(), DecimalId(core::BundleId(t.name)), "12345");
       },
       C::INVALID_ARGUMENT,
       v1::FAILURE_REASON_BUNDLE_TAMPERED,
       {"$MANIFEST", "field 'id'", "tampered", "(12345)"}},
      {"MissingFileField",
       [](const Target& t) { RemoveLinesStartingWith(t.manifest(), "file = "); },
       C::INVALID_ARGUMENT,
       v1::FAILURE_REASON_MANIFEST_INVALID,
       {"$MANIFEST", "field 'file'", "is required"}},
      {"UnknownLoader",
       [](const Target& t) { ReplaceInFile(t.manifest(), "\"native\"", "\"lua\""); },
       C::FAILED_PRECONDITION,
       v1::FAILURE_REASON_NO_LOADER,
       {"$MANIFEST", "field 'loader'", "\"lua\""},
       /*reload_refused=*/true},
      {"TenMegabyteManifest",
       [](const Target& t) {
         std::string manifest = ReadFile(t.manifest());
         const std::string comment = "# " + std::string(1022, 'x') + "\n";
         while (manifest.size() < 10 * kOneMegabyte) manifest += comment;
         WriteFile(t.manifest(), manifest);
       },
       C::INVALID_ARGUMENT,
       v1::FAILURE_REASON_MANIFEST_INVALID,
       {"$MANIFEST", "more than the limit of"}},
      {"InvalidUtf8BundleName",
       [](const Target& t) {
         ReplaceInFile(t.manifest(), "name = \"" + t.name + "\"",
                       "name = \"" + t.name + "\xff\xfe\"");
       },
       C::INVALID_ARGUMENT,
       v1::FAILURE_REASON_MANIFEST_INVALID,
       {"$MANIFEST:3:", "invalid utf-8"}},
      {"FileLeadsOutWithDotDot",
       [](const Target& t) {
         // The target exists, so only confinement can refuse it.
         fs::copy_file(t.dir / t.library, t.dir.parent_path() / ("escaped-" + t.library));
         ReplaceInFile(t.manifest(), "file = \"" + t.library + "\"",
                       "file = \"../escaped-" + t.library + "\"");
       },
       C::PERMISSION_DENIED,
       v1::FAILURE_REASON_ARTIFACT_PATH_ESCAPE,
       {"$MANIFEST", "field 'file'", "../escaped-", "'..'"}},
      {"FileIsAnAbsolutePath",
       [](const Target& t) {
         fs::create_directories(t.outside);
         const fs::path copy = t.outside / ("absolute-" + t.library);
         fs::copy_file(t.dir / t.library, copy);
         ReplaceInFile(t.manifest(), "file = \"" + t.library + "\"",
                       "file = \"" + copy.string() + "\"");
       },
       C::PERMISSION_DENIED,
       v1::FAILURE_REASON_ARTIFACT_PATH_ESCAPE,
       {"$MANIFEST", "field 'file'", "absolute path"}},
      {"FileIsASymlinkLeadingOut",
       [](const Target& t) {
         fs::create_directories(t.outside);
         const fs::path moved = t.outside / ("symlinked-" + t.library);
         fs::rename(t.dir / t.library, moved);
         fs::create_symlink(moved, t.dir / t.library);
       },
       C::PERMISSION_DENIED,
       v1::FAILURE_REASON_ARTIFACT_PATH_ESCAPE,
       {"$MANIFEST", "field 'file'", "is a symlink"}},
      {"ArtifactMissing",
       [](const Target& t) { fs::remove(t.dir / t.library); },
       C::FAILED_PRECONDITION,
       v1::FAILURE_REASON_ARTIFACT_MISSING,
       {"$LIBRARY", "field 'file'"}},
      {"ArtifactHalfWritten",
       [](const Target& t) {
         // A build caught mid-write: a valid ELF header, most of the file missing.
         const std::string whole = ReadFile(t.dir / t.library);
         WriteFile(t.dir / t.library, whole.substr(0, 4096));
       },
       C::FAILED_PRECONDITION,
       v1::FAILURE_REASON_ARTIFACT_NOT_LOADABLE,
       {"$LIBRARY", "truncated or still being written"}},
      {"ArtifactShorterThanAnElfHeader",
       [](const Target& t) {
         const std::string whole = ReadFile(t.dir / t.library);
         WriteFile(t.dir / t.library, whole.substr(0, 32));
       },
       C::FAILED_PRECONDITION,
       v1::FAILURE_REASON_ARTIFACT_NOT_LOADABLE,
       {"$LIBRARY", "truncated"}},
      {"ArtifactEmpty",
       [](const Target& t) { WriteFile(t.dir / t.library, ""); },
       C::FAILED_PRECONDITION,
       v1::FAILURE_REASON_ARTIFACT_NOT_LOADABLE,
       {"$LIBRARY", "empty"}},
      {"ArtifactIsNotElf",
       [](const Target& t) {
         WriteFile(t.dir / t.library, "#!/bin/sh\necho this is not a shared object\n");
       },
       C::FAILED_PRECONDITION,
       v1::FAILURE_REASON_ARTIFACT_NOT_LOADABLE,
       {"$LIBRARY", "not an ELF shared object"}},
      {"ArtifactForAnotherArchitecture",
       [](const Target& t) { PatchElfMachine(t.dir / t.library); },
       C::FAILED_PRECONDITION,
       v1::FAILURE_REASON_ARTIFACT_NOT_LOADABLE,
       {"$LIBRARY", "is built for"}},
      {"NoInitSymbol",
       LibraryOf("no_init"),
       C::FAILED_PRECONDITION,
       v1::FAILURE_REASON_INIT_SYMBOL_MISSING,
       {"$LIBRARY", "does not export polyplug_init"}},
      {"AbiVersionMismatch",
       LibraryOf("wrong_abi"),
       C::FAILED_PRECONDITION,
       v1::FAILURE_REASON_ABI_MISMATCH,
       {"$LIBRARY", "ABI version 999"}},
      {"InitReturnsAnError",
       LibraryOf("init_fails"),
       C::ABORTED,
       v1::FAILURE_REASON_INIT_FAILED,
       {"polyplug_init failed", "init_fails: refused on purpose"}},
      {"InitThrows",
       LibraryOf("init_throws"),
       C::ABORTED,
       v1::FAILURE_REASON_INIT_FAILED,
       {"polyplug_init failed", "PANIC", "init_throws: thrown on purpose"}},
      {"RegistersAContractNotInProvides",
       LibraryOf("provides_extra"),
       C::FAILED_PRECONDITION,
       v1::FAILURE_REASON_PROVIDES_MISMATCH,
       {"$MANIFEST", "field 'provides'", "test.declared@1", "which the manifest does not provide"}},
      {"ProvidesAContractInitDoesNotRegister",
       [](const Target& t) {
         ReplaceInFile(t.manifest(), "provides = [", "provides = [\"test.missing@1\", ");
       },
       C::FAILED_PRECONDITION,
       v1::FAILURE_REASON_PROVIDES_MISMATCH,
       {"$MANIFEST", "field 'provides'", "test.missing@1", "did not register it"}},
      {"RegistersTheSameContractTwice",
       LibraryOf("registers_twice"),
       C::ALREADY_EXISTS,
       v1::FAILURE_REASON_DUPLICATE_PROVIDER,
       {"test.twice@1", "registered twice"}},
      {"ClaimsAnotherContractsId",
       LibraryOf("contract_id_impostor"),
       C::INVALID_ARGUMENT,
       v1::FAILURE_REASON_INVALID_ARGUMENT,
       {"test.impostor@1", core::FormatContractId(core::GuestContractId("test.counter", 1)),
        core::FormatContractId(core::GuestContractId("test.impostor", 1))}},
      {"ContractVersionGivenTwiceDifferently",
       LibraryOf("version_mismatch"),
       C::INVALID_ARGUMENT,
       v1::FAILURE_REASON_INVALID_ARGUMENT,
       {"test.version_mismatch", "1.5.0", "1.0.0"}},
      {"ImportsProtobufsFullRuntime",
       LibraryOf("proto_full"),
       C::FAILED_PRECONDITION,
       v1::FAILURE_REASON_ARTIFACT_NOT_LOADABLE,
       {"$LIBRARY", "google::protobuf::internal::AddDescriptorsRunner", "LITE_RUNTIME"}},
      {"DefinesAnAbseilFlag",
       LibraryOf("absl_flag"),
       C::FAILED_PRECONDITION,
       v1::FAILURE_REASON_ARTIFACT_NOT_LOADABLE,
       {"$LIBRARY", "absl::flags_internal::RegisterCommandLineFlag", "define flags in the host"}},
  };
}

// ---------------------------------------------------------------------------------------
// Fixture

class FaultCatalogueTest : public ::testing::Test, public HostCalls {
 protected:
  void SetUp() override { fs::create_directories(root_); }

  // Copies the built test bundle `target` into the bundle root (as <root>/<target>).
  fs::path Copy(absl::string_view target) { return CopyTestBundle(target, root_); }

  // Starts a host serving the bundle root, plus `extra` flags. Call it as
  // ASSERT_NO_FATAL_FAILURE(StartHost(...)).
  void StartHost(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--bundles", root_.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    host_ = std::make_unique<HostProcess>(std::move(args));
    const absl::Status started = host_->Start();
    ASSERT_TRUE(started.ok()) << started;
  }

  // Copies counter_v1 into the root as "counter" and starts the host on it.
  void StartHostWithCounter(std::vector<std::string> extra = {}) {
    counter_ = CopyBundle(TestBundleDir("counter_v1"), root_ / "counter");
    StartHost(std::move(extra));
  }

  HostProcess& host() override { return *host_; }

  std::vector<std::string> BundleNames() {
    const v1::ListBundlesResponse list = ListBundles();
    std::vector<std::string> names;
    for (const v1::Bundle& b : list.bundles()) names.push_back(b.name());
    return names;
  }

  // Any PluginHost method with request bytes as they are: what a buggy or hostile client
  // sends. The response bytes are returned undecoded.
  CallResult<std::string> CallRaw(const std::string& method, const std::string& request_bytes) {
    // A channel of its own: a refused 1 MB request can leave the connection busy with the
    // unsent rest, which would hold up the main channel's teardown.
    grpc::GenericStub stub(host().NewChannel());
    grpc::Slice slice(request_bytes);
    grpc::ByteBuffer request(&slice, 1);
    grpc::ByteBuffer response;
    auto context = host().NewContext();
    std::promise<grpc::Status> done;
    stub.UnaryCall(context.get(), "/polyplug.host.v1.PluginHost/" + method, grpc::StubOptions(),
                   &request, &response,
                   [&done](grpc::Status status) { done.set_value(std::move(status)); });
    CallResult<std::string> result;
    result.status = done.get_future().get();
    if (result.status.ok()) {
      std::vector<grpc::Slice> slices;
      if (response.Dump(&slices).ok()) {
        for (const grpc::Slice& s : slices) {
          result.response.append(reinterpret_cast<const char*>(s.begin()), s.size());
        }
      }
    }
    result.trailing_reason = TrailingReasonOf(*context);
    return result;
  }

  // The proof that the host keeps serving: the counter bundle is found, a remote call of its
  // "version" method answers `version` ("v1" / "v2"), and GetHostInfo works.
  void ExpectCounterServes(const std::string& version) {
    SCOPED_TRACE("the counter bundle keeps serving");
    const auto found = FindContract("test.counter@1");
    EXPECT_TRUE(found.status.ok()) << ToString(found.status);
    EXPECT_EQ(found.response.provider_bundle_name(), "counter");
    EXPECT_EQ(VersionString(found.response.provider_version()),
              version == "v1" ? "1.0.0" : "2.0.0");
    const auto answer = Invoke("test.counter@1", "version");
    EXPECT_TRUE(answer.status.ok()) << ToString(answer.status);
    EXPECT_EQ(answer.response.response(), version);
    const auto info = Call<v1::GetHostInfoRequest, v1::HostInfo>(&v1::PluginHost::Stub::GetHostInfo,
                                                                 v1::GetHostInfoRequest());
    EXPECT_TRUE(info.status.ok()) << ToString(info.status);
    EXPECT_EQ(info.response.host_epoch(), host().epoch());
  }

  // Expects `status` to be `code` with the [token] prefix and the same trailer.
  template <typename Response>
  void ExpectError(const CallResult<Response>& result, grpc::StatusCode code,
                   const std::string& token, const std::vector<std::string>& parts = {}) {
    const grpc::Status& status = result.status;
    EXPECT_EQ(status.error_code(), code) << ToString(status);
    EXPECT_EQ(ReasonTokenOf(status), token) << ToString(status);
    EXPECT_EQ(result.trailing_reason, token) << ToString(status);
    for (const std::string& part : parts) {
      EXPECT_THAT(status.error_message(), HasSubstr(part));
    }
    EXPECT_LE(status.error_message().size(), kMaxErrorMessageBytes)
        << "the message should not echo a large input: " << status.error_message().substr(0, 200)
        << "...";
  }

  const fs::path& root() const { return root_; }
  const fs::path& counter() const { return counter_; }
  fs::path outside() const { return scratch_.path() / "outside"; }
  const TempDir& scratch() const { return scratch_; }

 private:
  TempDir scratch_;
  fs::path root_ = scratch_.path() / "bundles";
  fs::path counter_;
  std::unique_ptr<HostProcess> host_;
};

// ---------------------------------------------------------------------------------------
// Broken bundles: each row once through LoadBundle (a new bundle is refused) and once through
// Reload (the loaded counter is broken in place; the reload fails and v1 keeps serving).

class BundleFaultTest : public FaultCatalogueTest,
                        public ::testing::WithParamInterface<BundleFault> {
 protected:
  std::vector<std::string> Parts(const Target& t) const {
    std::vector<std::string> parts;
    for (const std::string& part : GetParam().message_parts) {
      parts.push_back(absl::StrReplaceAll(part, {{"$MANIFEST", t.manifest().string()},
                                                 {"$LIBRARY", (t.dir / t.library).string()}}));
    }
    return parts;
  }
};

TEST_P(BundleFaultTest, LoadBundleIsRefusedAndTheHostKeepsServing) {
  const BundleFault& fault = GetParam();
  ASSERT_NO_FATAL_FAILURE(StartHostWithCounter());
  const uint64_t last_seq = HostInfo().last_seq();
  // A good bundle (stateless) broken the catalogue's way, copied in after the start.
  const Target target{Copy("stateless"), "libstateless.so", "stateless", outside()};
  ASSERT_NO_FATAL_FAILURE(fault.corrupt(target));

  const auto loaded = LoadBundle(target.dir.string());
  ExpectError(loaded, fault.code, TokenOf(fault.reason), Parts(target));

  EXPECT_THAT(BundleNames(), ElementsAre("counter"));
  EXPECT_EQ(FindContract("test.stateless@1").status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(HostInfo().last_seq(), last_seq) << "a refused load announces nothing";
  ExpectCounterServes("v1");
}

TEST_P(BundleFaultTest, ReloadFailsAndThePreviousVersionKeepsServing) {
  const BundleFault& fault = GetParam();
  ASSERT_NO_FATAL_FAILURE(StartHostWithCounter());
  auto sub = SubscribeSynced();
  ASSERT_NE(sub, nullptr);
  const Target target{counter(), "libcounter.so", "counter", outside()};
  ASSERT_NO_FATAL_FAILURE(fault.corrupt(target));
  if (fault.reload_refused) {
    const uint64_t last_seq = HostInfo().last_seq();
    ExpectError(ReloadByName("counter"), fault.code, TokenOf(fault.reason), Parts(target));
    EXPECT_EQ(HostInfo().last_seq(), last_seq) << "no PREPARING, no FAILED";
    ExpectCounterServes("v1");
    return;
  }

  const auto reload = ReloadByName("counter");
  ASSERT_TRUE(reload.status.ok()) << "a failed reload is a response: " << ToString(reload.status);
  const v1::ReloadResponse& response = reload.response;
  EXPECT_EQ(response.outcome(), v1::RELOAD_OUTCOME_FAILED) << response.ShortDebugString();
  EXPECT_EQ(response.reason(), fault.reason) << response.ShortDebugString();
  for (const std::string& part : Parts(target)) EXPECT_THAT(response.message(), HasSubstr(part));
  EXPECT_LE(response.message().size(), kMaxErrorMessageBytes);
  ASSERT_FALSE(response.events().empty());
  const v1::ReloadPhaseEvent& last = *response.events().rbegin();
  EXPECT_EQ(Describe(last), "FAILED counter");
  EXPECT_EQ(last.reason(), fault.reason);
  EXPECT_EQ(last.message(), response.message());
  // Subscribers see the same FAILED event.
  const auto streamed = sub->ReadPhases(response.events().size());
  ASSERT_EQ(streamed.size(), static_cast<size_t>(response.events().size()));
  EXPECT_EQ(streamed.back().seq(), last.seq());
  EXPECT_EQ(streamed.back().reason(), fault.reason);

  // The previous version is live and answers.
  ExpectCounterServes("v1");
  const v1::ListBundlesResponse list = ListBundles();
  ASSERT_EQ(list.bundles_size(), 1);
  EXPECT_EQ(VersionString(list.bundles(0).version()), "1.0.0");
  EXPECT_EQ(list.bundles(0).reload_count(), 0u);

  // A good build reloads.
  fs::remove_all(counter());
  CopyBundle(TestBundleDir("counter_v2"), counter());
  ReloadOk("counter");
  ExpectCounterServes("v2");
}

INSTANTIATE_TEST_SUITE_P(Catalogue, BundleFaultTest, ::testing::ValuesIn(BundleFaults()),
                         [](const ::testing::TestParamInfo<BundleFault>& info) {
                           return info.param.name;
                         });

// ---------------------------------------------------------------------------------------
// Duplicate providers and dependency cycles

TEST_F(FaultCatalogueTest, TwoBundlesMayProvideTheSameContract) {
  ASSERT_NO_FATAL_FAILURE(StartHostWithCounter());
  // counter_v2's files under another bundle name: a second provider of test.counter@1.
  const fs::path twin = CopyBundle(TestBundleDir("counter_v2"), root() / "counter_twin");
  ReplaceInFile(twin / "manifest.toml", "name = \"counter\"", "name = \"counter_twin\"");
  ReplaceInFile(twin / "manifest.toml", DecimalId(core::BundleId("counter")),
                DecimalId(core::BundleId("counter_twin")));

  const auto loaded = LoadBundle(twin.string());
  ASSERT_TRUE(loaded.status.ok()) << ToString(loaded.status);
  EXPECT_THAT(loaded.response.bundle().provides(), ElementsAre("test.counter@1"));

  // The first provider keeps answering by name; the second is reachable by bundle.
  ExpectCounterServes("v1");
  v1::FindContractRequest in_twin;
  in_twin.set_name("test.counter@1");
  in_twin.set_bundle("counter_twin");
  const auto found_twin = FindContract(in_twin);
  ASSERT_TRUE(found_twin.status.ok()) << ToString(found_twin.status);
  EXPECT_EQ(found_twin.response.provider_bundle_name(), "counter_twin");
  EXPECT_EQ(found_twin.response.contract_id(), core::GuestContractId("test.counter", 1));
  v1::InvokeRequest call_twin;
  *call_twin.mutable_handle() = found_twin.response;
  call_twin.set_method("version");
  const auto twin_answer = Invoke(call_twin);
  ASSERT_TRUE(twin_answer.status.ok()) << ToString(twin_answer.status);
  EXPECT_EQ(twin_answer.response.response(), "v2");
  EXPECT_EQ(HostInfo().contract_count(), 2u);

  // Unloading one provider leaves the other.
  ASSERT_TRUE(UnloadBundle("counter_twin", false).status.ok());
  ExpectCounterServes("v1");
}

TEST_F(FaultCatalogueTest, DependencyCycleAtStartupIsLoggedAndTheHostServes) {
  Copy("cycle_x");
  Copy("cycle_y");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const auto line = host().WaitForStderrLine("cycle_x");
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_TRUE(absl::StrContains(*line, "dependency cycle") && absl::StrContains(*line, "cycle_y"))
      << *line;
  EXPECT_EQ(HostInfo().bundle_count(), 0u);
  // The host serves: a good bundle copied in later loads and answers.
  CopyBundle(TestBundleDir("counter_v1"), root() / "counter");
  const auto loaded = LoadBundle((root() / "counter").string());
  ASSERT_TRUE(loaded.status.ok()) << ToString(loaded.status);
  ExpectCounterServes("v1");
}

TEST_F(FaultCatalogueTest, DependencyCycleAtStartupDoesNotKeepOtherBundlesFromLoading) {
  Copy("cycle_x");
  Copy("cycle_y");
  CopyBundle(TestBundleDir("counter_v1"), root() / "counter");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const auto line = host().WaitForStderrLine("DEPENDENCY_CYCLE");
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_TRUE(absl::StrContains(*line, "cycle_x") && absl::StrContains(*line, "cycle_y")) << *line;
  EXPECT_THAT(BundleNames(), ElementsAre("counter"));
  ExpectCounterServes("v1");
}

TEST_F(FaultCatalogueTest, DependencyCycleThroughLoadBundleIsAcceptedAndReloadsTerminate) {
  ASSERT_NO_FATAL_FAILURE(StartHostWithCounter());
  // Explicit loads do not enforce dependencies: cycle_x loads although nothing provides
  // cycle.y@1 yet, and cycle_y then closes the cycle.
  const auto x = LoadBundle(Copy("cycle_x").string());
  ASSERT_TRUE(x.status.ok()) << ToString(x.status);
  const auto y = LoadBundle(Copy("cycle_y").string());
  ASSERT_TRUE(y.status.ok()) << ToString(y.status);

  // A reload cascades around the cycle once and ends.
  const v1::ReloadResponse reload = ReloadOk("cycle_x");
  EXPECT_THAT(Describe(reload.events()), ElementsAre("PREPARING cycle_x", "PREPARING cycle_y",
                                                     "RELOADED cycle_y", "RELOADED cycle_x"));
  // Unloading refuses while the other depends on it, and a cascade unloads both.
  const auto refused = UnloadBundle("cycle_x", false);
  ExpectError(refused, grpc::StatusCode::FAILED_PRECONDITION, "DEPENDENCY_IN_USE", {"cycle_x"});
  const auto unloaded = UnloadBundle("cycle_x", true);
  ASSERT_TRUE(unloaded.status.ok()) << ToString(unloaded.status);
  EXPECT_THAT(unloaded.response.unloaded(), ElementsAre("cycle_y", "cycle_x"));
  EXPECT_THAT(BundleNames(), ElementsAre("counter"));
  ExpectCounterServes("v1");
}

// ---------------------------------------------------------------------------------------
// Paths

TEST_F(FaultCatalogueTest, LoadAndReloadPathsOutsideTheRootsArePermissionDenied) {
  const fs::path evil = CopyBundle(TestBundleDir("chain_a"), outside() / "evil");
  ASSERT_NO_FATAL_FAILURE(StartHostWithCounter());
  fs::create_directory_symlink(evil, root() / "escape");  // after start: not scanned
  const uint64_t last_seq = HostInfo().last_seq();

  const std::vector<std::pair<std::string, CallResult<v1::LoadBundleResponse>>> loads = {
      {"../outside/evil", LoadBundle("../outside/evil")},
      {root().string() + "/../outside/evil", LoadBundle(root().string() + "/../outside/evil")},
      {"escape", LoadBundle("escape")},
      {(root() / "escape").string(), LoadBundle((root() / "escape").string())},
      {evil.string(), LoadBundle(evil.string())},
  };
  for (const auto& [path, result] : loads) {
    SCOPED_TRACE("LoadBundle " + path);
    ExpectError(result, grpc::StatusCode::PERMISSION_DENIED, "PERMISSION_DENIED",
                {"\"" + path, "resolves outside the bundle roots"});
  }
  const std::string up_and_out = (counter() / ".." / ".." / "outside" / "evil").string();
  ExpectError(ReloadByPath(up_and_out), grpc::StatusCode::PERMISSION_DENIED, "PERMISSION_DENIED",
              {"outside the bundle roots"});

  EXPECT_THAT(BundleNames(), ElementsAre("counter"));
  EXPECT_EQ(FindContract("chain.a@1").status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(HostInfo().last_seq(), last_seq);
  ExpectCounterServes("v1");
}

// ---------------------------------------------------------------------------------------
// Bad request fields

struct BadRequest {
  std::string what;
  std::string method;
  std::string bytes;
  grpc::StatusCode code;
  std::string token;
  std::vector<std::string> parts;
};

template <typename Message>
std::string Bytes(const Message& message) {
  return message.SerializeAsString();
}

TEST_F(FaultCatalogueTest, EmptyRequestFieldsAreInvalidArguments) {
  ASSERT_NO_FATAL_FAILURE(StartHostWithCounter());
  using C = grpc::StatusCode;
  v1::ReloadRequest reload_empty_name;
  reload_empty_name.set_name("");
  v1::ReloadRequest reload_empty_path;
  reload_empty_path.set_path("");
  v1::FindContractRequest find_empty_name;
  find_empty_name.set_name("");
  v1::UnloadBundleRequest unload_empty;
  v1::CreateInstanceRequest create_empty_contract;
  create_empty_contract.set_contract("");
  v1::InvokeRequest invoke_empty_method;
  invoke_empty_method.set_contract("test.counter@1");
  v1::InvokeRequest invoke_no_target;
  invoke_no_target.set_method("version");
  const std::vector<BadRequest> requests = {
      {"Reload without a bundle",
       "Reload",
       "",
       C::INVALID_ARGUMENT,
       "INVALID_ARGUMENT",
       {"'name' or 'path'"}},
      {"Reload name \"\"",
       "Reload",
       Bytes(reload_empty_name),
       C::INVALID_ARGUMENT,
       "INVALID_ARGUMENT",
       {"field 'name' is empty"}},
      {"Reload path \"\"",
       "Reload",
       Bytes(reload_empty_path),
       C::INVALID_ARGUMENT,
       "INVALID_ARGUMENT",
       {"field 'path'"}},
      {"LoadBundle path \"\"",
       "LoadBundle",
       "",
       C::INVALID_ARGUMENT,
       "INVALID_ARGUMENT",
       {"field 'path'"}},
      {"UnloadBundle name \"\"",
       "UnloadBundle",
       Bytes(unload_empty),
       C::INVALID_ARGUMENT,
       "INVALID_ARGUMENT",
       {"field 'name' is empty"}},
      {"FindContract without a contract",
       "FindContract",
       "",
       C::INVALID_ARGUMENT,
       "INVALID_ARGUMENT",
       {"'name'", "'contract_id'"}},
      {"FindContract name \"\"",
       "FindContract",
       Bytes(find_empty_name),
       C::INVALID_ARGUMENT,
       "INVALID_ARGUMENT",
       {"field 'name' is empty"}},
      {"CreateInstance without a target",
       "CreateInstance",
       "",
       C::INVALID_ARGUMENT,
       "INVALID_ARGUMENT",
       {"'handle'", "'contract'"}},
      // The message names field 'name' here (a known gap, see below).
      {"CreateInstance contract \"\"",
       "CreateInstance",
       Bytes(create_empty_contract),
       C::INVALID_ARGUMENT,
       "INVALID_ARGUMENT",
       {"is empty"}},
      {"Invoke method \"\"",
       "Invoke",
       Bytes(invoke_empty_method),
       C::INVALID_ARGUMENT,
       "INVALID_ARGUMENT",
       {"field 'method' is empty"}},
      {"Invoke without a target",
       "Invoke",
       Bytes(invoke_no_target),
       C::INVALID_ARGUMENT,
       "INVALID_ARGUMENT",
       {"'handle'", "'contract'"}},
  };
  for (const BadRequest& r : requests) {
    SCOPED_TRACE(r.what);
    ExpectError(CallRaw(r.method, r.bytes), r.code, r.token, r.parts);
  }
  EXPECT_EQ(HostInfo().last_seq(), host().info_at_start().last_seq());
  ExpectCounterServes("v1");
}

TEST_F(FaultCatalogueTest, EmptyContractFieldOfCreateInstanceNamesThatField) {
  ASSERT_NO_FATAL_FAILURE(StartHostWithCounter());
  v1::CreateInstanceRequest request;
  request.set_contract("");
  ExpectError(CallRaw("CreateInstance", Bytes(request)), grpc::StatusCode::INVALID_ARGUMENT,
              "INVALID_ARGUMENT", {"field 'contract' is empty"});
  ExpectCounterServes("v1");
}

TEST_F(FaultCatalogueTest, OneMegabyteNamesAreRefusedWithoutEchoingThem) {
  ASSERT_NO_FATAL_FAILURE(StartHostWithCounter());
  using C = grpc::StatusCode;
  const std::string huge(kOneMegabyte, 'n');
  v1::ReloadRequest reload;
  reload.set_name(huge);
  v1::ReloadRequest reload_path;
  reload_path.set_path(huge);
  v1::LoadBundleRequest load;
  load.set_path(huge);
  v1::UnloadBundleRequest unload;
  unload.set_name(huge);
  v1::FindContractRequest find;
  find.set_name(huge + "@1");
  const std::vector<BadRequest> requests = {
      {"Reload name",
       "Reload",
       Bytes(reload),
       C::INVALID_ARGUMENT,
       "INVALID_ARGUMENT",
       {"field 'name' is 1048576 bytes", "limit is 1024"}},
      {"Reload path",
       "Reload",
       Bytes(reload_path),
       C::INVALID_ARGUMENT,
       "INVALID_ARGUMENT",
       {"field 'path'", "4096 bytes"}},
      {"LoadBundle path",
       "LoadBundle",
       Bytes(load),
       C::INVALID_ARGUMENT,
       "INVALID_ARGUMENT",
       {"field 'path'", "4096 bytes"}},
      {"UnloadBundle name",
       "UnloadBundle",
       Bytes(unload),
       C::INVALID_ARGUMENT,
       "INVALID_ARGUMENT",
       {"field 'name'", "limit is 1024"}},
      {"FindContract name",
       "FindContract",
       Bytes(find),
       C::INVALID_ARGUMENT,
       "INVALID_ARGUMENT",
       {"field 'name'", "limit is 1024"}},
  };
  for (const BadRequest& r : requests) {
    SCOPED_TRACE(r.what);
    ExpectError(CallRaw(r.method, r.bytes), r.code, r.token, r.parts);
  }
  ExpectCounterServes("v1");
}

TEST_F(FaultCatalogueTest, OneMegabyteNamesInLookupFieldsAreRefusedWithoutEchoingThem) {
  ASSERT_NO_FATAL_FAILURE(StartHostWithCounter());
  using C = grpc::StatusCode;
  const std::string huge(kOneMegabyte, 'n');
  v1::FindContractRequest find_in_bundle;
  find_in_bundle.set_name("test.counter@1");
  find_in_bundle.set_bundle(huge);
  v1::ListContractsRequest list;
  list.set_bundle(huge);
  v1::InvokeRequest invoke;
  invoke.set_contract("test.counter@1");
  invoke.set_method(huge);
  v1::CreateInstanceRequest create;
  create.set_contract(huge + "@1");
  const std::vector<BadRequest> requests = {
      {"FindContract bundle",
       "FindContract",
       Bytes(find_in_bundle),
       C::INVALID_ARGUMENT,
       "INVALID_ARGUMENT",
       {"field 'bundle'", "limit is 1024"}},
      {"ListContracts bundle",
       "ListContracts",
       Bytes(list),
       C::INVALID_ARGUMENT,
       "INVALID_ARGUMENT",
       {"field 'bundle'", "limit is 1024"}},
      {"Invoke method",
       "Invoke",
       Bytes(invoke),
       C::INVALID_ARGUMENT,
       "INVALID_ARGUMENT",
       {"field 'method'", "limit is 1024"}},
      {"CreateInstance contract",
       "CreateInstance",
       Bytes(create),
       C::INVALID_ARGUMENT,
       "INVALID_ARGUMENT",
       {"field 'contract'", "limit is 1024"}},
  };
  for (const BadRequest& r : requests) {
    SCOPED_TRACE(r.what);
    ExpectError(CallRaw(r.method, r.bytes), r.code, r.token, r.parts);
  }
  ExpectCounterServes("v1");
}

// A limit of gRPC 1.51, not of the host: a request the protobuf parser rejects (invalid
// UTF-8 in a string field, bytes that are not a protobuf) never reaches the host's code;
// gRPC's callback server answers it UNIMPLEMENTED with an empty message. The host serves on.
TEST_F(FaultCatalogueTest, RequestsThatDoNotParseAreRefusedByGrpcAndTheHostServes) {
  ASSERT_NO_FATAL_FAILURE(StartHostWithCounter());
  const std::string bad = "test.\xff\xfe";
  // Hand-encoded: the generated code would complain before sending.
  const std::vector<std::pair<std::string, std::string>> requests = {
      {"FindContract", BytesField(1, bad + "@1")},
      {"FindContract", BytesField(1, "test.counter@1") + BytesField(5, bad)},
      {"Reload", BytesField(1, bad)},
      {"UnloadBundle", BytesField(1, bad)},
      {"Invoke", BytesField(3, "test.counter@1") + BytesField(5, bad)},
      {"FindContract", std::string("\xff\xff\xff\xff", 4)},
  };
  for (const auto& [method, bytes] : requests) {
    SCOPED_TRACE(method);
    const auto result = CallRaw(method, bytes);
    EXPECT_FALSE(result.status.ok());
    ExpectCounterServes("v1");
  }
}

// SubscribeReloadPhases takes its request as bytes (its events go out serialised once for
// every subscriber), so the host parses the request itself.
TEST_F(FaultCatalogueTest, SubscriptionRequestsThatDoNotParseAreInvalidArguments) {
  ASSERT_NO_FATAL_FAILURE(StartHostWithCounter());
  // A server-streaming call made as a bidi one: one request, then read until the end.
  class RawSubscription : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
   public:
    RawSubscription(grpc::GenericStub& stub, grpc::ClientContext* context,
                    const std::string& request_bytes) {
      grpc::Slice slice(request_bytes);
      request_ = grpc::ByteBuffer(&slice, 1);
      stub.PrepareBidiStreamingCall(context, "/polyplug.host.v1.PluginHost/SubscribeReloadPhases",
                                    grpc::StubOptions(), this);
      StartWriteLast(&request_, grpc::WriteOptions());
      StartRead(&event_);
      StartCall();
    }
    void OnReadDone(bool ok) override {
      if (!ok) return;
      ++events_;
      StartRead(&event_);
    }
    void OnDone(const grpc::Status& status) override { done_.set_value(status); }
    grpc::Status Wait() { return done_.get_future().get(); }
    int events() const { return events_; }

   private:
    grpc::ByteBuffer request_;
    grpc::ByteBuffer event_;
    std::atomic<int> events_{0};
    std::promise<grpc::Status> done_;
  };
  for (const std::string& bytes :
       {BytesField(3, "counter\xff"), std::string("\xff\xff\xff\xff", 4)}) {
    grpc::GenericStub stub(host().NewChannel());
    auto context = host().NewContext();
    RawSubscription subscription(stub, context.get(), bytes);
    const grpc::Status status = subscription.Wait();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << ToString(status);
    EXPECT_THAT(status.error_message(),
                HasSubstr("not a polyplug.host.v1.SubscribeReloadPhasesRequest"));
    EXPECT_EQ(subscription.events(), 0);
  }
  ExpectCounterServes("v1");
}

TEST_F(FaultCatalogueTest, MessagesLargerThanMaxMessageBytesAreResourceExhausted) {
  constexpr int kLimit = 64 * 1024;
  ASSERT_NO_FATAL_FAILURE(StartHostWithCounter({"--max-message-bytes", std::to_string(kLimit)}));
  // A request over the limit is refused by gRPC before the host sees it.
  const auto big_request = Invoke("test.counter@1", "echo", std::string(2 * kLimit, 'r'));
  EXPECT_EQ(big_request.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << ToString(big_request.status);
  EXPECT_THAT(big_request.status.error_message(), HasSubstr(std::to_string(kLimit)));
  // A request just under the limit whose answer (the echo plus the provider's handle) is over
  // it: the answer cannot be sent.
  const auto big_answer = Invoke("test.counter@1", "echo", std::string(kLimit - 36, 'a'));
  EXPECT_EQ(big_answer.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << ToString(big_answer.status);
  // Under the limit both ways works.
  const auto fits = Invoke("test.counter@1", "echo", std::string(kLimit / 2, 'f'));
  EXPECT_TRUE(fits.status.ok()) << ToString(fits.status);
  EXPECT_EQ(fits.response.response().size(), static_cast<size_t>(kLimit / 2));
  ExpectCounterServes("v1");
}

TEST_F(FaultCatalogueTest, UnknownFieldsWrongWireTypesAndForgedValuesAreHandled) {
  ASSERT_NO_FATAL_FAILURE(StartHostWithCounter());
  // No request message has an enum field, so there is no enum to set out of range. The
  // wire-level equivalents: unknown field numbers (varint, bytes), and a known field sent
  // with another wire type, are skipped by the parser.
  const std::string find_with_unknowns =
      BytesField(1, "test.counter@1") + VarintField(99, 7) + BytesField(100, "surprise");
  const auto found = CallRaw("FindContract", find_with_unknowns);
  ASSERT_TRUE(found.status.ok()) << ToString(found.status);
  v1::ContractHandle handle;
  ASSERT_TRUE(handle.ParseFromString(found.response));
  EXPECT_EQ(handle.provider_bundle_name(), "counter");

  // ReloadRequest.name (field 1, a string) sent as a varint: the request has no bundle.
  ExpectError(CallRaw("Reload", VarintField(1, 42)), grpc::StatusCode::INVALID_ARGUMENT,
              "INVALID_ARGUMENT", {"'name' or 'path'"});

  // A forged handle (a slot that does not exist) and a handle from another host epoch.
  v1::InvokeRequest forged;
  forged.mutable_handle()->set_index(123456);
  forged.mutable_handle()->set_generation(7);
  forged.set_method("version");
  const auto forged_call = Invoke(forged);
  ExpectError(forged_call, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_HANDLE",
              {"handle index 123456"});
  v1::InvokeRequest old_epoch;
  *old_epoch.mutable_handle() = handle;
  old_epoch.mutable_handle()->set_host_epoch(host().epoch() + 1);
  old_epoch.set_method("version");
  ExpectError(Invoke(old_epoch), grpc::StatusCode::FAILED_PRECONDITION, "STALE_HANDLE",
              {"host epoch"});
  ExpectCounterServes("v1");
}

// ---------------------------------------------------------------------------------------
// Misbehaving clients

// One scenario, a subscriber that stops reading while reloads go on, and everything it must
// not do: hold up reloads, or the subscribers that read, or a subscriber that joins later;
// leave the stalled stream hanging, or end it without saying where to resume, or with a
// gap. (Also the row "The same: the OUT_OF_RANGE" of RELIABILITY.md: the reason token and
// trailer of the cut.)
TEST_F(FaultCatalogueTest, SubscriberThatNeverReadsIsCutAndOthersGetEveryEvent) {
  ASSERT_NO_FATAL_FAILURE(StartHostWithCounter());
  // Enough events to overflow the host's per-subscriber queue (1024) whatever the transport
  // buffers, few enough for the journal (4096).
  constexpr size_t kReloads = 600;
  constexpr size_t kEvents = 2 * kReloads;
  // A connection with a tiny flow-control window, so that the host's writes really stall.
  grpc::ChannelArguments narrow;
  narrow.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  narrow.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 1024);
  auto stalled_stub = host().NewStub(narrow);
  // One stream never read at all, one read through its snapshot and then left alone.
  Subscription never_read(*stalled_stub, v1::SubscribeReloadPhasesRequest(), host().NewContext());
  auto stalled = SubscribeSynced({}, stalled_stub.get());
  ASSERT_NE(stalled, nullptr);
  // A subscriber that keeps reading, on its own connection.
  auto reader_stub = host().NewStub();
  auto reader = SubscribeSynced({}, reader_stub.get());
  ASSERT_NE(reader, nullptr);
  ASSERT_TRUE(WaitForSubscriberCount(3)) << HostInfo().ShortDebugString();
  const uint64_t start_seq = HostInfo().last_seq();

  std::vector<v1::ReloadPhaseEvent> seen;
  std::thread reading([&] { seen = reader->ReadPhases(kEvents); });
  // On a failed assertion below: end the reader's stream and join it.
  absl::Cleanup join_reader = [&] {
    if (!reading.joinable()) return;
    reader->Cancel();
    reading.join();
  };
  // Reloads never wait for the stalled streams.
  for (size_t i = 0; i < kReloads; ++i) {
    const auto reload = ReloadByName("counter");
    ASSERT_TRUE(reload.status.ok()) << "reload " << i << ": " << ToString(reload.status);
    ASSERT_EQ(reload.response.outcome(), v1::RELOAD_OUTCOME_RELOADED)
        << "reload " << i << ": " << reload.response.ShortDebugString();
  }
  const uint64_t end_seq = HostInfo().last_seq();
  ASSERT_EQ(end_seq, start_seq + kEvents);
  reading.join();
  ASSERT_EQ(seen.size(), kEvents) << "the reading subscriber got every event";
  for (size_t i = 0; i < seen.size(); ++i) {
    ASSERT_EQ(seen[i].seq(), start_seq + 1 + i) << "event " << i;
  }

  // A subscriber that joins while the stalled streams are still unread is served normally.
  {
    auto fresh = SubscribeSynced();
    ASSERT_NE(fresh, nullptr);
    const v1::ReloadResponse next = ReloadOk("counter");
    ExpectSameEvents(fresh->ReadPhases(2), EventsOf(next));
  }

  // The stalled streams were cut: every message a phase event, a gap-free prefix, then
  // OUT_OF_RANGE [SUBSCRIBER_FELL_BEHIND] naming the seq to resume after. Resumed from that
  // seq, a stream gets the rest without a gap.
  for (Subscription* sub : {&never_read, stalled.get()}) {
    SCOPED_TRACE(sub == &never_read ? "never read" : "read through the snapshot");
    const auto backlog = sub->ReadToEnd();
    const grpc::Status status = sub->Finish();
    ASSERT_LT(backlog.size(), kEvents);
    for (size_t i = 0; i < backlog.size(); ++i) {
      ASSERT_EQ(backlog[i].kind(), v1::EVENT_KIND_PHASE) << backlog[i].ShortDebugString();
      ASSERT_EQ(backlog[i].seq(), start_seq + 1 + i) << "event " << i;
    }
    EXPECT_EQ(status.error_code(), grpc::StatusCode::OUT_OF_RANGE) << ToString(status);
    EXPECT_THAT(status.error_message(), HasSubstr("fell behind"));
    EXPECT_EQ(ReasonTokenOf(status), "SUBSCRIBER_FELL_BEHIND") << ToString(status);
    EXPECT_EQ(TrailingReasonOf(sub->context()), "SUBSCRIBER_FELL_BEHIND");
    const uint64_t resume = backlog.empty() ? start_seq : backlog.back().seq();
    EXPECT_TRUE(ContainsNumber(status.error_message(), resume))
        << "should name seq " << resume << ": " << ToString(status);

    v1::SubscribeReloadPhasesRequest request;
    request.mutable_resume_after()->set_host_epoch(host().epoch());
    request.mutable_resume_after()->set_seq(resume);
    request.set_max_events(static_cast<uint32_t>(end_seq - resume));
    auto resumed = Subscribe(request);
    const auto rest = resumed->ReadToEnd();
    EXPECT_TRUE(resumed->Finish().ok()) << ToString(resumed->Finish());
    ASSERT_EQ(rest.size(), end_seq - resume);
    for (size_t i = 0; i < rest.size(); ++i) {
      ASSERT_EQ(rest[i].seq(), resume + 1 + i) << "resumed event " << i;
    }
  }
  ASSERT_TRUE(WaitForSubscriberCount(1)) << "the cut streams are freed";
  ExpectCounterServes("v1");
}

TEST_F(FaultCatalogueTest, ClientThatCancelsItsReloadMidwayLeavesACompletedReload) {
  // The reload waits for the blocked call below for as long as it takes, so that the
  // cancellation surely lands while the reload runs.
  ASSERT_NO_FATAL_FAILURE(StartHostWithCounter({"--drain-timeout", "10m"}));
  auto observer = SubscribeSynced();
  ASSERT_NE(observer, nullptr);
  auto health = grpc::health::v1::Health::NewStub(host().channel());
  HealthWatch watch(*health, "counter");
  ASSERT_EQ(watch.Next(), ServingStatus::SERVING);

  // A remote call that blocks inside the bundle until the test releases it.
  const fs::path fifos = scratch().path() / "fifos";
  fs::create_directories(fifos);
  ASSERT_EQ(mkfifo((fifos / "started").c_str(), 0600), 0);
  ASSERT_EQ(mkfifo((fifos / "release").c_str(), 0600), 0);
  auto reload_context = host().NewContext();
  std::future<CallResult<v1::InvokeResponse>> blocked;
  std::future<grpc::Status> reload;
  // On a failed assertion below: let the call and the reload end before the futures wait.
  absl::Cleanup unblock = [&] {
    reload_context->TryCancel();
    ReleaseBlockedCallIfWaiting(fifos);
  };
  blocked = std::async(std::launch::async, [this, &fifos] {
    return Invoke("test.counter@1", "block", fifos.string());
  });
  ASSERT_TRUE(WaitForBlockedCall(fifos)) << "the blocking call did not start";

  // Reload to v2; it announces PREPARING, then waits for the call in flight.
  OverwriteArtifact(TestBundleDir("counter_v2"), counter());
  reload = std::async(std::launch::async, [this, &reload_context] {
    v1::ReloadRequest request;
    request.set_name("counter");
    v1::ReloadResponse response;
    return host().stub().Reload(reload_context.get(), request, &response);
  });
  ASSERT_EQ(watch.Next(), ServingStatus::NOT_SERVING) << "PREPARING counter";
  // Mid-reload, the host still answers.
  EXPECT_TRUE(FindContract("test.counter@1").status.ok());
  EXPECT_EQ(HostInfo().host_epoch(), host().epoch());

  // The client goes away.
  reload_context->TryCancel();
  const grpc::Status cancelled = reload.get();
  EXPECT_EQ(cancelled.error_code(), grpc::StatusCode::CANCELLED) << ToString(cancelled);

  // The reload still runs to its terminal phase once the call returns.
  ReleaseBlockedCall(fifos);
  const auto call = blocked.get();
  EXPECT_TRUE(call.status.ok()) << ToString(call.status);
  EXPECT_EQ(call.response.response(), "v1") << "the call in flight finished on the old code";
  EXPECT_EQ(watch.Next(), ServingStatus::SERVING);
  EXPECT_THAT(Describe(observer->ReadPhases(2)),
              ElementsAre("PREPARING counter", "RELOADED counter"));
  ExpectCounterServes("v2");
  const v1::ListBundlesResponse list = ListBundles();
  ASSERT_EQ(list.bundles_size(), 1);
  EXPECT_EQ(list.bundles(0).reload_count(), 1u);
  // And the next reload is not held up by the abandoned one.
  ReloadOk("counter");
}

}  // namespace
}  // namespace polyplug::test
