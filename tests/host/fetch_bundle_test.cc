// FetchBundle against the real polyplug-host: a loaded bundle's files come back as the
// messages of a PushBundle upload (the header with every file's size, SHA-256 and
// executable bit and the bundle digest, then the bytes), which reassemble byte for byte into
// the bundle directory and load on another host when pushed there as they are. Requests the
// host cannot serve are clear errors; a client that goes away mid-stream, or a file that
// changes while it is sent, ends the stream and leaves the host serving.
//
// Nothing sleeps: tests wait on stream reads, call completions and the host's log lines.
// The tests that stop mid-stream read through a channel without BDP probing, so that
// HTTP/2 flow control keeps the host at most a few chunks ahead of what they read.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "host/host_calls.h"
#include "host/host_fixture.h"
#include "host/host_process_fixture.h"
#include "host/src/fetch_reactor.h"
#include "host/src/grpc_workarounds.h"
#include "host/src/operation_worker.h"
#include "host/src/phase_stream.h"
#include "host/src/plugin_host_service.h"
#include "host/src/remote_instances.h"
#include "polyplug/core/bundle_signature.h"
#include "polyplug/core/manifest.h"
#include "polyplug/core/runtime.h"
#include "polyplug/host/v1/host.grpc.pb.h"
#include "support/bundle_fixture.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::polyplug::host::v1;
using ::testing::HasSubstr;

constexpr size_t kMiB = 1 << 20;

// What a FetchBundle stream brought.
struct Fetched {
  grpc::Status status;
  std::vector<v1::PushBundleRequest> messages;
  std::string trailing_reason;

  // The file bytes of its `data` messages, in order.
  std::string Bytes() const {
    std::string bytes;
    for (const v1::PushBundleRequest& m : messages) bytes += m.data();
    return bytes;
  }
};

v1::FetchBundleRequest Request(const std::string& name, const std::string& digest) {
  v1::FetchBundleRequest request;
  request.set_bundle_name(name);
  request.set_bundle_digest(digest);
  return request;
}

// Reads a whole FetchBundle stream.
Fetched FetchFrom(v1::PluginHost::Stub& stub, std::unique_ptr<grpc::ClientContext> context,
                  const std::string& name, const std::string& digest) {
  Fetched fetched;
  auto reader = stub.FetchBundle(context.get(), Request(name, digest));
  for (v1::PushBundleRequest message; reader->Read(&message); message.Clear()) {
    fetched.messages.push_back(message);
  }
  fetched.status = reader->Finish();
  fetched.trailing_reason = TrailingReasonOf(*context);
  return fetched;
}

// The SHA-256 of the file at `path`, lowercase hex (Sha256OfFile's, which says "" for an
// empty file).
std::string Sha256Of(const fs::path& path) {
  if (fs::file_size(path) == 0) {
    return "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
  }
  return Sha256OfFile(path);
}

std::string DigestOf(const fs::path& dir) {
  absl::StatusOr<core::BundleDigest> digest = core::DigestBundle(dir);
  EXPECT_TRUE(digest.ok()) << digest.status();
  return digest.ok() ? core::DigestToHex(digest->digest) : "";
}

// Every regular file below `dir`, by relative path in byte order (found here without the
// core's listing, which the host uses).
std::vector<std::string> FilesUnder(const fs::path& dir) {
  std::vector<std::string> paths;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) {
      paths.push_back(entry.path().lexically_relative(dir).generic_string());
    }
  }
  std::sort(paths.begin(), paths.end());
  return paths;
}

// Writes the files `fetched` carries into `out` (created), as its header lays them out.
void Reassemble(const Fetched& fetched, const fs::path& out) {
  ASSERT_FALSE(fetched.messages.empty());
  const std::string bytes = fetched.Bytes();
  size_t at = 0;
  for (const v1::PushedFile& file : fetched.messages[0].header().files()) {
    ASSERT_LE(at + file.size(), bytes.size()) << "the stream ends within " << file.path();
    fs::create_directories((out / file.path()).parent_path());
    WriteFile(out / file.path(), absl::string_view(bytes).substr(at, file.size()));
    at += file.size();
  }
  EXPECT_EQ(at, bytes.size()) << "bytes beyond the header's files";
}

