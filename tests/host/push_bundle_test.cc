// PushBundle against the real polyplug-host: an upload becomes <deploy root>/<name> and
// loads, or reloads the bundle loaded from there; every bad upload is a clear error that
// leaves nothing behind (no file in the deploy root, nothing in its staging directory) and
// the running version untouched and serving.
//
// Uploads are built here from the built test bundles (Upload), so that a test can damage
// exactly one thing about one. Nothing sleeps: tests wait on call completions and on the
// host's log lines.
#include <sys/stat.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "host/host_calls.h"
#include "host/host_fixture.h"
#include "host/host_process_fixture.h"
#include "polyplug/core/bundle_signature.h"
#include "polyplug/core/manifest.h"
#include "polyplug/host/v1/host.grpc.pb.h"
#include "support/bundle_fixture.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::polyplug::host::v1;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// A bundle directory as PushBundle carries it: the header, every file's bytes in the
// header's order, and the digests message when the digests follow the bytes.
struct Upload {
  v1::PushBundleHeader header;
  std::string bytes;
  std::optional<v1::PushBundleDigests> digests_last;
};

Upload UploadOf(const fs::path& dir) {
  Upload upload;
  auto digest = core::DigestBundle(dir);
  EXPECT_TRUE(digest.ok()) << digest.status();
  if (!digest.ok()) return upload;
  std::vector<std::string> paths;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) paths.push_back(entry.path().lexically_relative(dir).string());
  }
  std::sort(paths.begin(), paths.end());
  for (const std::string& path : paths) {
    const std::string bytes = ReadFile(dir / path);
    v1::PushedFile* file = upload.header.add_files();
    file->set_path(path);
    file->set_size(bytes.size());
    file->set_sha256(Sha256OfFile(dir / path));
    upload.bytes += bytes;
  }
  auto manifest = core::LoadManifest(dir);
  EXPECT_TRUE(manifest.ok()) << manifest.status();
  upload.header.set_bundle_name(manifest.ok() ? manifest->name : "");
  upload.header.set_bundle_digest(core::DigestToHex(digest->digest));
  return upload;
}

// `upload` with its digests moved from the header into a last message, as HostClient
// sends them.
Upload WithDigestsLast(Upload upload) {
  v1::PushBundleDigests& digests = upload.digests_last.emplace();
  for (v1::PushedFile& file : *upload.header.mutable_files()) {
    digests.add_file_sha256(file.sha256());
    file.clear_sha256();
  }
  digests.set_bundle_digest(upload.header.bundle_digest());
  upload.header.clear_bundle_digest();
  return upload;
}

class PushBundleTest : public HostProcessTest {
 protected:
  fs::path deploy_root() const { return scratch().path() / "deploy"; }

  void StartPushHost(std::vector<std::string> extra = {}) {
    extra.insert(extra.begin(), {"--deploy-root", deploy_root().string()});
    ASSERT_NO_FATAL_FAILURE(StartHost(std::move(extra)));
  }

  // Sends `upload` in chunks of `chunk` bytes, then closes the stream; with `send_only`,
  // only that many bytes of the files are sent. The result as the host answered it.
  CallResult<v1::PushBundleResponse> Send(const Upload& upload, size_t chunk = 64 << 10,
                                          std::optional<size_t> send_only = std::nullopt) {
    CallResult<v1::PushBundleResponse> result;
    auto context = host().NewContext();
    auto writer = host().stub().PushBundle(context.get(), &result.response);
    v1::PushBundleRequest header;
    *header.mutable_header() = upload.header;
    bool open = writer->Write(header);
    const size_t end = std::min(upload.bytes.size(), send_only.value_or(upload.bytes.size()));
    for (size_t at = 0; open && at < end; at += chunk) {
      v1::PushBundleRequest data;
      data.set_data(upload.bytes.substr(at, std::min(chunk, end - at)));
      open = writer->Write(data);
    }
    if (open && upload.digests_last) {
      v1::PushBundleRequest digests;
      *digests.mutable_digests() = *upload.digests_last;
      open = writer->Write(digests);
    }
    if (open) writer->WritesDone();
    result.status = writer->Finish();
    result.trailing_reason = TrailingReasonOf(*context);
    return result;
  }

  // Pushes the built test bundle `target` and expects `outcome`.
  v1::PushBundleResponse PushOk(absl::string_view target, v1::PushOutcome outcome) {
    auto result = Send(UploadOf(TestBundleDir(target)));
    EXPECT_TRUE(result.status.ok()) << ToString(result.status);
    EXPECT_EQ(result.response.outcome(), outcome) << result.response.ShortDebugString();
    return result.response;
  }