// Expects `fetched` to be exactly what a push of the bundle directory `dir` sends: a header
// naming every file of `dir` (bundle.sig included) with its size, SHA-256 and executable
// bit, in byte order, and the bundle digest; then non-empty `data` messages of at most
// `max_chunk` bytes that reassemble byte for byte into the files, and nothing else.
void ExpectUploadOf(const Fetched& fetched, const fs::path& dir, size_t max_chunk = kMiB) {
  ASSERT_TRUE(fetched.status.ok()) << ToString(fetched.status);
  ASSERT_FALSE(fetched.messages.empty());
  ASSERT_EQ(fetched.messages[0].part_case(), v1::PushBundleRequest::kHeader);
  const v1::PushBundleHeader& header = fetched.messages[0].header();
  absl::StatusOr<core::Manifest> manifest = core::LoadManifest(dir);
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  EXPECT_EQ(header.bundle_name(), manifest->name);
  EXPECT_EQ(header.bundle_digest(), DigestOf(dir));
  EXPECT_EQ(header.request_id(), "");
  std::vector<std::string> paths;
  for (const v1::PushedFile& file : header.files()) {
    paths.push_back(file.path());
    EXPECT_EQ(file.size(), fs::file_size(dir / file.path())) << file.path();
    EXPECT_EQ(file.sha256(), Sha256Of(dir / file.path())) << file.path();
    EXPECT_EQ(file.executable(), (fs::status(dir / file.path()).permissions() &
                                  fs::perms::owner_exec) != fs::perms::none)
        << file.path();
  }
  EXPECT_EQ(paths, FilesUnder(dir));
  for (size_t i = 1; i < fetched.messages.size(); ++i) {
    ASSERT_EQ(fetched.messages[i].part_case(), v1::PushBundleRequest::kData) << "message " << i;
    EXPECT_FALSE(fetched.messages[i].data().empty()) << "message " << i;
    EXPECT_LE(fetched.messages[i].data().size(), max_chunk) << "message " << i;
  }
  const TempDir out;
  ASSERT_NO_FATAL_FAILURE(Reassemble(fetched, out.path()));
  for (const std::string& path : paths) {
    EXPECT_TRUE(ReadFile(out.path() / path) == ReadFile(dir / path)) << path << " differs";
  }
  EXPECT_EQ(DigestOf(out.path()), header.bundle_digest());
}

// Writes `size` bytes of a pattern that repeats only every 251 * 256 bytes to `path`.
void WriteBigFile(const fs::path& path, size_t size) {
  std::string period(251 * 256, '\0');
  for (size_t i = 0; i < period.size(); ++i) {
    period[i] = static_cast<char>((i % 251) ^ (i / 251));
  }
  std::string bytes;
  bytes.reserve(size + period.size());
  while (bytes.size() < size) bytes += period;
  bytes.resize(size);
  fs::create_directories(path.parent_path());
  WriteFile(path, bytes);
}

class FetchBundleTest : public HostProcessTest {
 protected:
  Fetched Fetch(const std::string& name, const std::string& digest) {
    return FetchFrom(host().stub(), host().NewContext(), name, digest);
  }

  // The counter bundle in the bundle root with a `size`-byte asset and two empty files
  // around it (so that chunks span files and empty files sit at a chunk's end).
  fs::path BigCounter(size_t size) {
    const fs::path dir = Copy("counter_v1");
    fs::create_directories(dir / "assets");
    WriteFile(dir / "assets" / "a-empty.dat", "");
    WriteBigFile(dir / "assets" / "level.bin", size);
    WriteFile(dir / "assets" / "level.bin.notes", "");
    return dir;
  }

  // A stub whose channel does not probe the bandwidth-delay product, so that each stream's
  // HTTP/2 window stays at 64 KiB: a host writing to a reader that does not read is held a
  // few chunks ahead of it.
  std::unique_ptr<v1::PluginHost::Stub> SlowReaderStub() {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    return host().NewStub(args);
  }
};