  // What the deploy root holds besides its lock and staging directory, and what its
  // staging directory holds: after any push ends, only the bundles placed.
  std::vector<std::string> DeployRootEntries() const {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(deploy_root())) {
      const std::string name = entry.path().filename().string();
      if (name != ".polyplug-deploy.lock" && name != ".polyplug-staging") names.push_back(name);
    }
    for (const auto& entry : fs::directory_iterator(deploy_root() / ".polyplug-staging")) {
      names.push_back(".polyplug-staging/" + entry.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  // counter 1.0.0 is loaded from the deploy root and serves, as pushed before the test.
  void ExpectCounterV1StillServes() {
    auto found = FindContract("test.counter@1");
    ASSERT_TRUE(found.status.ok()) << ToString(found.status);
    EXPECT_EQ(VersionString(found.response.provider_version()), "1.0.0");
    EXPECT_EQ(ReadFile(deploy_root() / "counter" / "manifest.toml"),
              ReadFile(TestBundleDir("counter_v1") / "manifest.toml"));
    EXPECT_THAT(DeployRootEntries(), ElementsAre("counter"));
    // And it still reloads: the host is sound.
    ReloadOk("counter");
  }

  // The bad upload `upload` is refused with `code` and `reason` and changes nothing.
  void ExpectRefused(const Upload& upload, grpc::StatusCode code, absl::string_view reason,
                     absl::string_view message_part, std::optional<size_t> send_only = {}) {
    auto result = Send(upload, 64 << 10, send_only);
    EXPECT_EQ(result.status.error_code(), code) << ToString(result.status);
    EXPECT_EQ(ReasonTokenOf(result.status), reason) << ToString(result.status);
    EXPECT_EQ(result.trailing_reason, reason);
    EXPECT_THAT(result.status.error_message(), HasSubstr(message_part));
    // The reactor drops the upload before it answers: nothing is left by now.
    ExpectCounterV1StillServes();
  }
};

TEST_F(PushBundleTest, APushLoadsANewBundleFromTheDeployRoot) {
  ASSERT_NO_FATAL_FAILURE(StartPushHost());
  const v1::PushBundleResponse pushed = PushOk("counter_v1", v1::PUSH_OUTCOME_LOADED);
  EXPECT_EQ(pushed.bundle_name(), "counter");
  EXPECT_EQ(pushed.dir(), (fs::canonical(deploy_root()) / "counter").string());
  EXPECT_EQ(pushed.bundle().version().major(), 1u);
  EXPECT_EQ(pushed.host_epoch(), host().epoch());
  ASSERT_EQ(pushed.events_size(), 1);
  EXPECT_EQ(pushed.events(0).phase(), v1::PHASE_LOADED);
  EXPECT_EQ(pushed.reload_id(), pushed.events(0).reload_id());
  // The bytes on disk are the bytes pushed, bit for bit.
  const auto digest = core::DigestBundle(deploy_root() / "counter");
  ASSERT_TRUE(digest.ok()) << digest.status();
  EXPECT_EQ(core::DigestToHex(digest->digest), pushed.bundle_digest());
  EXPECT_EQ(pushed.bundle_digest(),
            core::DigestToHex(core::DigestBundle(TestBundleDir("counter_v1"))->digest));
  EXPECT_THAT(DeployRootEntries(), ElementsAre("counter"));
  auto found = FindContract("test.counter@1");
  ASSERT_TRUE(found.status.ok()) << ToString(found.status);
  EXPECT_EQ(found.response.provider_bundle_name(), "counter");
}

TEST_F(PushBundleTest, APushOfALoadedBundleReloadsItAndReplacesItsFiles) {
  ASSERT_NO_FATAL_FAILURE(StartPushHost());
  PushOk("counter_v1", v1::PUSH_OUTCOME_LOADED);
  const v1::PushBundleResponse pushed = PushOk("counter_v2", v1::PUSH_OUTCOME_RELOADED);
  ASSERT_EQ(pushed.events_size(), 2);
  EXPECT_EQ(pushed.events(0).phase(), v1::PHASE_PREPARING);
  EXPECT_EQ(VersionString(pushed.events(0).bundle_version()), "1.0.0");
  EXPECT_EQ(pushed.events(1).phase(), v1::PHASE_RELOADED);
  EXPECT_EQ(VersionString(pushed.events(1).bundle_version()), "2.0.0");
  EXPECT_EQ(ReadFile(deploy_root() / "counter" / "manifest.toml"),
            ReadFile(TestBundleDir("counter_v2") / "manifest.toml"));
  // The files of version 1 are gone, not parked in the staging directory.
  EXPECT_THAT(DeployRootEntries(), ElementsAre("counter"));
}

TEST_F(PushBundleTest, APushThatDoesNotReloadPutsThePreviousFilesBack) {
  ASSERT_NO_FATAL_FAILURE(StartPushHost());
  PushOk("counter_v1", v1::PUSH_OUTCOME_LOADED);
  // Version 2 with a truncated artifact: intact on the wire (its digests match what is
  // sent), but not loadable.
  const TempDir work;
  const fs::path broken = CopyBundle(TestBundleDir("counter_v2"), work.path() / "counter");
  for (const auto& entry : fs::directory_iterator(broken)) {
    if (entry.path().extension() == ".so") fs::resize_file(entry.path(), 4096);
  }
  auto result = Send(UploadOf(broken));
  ASSERT_TRUE(result.status.ok()) << ToString(result.status);
  EXPECT_EQ(result.response.outcome(), v1::PUSH_OUTCOME_FAILED);
  EXPECT_EQ(result.response.reason(), v1::FAILURE_REASON_ARTIFACT_NOT_LOADABLE)
      << result.response.message();
  ASSERT_GE(result.response.events_size(), 1);
  EXPECT_EQ(result.response.events().rbegin()->phase(), v1::PHASE_FAILED);
  ExpectCounterV1StillServes();
}

TEST_F(PushBundleTest, ANewBundleThatDoesNotLoadLeavesNoDirectory) {
  ASSERT_NO_FATAL_FAILURE(StartPushHost());
  auto result = Send(UploadOf(TestBundleDir("init_fails")));
  ASSERT_TRUE(result.status.ok()) << ToString(result.status);
  EXPECT_EQ(result.response.outcome(), v1::PUSH_OUTCOME_FAILED);
  EXPECT_EQ(result.response.reason(), v1::FAILURE_REASON_INIT_FAILED);
  EXPECT_THAT(result.response.message(), HasSubstr("refused on purpose"));
  EXPECT_FALSE(result.response.has_bundle());
  EXPECT_THAT(DeployRootEntries(), IsEmpty());
}

class PushBundleRefusalTest : public PushBundleTest {
 protected:
  void SetUp() override {
    PushBundleTest::SetUp();
    ASSERT_NO_FATAL_FAILURE(StartPushHost({"--max-bundle-bytes", "8000000"}));
    PushOk("counter_v1", v1::PUSH_OUTCOME_LOADED);
    upload_ = UploadOf(TestBundleDir("counter_v2"));
  }
  Upload upload_;
};

TEST_F(PushBundleRefusalTest, ATruncatedUploadIsIncomplete) {
  ExpectRefused(upload_, grpc::StatusCode::INVALID_ARGUMENT, "UPLOAD_INCOMPLETE",
                absl::StrCat("ended after 1000 of ", upload_.bytes.size(), " bytes"), 1000);
}

TEST_F(PushBundleRefusalTest, AnUploadLargerThanTheLimitIsRefusedBeforeItsBytes) {
  v1::PushedFile* big = upload_.header.add_files();
  big->set_path("assets/level.bin");
  big->set_size(8000001);
  big->set_sha256(std::string(64, '0'));
  // Refused at the header: the host does not wait for (or store) the 8 MB.
  ExpectRefused(upload_, grpc::StatusCode::RESOURCE_EXHAUSTED, "BUNDLE_TOO_LARGE",
                "--max-bundle-bytes", 0);
}

TEST_F(PushBundleRefusalTest, AFileWhoseBytesDoNotMatchItsSha256IsRefused) {
  upload_.bytes[upload_.bytes.size() / 2] ^= 0x55;
  ExpectRefused(upload_, grpc::StatusCode::INVALID_ARGUMENT, "DIGEST_MISMATCH",
                " bytes received is ");
}

TEST_F(PushBundleRefusalTest, AWrongBundleDigestIsRefused) {
  upload_.header.set_bundle_digest(std::string(64, 'a'));
  ExpectRefused(upload_, grpc::StatusCode::INVALID_ARGUMENT, "DIGEST_MISMATCH",
                "the bundle digest of the files received is");
}

TEST_F(PushBundleRefusalTest, PathsThatLeaveTheBundleAreRefused) {
  for (const std::string& path :
       std::vector<std::string>{"../counter/evil.so", "/etc/evil", "a/../../evil", "a//b",
                                "./manifest.toml", std::string("a\0b", 3)}) {
    SCOPED_TRACE(path);
    Upload upload = upload_;
    upload.header.mutable_files(0)->set_path(path);
    ExpectRefused(upload, grpc::StatusCode::INVALID_ARGUMENT, "UPLOAD_PATH_INVALID", "path");
  }
  // Nothing was written beside the deploy root either.
  EXPECT_FALSE(fs::exists(deploy_root().parent_path() / "evil"));
  EXPECT_FALSE(fs::exists(deploy_root() / "evil"));
}

TEST_F(PushBundleRefusalTest, APathGivenTwiceIsRefused) {
  *upload_.header.add_files() = upload_.header.files(0);
  ExpectRefused(upload_, grpc::StatusCode::INVALID_ARGUMENT, "UPLOAD_PATH_INVALID",
                "appears twice");
}

TEST_F(PushBundleRefusalTest, BytesBeyondTheDeclaredSizesAreRefused) {
  upload_.bytes += "trailing";
  ExpectRefused(upload_, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_ARGUMENT",
                "more bytes than its header declares");
}

TEST_F(PushBundleRefusalTest, AManifestNamingAnotherBundleIsRefused) {
  upload_.header.set_bundle_name("other");
  ExpectRefused(upload_, grpc::StatusCode::INVALID_ARGUMENT, "MANIFEST_INVALID",
                "names bundle \"counter\"");
}

// The digests may follow the bytes instead (HostClient sends them so, hashing each file as
// it sends it): the same checks apply once they arrive.
TEST_F(PushBundleTest, DigestsSentAfterTheBytesAreCheckedThen) {
  ASSERT_NO_FATAL_FAILURE(StartPushHost());
  const Upload upload = WithDigestsLast(UploadOf(TestBundleDir("counter_v1")));
  auto result = Send(upload);
  ASSERT_TRUE(result.status.ok()) << ToString(result.status);
  EXPECT_EQ(result.response.outcome(), v1::PUSH_OUTCOME_LOADED);
  EXPECT_EQ(result.response.bundle_digest(), upload.digests_last->bundle_digest());
  EXPECT_EQ(result.response.bytes_received(), upload.bytes.size());
  EXPECT_THAT(DeployRootEntries(), ElementsAre("counter"));
}

// A push with a request_id runs once. The request is the header with its digests, wherever
// they were sent: a retry may send them first (answered before its bytes) or last.
TEST_F(PushBundleTest, ARetriedPushGetsTheFirstOutcomeWhereverItsDigestsAre) {
  ASSERT_NO_FATAL_FAILURE(StartPushHost());
  Upload first = UploadOf(TestBundleDir("counter_v1"));
  first.header.set_request_id("ci-build-41");
  auto pushed = Send(WithDigestsLast(first));
  ASSERT_TRUE(pushed.status.ok()) << ToString(pushed.status);
  ASSERT_EQ(pushed.response.outcome(), v1::PUSH_OUTCOME_LOADED);
  for (const Upload& retry : {WithDigestsLast(first), first}) {
    SCOPED_TRACE(retry.digests_last ? "digests last" : "digests in the header");
    auto again = Send(retry);
    ASSERT_TRUE(again.status.ok()) << ToString(again.status);
    // Run again, it would have been a reload.
    EXPECT_EQ(again.response.outcome(), v1::PUSH_OUTCOME_LOADED);
    EXPECT_EQ(again.response.reload_id(), pushed.response.reload_id());
    EXPECT_EQ(again.response.registry_revision(), pushed.response.registry_revision());
    EXPECT_THAT(DeployRootEntries(), ElementsAre("counter"));
  }
  // The same id for other bytes is refused, and changes nothing.
  Upload other = UploadOf(TestBundleDir("counter_v2"));
  other.header.set_request_id("ci-build-41");
  for (const Upload& reuse : {WithDigestsLast(other), other}) {
    auto refused = Send(reuse);
    EXPECT_EQ(ReasonTokenOf(refused.status), "REQUEST_ID_REUSED") << ToString(refused.status);
    EXPECT_THAT(DeployRootEntries(), ElementsAre("counter"));
  }
  auto found = FindContract("test.counter@1");
  ASSERT_TRUE(found.status.ok()) << ToString(found.status);
  EXPECT_EQ(VersionString(found.response.provider_version()), "1.0.0");
}

TEST_F(PushBundleRefusalTest, AnUploadWhoseDigestsNeverCameIsIncomplete) {
  Upload upload = WithDigestsLast(upload_);
  upload.digests_last.reset();
  ExpectRefused(upload, grpc::StatusCode::INVALID_ARGUMENT, "UPLOAD_INCOMPLETE",
                "without its 'digests' message");
}

TEST_F(PushBundleRefusalTest, AWrongFileDigestSentLastIsRefused) {
  Upload upload = WithDigestsLast(upload_);
  upload.digests_last->set_file_sha256(1, std::string(64, 'b'));
  ExpectRefused(upload, grpc::StatusCode::INVALID_ARGUMENT, "DIGEST_MISMATCH",
                absl::StrCat("file \"", upload.header.files(1).path(), "\": the SHA-256"));
}

TEST_F(PushBundleRefusalTest, AWrongBundleDigestSentLastIsRefused) {
  Upload upload = WithDigestsLast(upload_);
  upload.digests_last->set_bundle_digest(std::string(64, 'c'));
  ExpectRefused(upload, grpc::StatusCode::INVALID_ARGUMENT, "DIGEST_MISMATCH",
                "the bundle digest of the files received is");
}

TEST_F(PushBundleRefusalTest, DigestsMustNameEveryFileOnce) {
  Upload upload = WithDigestsLast(upload_);
  upload.digests_last->mutable_file_sha256()->RemoveLast();
  ExpectRefused(upload, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_ARGUMENT",
                "one SHA-256 per file");
}

TEST_F(PushBundleRefusalTest, DataAfterTheDigestsIsRefused) {
  Upload upload = WithDigestsLast(upload_);
  const size_t half = upload.bytes.size() / 2;
  // The digests message in the middle of the bytes: it must be the last.
  auto context = host().NewContext();
  v1::PushBundleResponse response;
  auto writer = host().stub().PushBundle(context.get(), &response);
  v1::PushBundleRequest message;
  *message.mutable_header() = upload.header;
  bool open = writer->Write(message);
  message.set_data(upload.bytes.substr(0, half));
  open = open && writer->Write(message);
  *message.mutable_digests() = *upload.digests_last;
  open = open && writer->Write(message);
  message.set_data(upload.bytes.substr(half));
  if (open && writer->Write(message)) writer->WritesDone();
  const grpc::Status status = writer->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << ToString(status);
  EXPECT_THAT(status.error_message(), HasSubstr("'data' after its 'digests' message"));
  ExpectCounterV1StillServes();
}

TEST_F(PushBundleRefusalTest, DigestsGoInOnePlace) {
  // In the header and again last.
  Upload both = upload_;
  both.digests_last = WithDigestsLast(upload_).digests_last;
  ExpectRefused(both, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_ARGUMENT",
                "header carried the digests already");
  // Some in the header: every file's sha256 there needs the bundle digest there too.
  Upload some = upload_;
  some.header.clear_bundle_digest();
  ExpectRefused(some, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_ARGUMENT",
                "has a 'sha256' but the header has no 'bundle_digest'");
}

TEST_F(PushBundleRefusalTest, AnUploadWithoutItsHeaderIsRefused) {
  auto context = host().NewContext();
  v1::PushBundleResponse response;
  auto writer = host().stub().PushBundle(context.get(), &response);
  v1::PushBundleRequest data;
  data.set_data("bytes before any header");
  writer->Write(data);
  writer->WritesDone();
  const grpc::Status status = writer->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << ToString(status);
  EXPECT_THAT(status.error_message(), HasSubstr("must be its 'header'"));
  ExpectCounterV1StillServes();
}

TEST_F(PushBundleRefusalTest, AClientThatCancelsMidUploadLeavesNothing) {
  // One file more than the push SetUp made, so that the host's "receiving" line for this
  // upload differs from that push's.
  v1::PushedFile* notes = upload_.header.add_files();
  notes->set_path("notes.txt");
  notes->set_size(5);
  notes->set_sha256(std::string(64, '0'));
  auto context = host().NewContext();
  v1::PushBundleResponse response;
  auto writer = host().stub().PushBundle(context.get(), &response);
  v1::PushBundleRequest header;
  *header.mutable_header() = upload_.header;
  ASSERT_TRUE(writer->Write(header));
  v1::PushBundleRequest data;
  data.set_data(upload_.bytes.substr(0, 4096));
  ASSERT_TRUE(writer->Write(data));
  // The host took the header (its staging directory exists) when the client goes away; it
  // drops what it has and says so.
  auto receiving =
      host().WaitForStderrLine(absl::StrCat(" in ", upload_.header.files_size(), " files"));
  ASSERT_TRUE(receiving.ok()) << receiving.status();
  context->TryCancel();
  EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::CANCELLED);
  auto line = host().WaitForStderrLine("cancelled by the client; nothing was placed");
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_THAT(*line, HasSubstr("push of counter"));
  ExpectCounterV1StillServes();
}

TEST_F(PushBundleRefusalTest, ConcurrentPushesOfOneBundleRunOneAfterTheOther) {
  // Eight pushes at once, alternating versions 1 and 2: each is one whole reload, and the
  // files in place at the end are those of the version running.
  const Upload v1_upload = UploadOf(TestBundleDir("counter_v1"));
  std::vector<std::thread> threads;
  std::vector<CallResult<v1::PushBundleResponse>> results(8);
  for (size_t i = 0; i < results.size(); ++i) {
    threads.emplace_back([&, i] { results[i] = Send(i % 2 == 0 ? upload_ : v1_upload, 16 << 10); });
  }
  for (std::thread& t : threads) t.join();
  std::vector<uint64_t> reload_ids;
  for (const auto& result : results) {
    ASSERT_TRUE(result.status.ok()) << ToString(result.status);
    EXPECT_EQ(result.response.outcome(), v1::PUSH_OUTCOME_RELOADED);
    ASSERT_EQ(result.response.events_size(), 2) << result.response.ShortDebugString();
    // PREPARING and RELOADED of one reload are adjacent: no push interleaved with another.
    EXPECT_EQ(result.response.events(1).seq(), result.response.events(0).seq() + 1);
    reload_ids.push_back(result.response.reload_id());
  }
  std::sort(reload_ids.begin(), reload_ids.end());
  EXPECT_EQ(std::unique(reload_ids.begin(), reload_ids.end()), reload_ids.end());
  auto found = FindContract("test.counter@1");
  ASSERT_TRUE(found.status.ok()) << ToString(found.status);
  const std::string running = VersionString(found.response.provider_version());
  EXPECT_EQ(
      ReadFile(deploy_root() / "counter" / "manifest.toml"),
      ReadFile(TestBundleDir(running == "1.0.0" ? "counter_v1" : "counter_v2") / "manifest.toml"));
  EXPECT_THAT(DeployRootEntries(), ElementsAre("counter"));
}

TEST_F(PushBundleTest, AFullDiskIsAClearErrorAndLeavesNothing) {
  // The host may write no file above 2 MB: its disk is full for a 3 MB asset.
  HostProcess limited({"--bundles", root().string(), "--deploy-root", deploy_root().string()});
  limited.SetFileSizeLimit(2 << 20);
  ASSERT_TRUE(limited.Start().ok());
  const TempDir work;
  const fs::path bundle = CopyBundle(TestBundleDir("counter_v1"), work.path() / "counter");
  WriteFile(bundle / "level.bin", std::string(3 << 20, 'x'));
  const Upload upload = UploadOf(bundle);
  auto context = limited.NewContext();
  v1::PushBundleResponse response;
  auto writer = limited.stub().PushBundle(context.get(), &response);
  v1::PushBundleRequest header;
  *header.mutable_header() = upload.header;
  bool open = writer->Write(header);
  for (size_t at = 0; open && at < upload.bytes.size(); at += 1 << 20) {
    v1::PushBundleRequest data;
    data.set_data(upload.bytes.substr(at, 1 << 20));
    open = writer->Write(data);
  }
  if (open) writer->WritesDone();
  const grpc::Status status = writer->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << ToString(status);
  EXPECT_EQ(ReasonTokenOf(status), "NO_SPACE") << ToString(status);
  EXPECT_THAT(status.error_message(), HasSubstr("level.bin"));
  EXPECT_THAT(DeployRootEntries(), IsEmpty());
  // Still serving, and a bundle that fits is taken.
  auto context2 = limited.NewContext();
  v1::HostInfo info;
  EXPECT_TRUE(limited.stub().GetHostInfo(context2.get(), v1::GetHostInfoRequest(), &info).ok());
}

TEST_F(PushBundleTest, AHostWithoutADeployRootRefusesPushes) {
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto result = Send(UploadOf(TestBundleDir("counter_v1")));
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << ToString(result.status);
  EXPECT_EQ(ReasonTokenOf(result.status), "NO_DEPLOY_ROOT");
  EXPECT_THAT(result.status.error_message(), HasSubstr("--deploy-root"));
}

TEST_F(PushBundleTest, ABundleLoadedFromAnotherRootIsNotReplacedByAPush) {
  Copy("counter_v1");  // loaded from the bundle root, not the deploy root
  ASSERT_NO_FATAL_FAILURE(StartPushHost());
  auto result = Send(UploadOf(TestBundleDir("counter_v2")));
  ASSERT_TRUE(result.status.ok()) << ToString(result.status);
  EXPECT_EQ(result.response.outcome(), v1::PUSH_OUTCOME_FAILED);
  EXPECT_EQ(result.response.reason(), v1::FAILURE_REASON_BUNDLE_ALREADY_LOADED);
  EXPECT_THAT(result.response.message(), HasSubstr("outside the deploy root"));
  EXPECT_THAT(DeployRootEntries(), IsEmpty());
}

TEST_F(PushBundleTest, ADeployRootServesOneHostAndForgetsWhatAKilledHostLeft) {
  // What a host killed mid-upload leaves: a bundle it placed, and a half upload.
  CopyTestBundle("counter_v1", deploy_root());
  fs::rename(deploy_root() / "counter_v1", deploy_root() / "counter");
  fs::create_directories(deploy_root() / ".polyplug-staging" / "counter.7" / "half");
  WriteFile(deploy_root() / ".polyplug-staging" / "counter.7" / "half" / "lib.so", "partial");
  ASSERT_NO_FATAL_FAILURE(StartPushHost());
  // The next host loads what was placed and drops the half upload.
  EXPECT_THAT(DeployRootEntries(), ElementsAre("counter"));
  EXPECT_THAT(BundleNames(ListBundles()), ElementsAre("counter"));
  // A second host on the same deploy root is refused at start, naming the lock.
  HostProcess second({"--deploy-root", deploy_root().string()});
  const absl::Status started = second.Start();
  EXPECT_FALSE(started.ok());
  EXPECT_THAT(std::string(started.message()),
              HasSubstr("belongs to another running polyplug-host"));
  // And a push replaces the bundle the previous host placed.
  PushOk("counter_v2", v1::PUSH_OUTCOME_RELOADED);
}

// Pushes under each signature policy: the host checks bundle.sig on the first load and on
// every reload, and a refusal leaves the running version and its files in place.
class SignedPushTest : public PushBundleTest {
 protected:
  void SetUp() override {
    PushBundleTest::SetUp();
    auto trusted = core::GenerateSigningKey();
    auto other = core::GenerateSigningKey();
    ASSERT_TRUE(trusted.ok() && other.ok());
    trusted_.emplace(*trusted);
    other_.emplace(*other);
    ASSERT_TRUE(core::WriteKeyPair(keys_.path(), *trusted_).ok());
  }
  // The policy flags, trusting trusted_.
  std::vector<std::string> Policy(absl::string_view policy) const {
    return {"--signature-policy", std::string(policy), "--trusted-key",
            (keys_.path() / "verifying.key").string()};
  }
  // A copy of the built bundle `target`, signed by `key` (unsigned when null).
  fs::path Bundle(absl::string_view target, const core::SigningKey* key) {
    const fs::path dir = work_.path() / absl::StrCat("b", ++made_) / "counter";
    fs::create_directories(dir.parent_path());
    CopyBundle(TestBundleDir(target), dir);
    if (key != nullptr) {
      EXPECT_TRUE(core::SignBundle(dir, *key).ok());
    }
    return dir;
  }
  v1::PushBundleResponse Push(const fs::path& dir) {
    auto result = Send(UploadOf(dir));
    EXPECT_TRUE(result.status.ok()) << ToString(result.status);
    return result.response;
  }
  std::string TrustedHex() const { return core::PublicKeyToHex(trusted_->public_key()); }