TEST_F(FetchBundleTest, AFetchSendsTheFilesOfTheLoadedBundleAsAPushWould) {
  const fs::path dir = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const Fetched fetched = Fetch("counter", DigestOf(dir));
  ExpectUploadOf(fetched, dir);
  ASSERT_EQ(fetched.messages[0].header().files_size(), 2);
  // The artifact is executable, the manifest not: the header says so, as a push would.
  EXPECT_EQ(fetched.messages[0].header().files(0).path(), "libcounter.so");
  EXPECT_TRUE(fetched.messages[0].header().files(0).executable());
  EXPECT_FALSE(fetched.messages[0].header().files(1).executable());
  // One line in the host's log when it ends.
  auto line = host().WaitForStderrLine("polyplug-host: fetch of counter: sent ");
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_THAT(*line, HasSubstr(absl::StrCat("sent ", fetched.Bytes().size(), " bytes in 2 files")));
}

TEST_F(FetchBundleTest, ASignedBundleSendsItsSignatureAsOneOfItsFiles) {
  const fs::path dir = Copy("counter_v1");
  absl::StatusOr<core::SigningKey> key = core::GenerateSigningKey();
  ASSERT_TRUE(key.ok()) << key.status();
  ASSERT_TRUE(core::SignBundle(dir, *key).ok());
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const Fetched fetched = Fetch("counter", DigestOf(dir));
  ExpectUploadOf(fetched, dir);
  std::vector<std::string> paths;
  for (const v1::PushedFile& f : fetched.messages[0].header().files()) paths.push_back(f.path());
  EXPECT_THAT(paths, ::testing::ElementsAre("bundle.sig", "libcounter.so", "manifest.toml"));
  // The digest is the signed one, which leaves bundle.sig out.
  auto signature = core::ParseBundleSignature(ReadFile(dir / "bundle.sig"));
  ASSERT_TRUE(signature.ok()) << signature.status();
  EXPECT_EQ(fetched.messages[0].header().bundle_digest(), DigestOf(dir));
}

TEST_F(FetchBundleTest, ABundleOfManyChunksArrivesIntact) {
  // 5 MiB and a bit: six chunks, the last partial, spanning the asset and the next files.
  const fs::path dir = BigCounter(5 * kMiB + 1000);
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const Fetched fetched = Fetch("counter", DigestOf(dir));
  ExpectUploadOf(fetched, dir);
  EXPECT_GE(fetched.messages.size(), 7u);
  EXPECT_EQ(fetched.messages[1].data().size(), kMiB);
}

TEST_F(FetchBundleTest, ABundleThatIsNotLoadedIsNotFound) {
  const fs::path dir = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const Fetched fetched = Fetch("greeter", DigestOf(dir));
  EXPECT_EQ(fetched.status.error_code(), grpc::StatusCode::NOT_FOUND) << ToString(fetched.status);
  EXPECT_EQ(ReasonTokenOf(fetched.status), "BUNDLE_NOT_FOUND");
  EXPECT_EQ(fetched.trailing_reason, "BUNDLE_NOT_FOUND");
  EXPECT_THAT(fetched.status.error_message(), HasSubstr("\"greeter\""));
  EXPECT_TRUE(fetched.messages.empty());
  auto line = host().WaitForStderrLine("fetch of greeter refused: [BUNDLE_NOT_FOUND]");
  EXPECT_TRUE(line.ok()) << line.status();
}

TEST_F(FetchBundleTest, AnotherDigestThanTheHostsIsAFailedPrecondition) {
  const fs::path dir = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const std::string wanted(64, 'a');
  const Fetched fetched = Fetch("counter", wanted);
  EXPECT_EQ(fetched.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << ToString(fetched.status);
  EXPECT_EQ(ReasonTokenOf(fetched.status), "DIGEST_MISMATCH");
  EXPECT_EQ(fetched.trailing_reason, "DIGEST_MISMATCH");
  // Which digest the host has, and which was asked for.
  EXPECT_THAT(
      fetched.status.error_message(),
      HasSubstr(absl::StrCat("has bundle digest ", DigestOf(dir), ", not the requested ", wanted)));
  EXPECT_TRUE(fetched.messages.empty());
  auto line = host().WaitForStderrLine("fetch of counter after 0 bytes failed: [DIGEST_MISMATCH]");
  EXPECT_TRUE(line.ok()) << line.status();
}

TEST_F(FetchBundleTest, AMalformedRequestIsAnInvalidArgumentNamingTheField) {
  const fs::path dir = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const std::string digest = DigestOf(dir);
  std::string upper = digest;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  struct Case {
    std::string name, digest, field;
  };
  for (const Case& c :
       std::vector<Case>{{"", digest, "'bundle_name'"},
                         {std::string(2000, 'x'), digest, "'bundle_name'"},
                         {"counter", "", "'bundle_digest'"},
                         {"counter", digest.substr(1), "'bundle_digest'"},
                         {"counter", upper, "'bundle_digest'"},
                         {"counter", std::string(63, 'a') + "g", "'bundle_digest'"}}) {
    SCOPED_TRACE(c.name.substr(0, 20) + " / " + c.digest);
    const Fetched fetched = Fetch(c.name, c.digest);
    EXPECT_EQ(fetched.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << ToString(fetched.status);
    EXPECT_EQ(ReasonTokenOf(fetched.status), "INVALID_ARGUMENT");
    EXPECT_THAT(fetched.status.error_message(), HasSubstr(c.field));
    EXPECT_TRUE(fetched.messages.empty());
  }
}

TEST_F(FetchBundleTest, WithATokenFileAFetchWithoutTheTokenIsUnauthenticated) {
  const fs::path dir = Copy("counter_v1");
  const fs::path token_file = scratch().path() / "token";
  WriteFile(token_file, "fetch-token\n");
  ASSERT_NO_FATAL_FAILURE(StartHost({"--auth-token-file", token_file.string()}, "fetch-token"));
  auto bare = std::make_unique<grpc::ClientContext>();
  bare->set_deadline(std::chrono::system_clock::now() + kCallDeadline);
  const Fetched refused = FetchFrom(host().stub(), std::move(bare), "counter", DigestOf(dir));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << ToString(refused.status);
  EXPECT_EQ(ReasonTokenOf(refused.status), "PERMISSION_DENIED");
  EXPECT_TRUE(refused.messages.empty());
  // With it (the fixture's contexts carry it), the same fetch goes through.
  ExpectUploadOf(Fetch("counter", DigestOf(dir)), dir);
}

TEST_F(FetchBundleTest, AClientThatCancelsMidStreamLeavesTheHostServing) {
  const fs::path dir = BigCounter(8 * kMiB);
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const std::string digest = DigestOf(dir);
  {
    auto stub = SlowReaderStub();
    auto context = host().NewContext();
    auto reader = stub->FetchBundle(context.get(), Request("counter", digest));
    v1::PushBundleRequest message;
    ASSERT_TRUE(reader->Read(&message));
    ASSERT_EQ(message.part_case(), v1::PushBundleRequest::kHeader);
    ASSERT_TRUE(reader->Read(&message));
    ASSERT_EQ(message.part_case(), v1::PushBundleRequest::kData);
    context->TryCancel();
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  // The host stops reading, says so, and serves the next fetch whole.
  auto line = host().WaitForStderrLine("cancelled by the client");
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_THAT(*line, HasSubstr("polyplug-host: fetch of counter after "));
  ExpectUploadOf(Fetch("counter", digest), dir);
  ReloadOk("counter");
}

TEST_F(FetchBundleTest, AFileThatChangesWhileItIsSentEndsTheStreamWithAnError) {
  const fs::path dir = BigCounter(8 * kMiB);
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const std::string digest = DigestOf(dir);
  auto stub = SlowReaderStub();
  auto context = host().NewContext();
  auto reader = stub->FetchBundle(context.get(), Request("counter", digest));
  v1::PushBundleRequest message;
  ASSERT_TRUE(reader->Read(&message));
  ASSERT_EQ(message.part_case(), v1::PushBundleRequest::kHeader);
  // The host is a few chunks into the asset at most (this reader took none of its bytes):
  // it reaches the new end of the file before the declared one.
  fs::resize_file(dir / "assets" / "level.bin", 4 * kMiB);
  uint64_t received = 0;
  while (reader->Read(&message)) received += message.data().size();
  const grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ABORTED) << ToString(status);
  EXPECT_EQ(ReasonTokenOf(status), "DIGEST_MISMATCH");
  EXPECT_EQ(TrailingReasonOf(*context), "DIGEST_MISMATCH");
  EXPECT_THAT(status.error_message(), HasSubstr("file \"assets/level.bin\""));
  EXPECT_THAT(status.error_message(), HasSubstr("changed while it was sent"));
  EXPECT_LE(received, 4 * kMiB);
  auto line = host().WaitForStderrLine("failed: [DIGEST_MISMATCH] file \"assets/level.bin\"");
  EXPECT_TRUE(line.ok()) << line.status();
  // The host has the bundle's new digest now, and serves it.
  ExpectUploadOf(Fetch("counter", DigestOf(dir)), dir);
}

// The fleet's use: a host that lacks a build fetches it from a peer and pushes the stream,
// unchanged, into its own deploy root (here a second host process), where it loads and its
// signature checks out.
TEST_F(FetchBundleTest, AFetchedStreamPushedToAnotherHostLoadsThere) {
  const TempDir keys;
  absl::StatusOr<core::SigningKey> key = core::GenerateSigningKey();
  ASSERT_TRUE(key.ok()) << key.status();
  ASSERT_TRUE(core::WriteKeyPair(keys.path(), *key).ok());
  const std::vector<std::string> required = {"--signature-policy", "required", "--trusted-key",
                                             (keys.path() / "verifying.key").string()};
  const fs::path dir = BigCounter(3 * kMiB);
  ASSERT_TRUE(core::SignBundle(dir, *key).ok());
  ASSERT_NO_FATAL_FAILURE(StartHost(required));
  const std::string digest = DigestOf(dir);
  const Fetched fetched = Fetch("counter", digest);
  ExpectUploadOf(fetched, dir);

  const fs::path deploy = scratch().path() / "peer-deploy";
  std::vector<std::string> peer_args = {"--deploy-root", deploy.string()};
  peer_args.insert(peer_args.end(), required.begin(), required.end());
  HostProcess peer(peer_args);
  ASSERT_TRUE(peer.Start().ok());
  auto context = peer.NewContext();
  v1::PushBundleResponse response;
  auto writer = peer.stub().PushBundle(context.get(), &response);
  bool open = true;
  for (const v1::PushBundleRequest& message : fetched.messages) {
    open = open && writer->Write(message);
  }
  if (open) writer->WritesDone();
  const grpc::Status pushed = writer->Finish();
  ASSERT_TRUE(pushed.ok()) << ToString(pushed);
  EXPECT_EQ(response.outcome(), v1::PUSH_OUTCOME_LOADED) << response.ShortDebugString();
  EXPECT_EQ(response.bundle_digest(), digest);
  EXPECT_EQ(response.bundle().signing_key(), core::PublicKeyToHex(key->public_key()));
  EXPECT_EQ(DigestOf(deploy / "counter"), digest);
  // And the peer serves the same build the same way in turn.
  const Fetched again = FetchFrom(peer.stub(), peer.NewContext(), "counter", digest);
  ExpectUploadOf(again, deploy / "counter");
  EXPECT_THAT(again.messages[0], ProtoEq(fetched.messages[0]));
}

TEST(FetchChunkBytesTest, ChunksStayUnderTheServersMessageLimit) {
  EXPECT_EQ(host::FetchChunkBytes(4 << 20), kMiB);
  EXPECT_EQ(host::FetchChunkBytes(kMiB + 1024), kMiB);
  EXPECT_EQ(host::FetchChunkBytes(kMiB), kMiB - 1024);
  EXPECT_EQ(host::FetchChunkBytes(64 << 10), (64 << 10) - 1024);
  EXPECT_EQ(host::FetchChunkBytes(1024), 512u);  // polyplug-host's smallest --max-message-bytes
  EXPECT_GE(host::FetchChunkBytes(0), 1u);
}

// PluginHostService in this process, on a server whose messages are limited to
// `max_message_bytes`, serving the bundle in `bundle_dir` (loaded).
class InProcessHost {
 public:
  InProcessHost(const fs::path& bundle_dir, int max_message_bytes) {
    absl::StatusOr<std::unique_ptr<core::Runtime>> runtime = core::Runtime::Create({});
    EXPECT_TRUE(runtime.ok()) << runtime.status();
    if (!runtime.ok()) return;
    runtime_ = *std::move(runtime);
    absl::StatusOr<core::BundleInfo> loaded = runtime_->LoadBundle(bundle_dir);
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    instances_ = std::make_unique<host::RemoteInstances>(*runtime_, host::RemoteInstancesOptions{});
    hub_ = std::make_unique<host::PhaseHub>(*runtime_, host::PhaseHubOptions{});
    host::PluginHostServiceOptions options;
    options.bundle_roots = {fs::canonical(bundle_dir.parent_path())};
    options.max_message_bytes = max_message_bytes;
    service_ = std::make_unique<host::PluginHostService>(*runtime_, *hub_, worker_, *instances_,
                                                         calls_, authorizer_, options);
    const std::string address = "unix:" + (socket_dir_.path() / "host.sock").string();
    grpc::ServerBuilder builder;
    builder.AddListeningPort(address, grpc::InsecureServerCredentials());
    host::ConfigureServerChannel(builder, max_message_bytes);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    EXPECT_NE(server_, nullptr);
    stub_ =
        v1::PluginHost::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  }

  ~InProcessHost() {
    // As HostServer stops: the workers, the hub, then the server waits for its calls.
    calls_.Shutdown();
    worker_.Shutdown();
    if (hub_) hub_->Shutdown();
    if (server_) {
      server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
      server_->Wait();
    }
  }

  v1::PluginHost::Stub& stub() { return *stub_; }

 private:
  TempDir socket_dir_;
  std::unique_ptr<core::Runtime> runtime_;
  std::unique_ptr<host::RemoteInstances> instances_;
  host::OperationWorker worker_{1};
  host::OperationWorker calls_{2};
  host::TokenAuthorizer authorizer_{""};
  std::unique_ptr<host::PhaseHub> hub_;
  std::unique_ptr<host::PluginHostService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::PluginHost::Stub> stub_;
};

std::unique_ptr<grpc::ClientContext> DeadlineContext() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + kCallDeadline);
  return context;
}