  TempDir keys_, work_;
  std::optional<core::SigningKey> trusted_, other_;
  int made_ = 0;
};

TEST_F(SignedPushTest, UnderRequiredOnlyBundlesSignedByATrustedKeyLoadOrReload) {
  ASSERT_NO_FATAL_FAILURE(StartPushHost(Policy("required")));
  struct Case {
    const char* what;
    fs::path dir;
    v1::FailureReason reason;
  };
  fs::path tampered = Bundle("counter_v1", &*trusted_);
  WriteFile(tampered / "notes.txt", "added after signing");
  const std::vector<Case> refused = {
      {"unsigned", Bundle("counter_v1", nullptr), v1::FAILURE_REASON_UNSIGNED_BUNDLE},
      {"signed by an untrusted key", Bundle("counter_v1", &*other_),
       v1::FAILURE_REASON_UNTRUSTED_SIGNING_KEY},
      {"tampered after signing", tampered, v1::FAILURE_REASON_SIGNATURE_INVALID},
  };
  for (const Case& c : refused) {
    SCOPED_TRACE(c.what);
    const auto response = Push(c.dir);
    EXPECT_EQ(response.outcome(), v1::PUSH_OUTCOME_FAILED);
    EXPECT_EQ(response.reason(), c.reason) << response.message();
    EXPECT_THAT(DeployRootEntries(), IsEmpty());
  }
  const auto loaded = Push(Bundle("counter_v1", &*trusted_));
  ASSERT_EQ(loaded.outcome(), v1::PUSH_OUTCOME_LOADED) << loaded.message();
  EXPECT_EQ(loaded.bundle().signing_key(), TrustedHex());
  EXPECT_EQ(loaded.events(0).signing_key(), TrustedHex());

  // The reload is checked too; each refusal keeps version 1, signed, in place and serving.
  for (const Case& c : std::vector<Case>{
           {"unsigned v2", Bundle("counter_v2", nullptr), v1::FAILURE_REASON_UNSIGNED_BUNDLE},
           {"v2 signed by an untrusted key", Bundle("counter_v2", &*other_),
            v1::FAILURE_REASON_UNTRUSTED_SIGNING_KEY}}) {
    SCOPED_TRACE(c.what);
    const auto response = Push(c.dir);
    EXPECT_EQ(response.outcome(), v1::PUSH_OUTCOME_FAILED);
    EXPECT_EQ(response.reason(), c.reason) << response.message();
    // Refused before PREPARING: the instances were not dropped.
    ASSERT_EQ(response.events_size(), 1);
    EXPECT_EQ(response.events(0).phase(), v1::PHASE_FAILED);
    ExpectCounterV1StillServes();
    EXPECT_TRUE(fs::exists(deploy_root() / "counter" / "bundle.sig"));
  }
  const auto reloaded = Push(Bundle("counter_v2", &*trusted_));
  EXPECT_EQ(reloaded.outcome(), v1::PUSH_OUTCOME_RELOADED) << reloaded.message();
  EXPECT_EQ(reloaded.events().rbegin()->signing_key(), TrustedHex());
}

TEST_F(SignedPushTest, UnderWarnEverythingLoadsAndTheLogSaysWhatWasWrong) {
  ASSERT_NO_FATAL_FAILURE(StartPushHost(Policy("warn")));
  const auto loaded = Push(Bundle("counter_v1", nullptr));
  EXPECT_EQ(loaded.outcome(), v1::PUSH_OUTCOME_LOADED) << loaded.message();
  EXPECT_EQ(loaded.bundle().signing_key(), "");
  EXPECT_TRUE(host().WaitForStderrLine("UNSIGNED_BUNDLE").ok());
  const auto reloaded = Push(Bundle("counter_v2", &*other_));
  EXPECT_EQ(reloaded.outcome(), v1::PUSH_OUTCOME_RELOADED) << reloaded.message();
  EXPECT_TRUE(host().WaitForStderrLine("UNTRUSTED_SIGNING_KEY").ok());
}

TEST_F(SignedPushTest, UnderOffNothingIsChecked) {
  ASSERT_NO_FATAL_FAILURE(StartPushHost());
  fs::path tampered = Bundle("counter_v1", &*other_);
  WriteFile(tampered / "notes.txt", "added after signing");
  const auto loaded = Push(tampered);
  EXPECT_EQ(loaded.outcome(), v1::PUSH_OUTCOME_LOADED) << loaded.message();
  EXPECT_EQ(loaded.bundle().signing_key(), "");
}

TEST_F(SignedPushTest, BadPolicyFlagsStopTheHostAtStart) {
  HostProcess bogus({"--signature-policy", "sometimes"});
  absl::Status started = bogus.Start();
  EXPECT_FALSE(started.ok());
  EXPECT_THAT(std::string(started.message()), HasSubstr("--signature-policy"));
  HostProcess missing(
      {"--signature-policy", "required", "--trusted-key", (keys_.path() / "no-such.key").string()});
  started = missing.Start();
  EXPECT_FALSE(started.ok());
  EXPECT_THAT(std::string(started.message()), HasSubstr("no-such.key"));
}

}  // namespace
}  // namespace polyplug::test