TEST(FetchBundleInProcessTest, OnAServerWithSmallMessagesChunksStayUnderItsLimit) {
  const TempDir root;
  const fs::path dir = CopyTestBundle("counter_v1", root.path());
  WriteBigFile(dir / "level.bin", 300 << 10);
  constexpr int kLimit = 64 << 10;
  InProcessHost host(dir, kLimit);
  const Fetched fetched = FetchFrom(host.stub(), DeadlineContext(), "counter", DigestOf(dir));
  ExpectUploadOf(fetched, dir, host::FetchChunkBytes(kLimit));
  // (300 KiB + the artifact) / 63 KiB chunks.
  EXPECT_GT(fetched.messages.size(), 5u);
  for (const v1::PushBundleRequest& message : fetched.messages) {
    EXPECT_LE(message.ByteSizeLong(), static_cast<size_t>(kLimit));
  }
}

TEST(FetchBundleInProcessTest, AHeaderLargerThanTheLimitIsRefused) {
  const TempDir root;
  const fs::path dir = CopyTestBundle("counter_v1", root.path());
  // 40 files of 100-character names: a header of about 6 KiB, over a 4 KiB limit.
  for (int i = 0; i < 40; ++i) {
    WriteFile(dir / absl::StrCat(std::string(96, 'n'), i), "x");
  }
  InProcessHost host(dir, 4 << 10);
  const Fetched fetched = FetchFrom(host.stub(), DeadlineContext(), "counter", DigestOf(dir));
  EXPECT_EQ(fetched.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << ToString(fetched.status);
  EXPECT_EQ(ReasonTokenOf(fetched.status), "BUNDLE_TOO_LARGE");
  EXPECT_THAT(fetched.status.error_message(), HasSubstr("--max-message-bytes"));
  EXPECT_THAT(fetched.messages, ::testing::IsEmpty());
}

}  // namespace
}  // namespace polyplug::test
