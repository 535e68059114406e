// HostServer embedded in an application (this test process) that owns its runtime and runs
// the operations at its own "frame boundary" (OperationThread::kApplication). A real
// gRPC server on a unix socket, real bundles, a real client channel: the frames are the
// test's loop, which calls the bundle through a core handle the way a game does.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "host/host_fixture.h"
#include "polyplug/core/error.h"
#include "polyplug/core/ids.h"
#include "polyplug/core/runtime.h"
#include "polyplug/host/host_server.h"
#include "polyplug/host/v1/host.grpc.pb.h"
#include "support/bundle_fixture.h"
#include "wire/wire.h"

namespace polyplug::host {
namespace {

namespace fs = std::filesystem;
namespace v1 = polyplug::host::v1;
using test::HasReason;
using test::TempDir;
using ::testing::HasSubstr;

const uint64_t kCounter = core::GuestContractId("test.counter", 1);

// What a frame saw: the version the bundle answered at its start and at its end.
struct Frame {
  int32_t at_start = 0;
  int32_t at_end = 0;
};

class EmbeddedHostTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(root_);
    bundle_ = test::CopyTestBundle("counter_v1", root_);
    core::RuntimeOptions runtime_options;
    runtime_options.state_dir = dir_ / "state";
    auto runtime = core::Runtime::Create(runtime_options);
    ASSERT_TRUE(runtime.ok()) << runtime.status();
    runtime_ = *std::move(runtime);
    // The game's own PREPARING/RELOADED listener: which thread it ran on, and whether a
    // frame was in progress.
    listener_ =
        runtime_->AddPhaseCallback([this](const PolyplugReloadPhase&, const core::PhaseEvent& e) {
          absl::MutexLock lock(&mu_);
          phases_.push_back({e.phase, std::this_thread::get_id()});
        });
  }

  void TearDown() override {
    if (server_) server_->Shutdown();
    server_.reset();
    runtime_->RemovePhaseCallback(listener_);
  }

  HostServerOptions Options() {
    HostServerOptions options;
    options.listen = {Address()};
    options.bundle_roots = {root_};
    options.operations = OperationThread::kApplication;
    return options;
  }
  std::string Address() const { return "unix:" + (dir_ / "host.sock").string(); }

  void StartServer(HostServerOptions options) {
    auto server = HostServer::Start(*runtime_, std::move(options));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    {
      absl::MutexLock lock(&mu_);
      phases_.clear();  // the roots' LOADED, on this thread in Start()
    }
    stub_ =
        v1::PluginHost::NewStub(grpc::CreateChannel(Address(), grpc::InsecureChannelCredentials()));
  }

  // One frame: calls the bundle through a handle, does its "work", calls it again, then
  // runs the operations that wait (the frame boundary). Returns what it saw and how many
  // operations ran after it.
  Frame RunFrame(size_t* operations_run = nullptr) {
    Frame frame;
    frame.at_start = Version();
    frame.at_end = Version();
    const size_t ran = server_->RunPendingOperations();
    if (operations_run != nullptr) *operations_run = ran;
    return frame;
  }
  int32_t Version() {
    absl::StatusOr<int32_t> version = test::CallFn0(*runtime_, kCounter);
    EXPECT_TRUE(version.ok()) << version.status();
    return version.ok() ? *version : -1;
  }

  std::unique_ptr<grpc::ClientContext> Context() {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() + test::kCallDeadline);
    return context;
  }
  // A Reload by name, answered on another thread (it waits for a frame boundary).
  struct PendingReload {
    std::unique_ptr<grpc::ClientContext> context;
    v1::ReloadResponse response;
    std::future<grpc::Status> status;
  };
  std::unique_ptr<PendingReload> ReloadAsync(
      std::unique_ptr<grpc::ClientContext> context = nullptr) {
    auto reload = std::make_unique<PendingReload>();
    reload->context = context ? std::move(context) : Context();
    v1::ReloadRequest request;
    request.set_name("counter");
    reload->status = std::async(std::launch::async, [this, request, r = reload.get()] {
      return stub_->Reload(r->context.get(), request, &r->response);
    });
    return reload;
  }
  void WaitUntilQueued() {
    ASSERT_TRUE(server_->WaitForPendingOperations(absl::FromChrono(test::kCallDeadline)))
        << "the reload never reached the host's queue";
  }

  struct SeenPhase {
    core::Phase phase;
    std::thread::id thread;
  };
  std::vector<SeenPhase> Phases() {
    absl::MutexLock lock(&mu_);
    return phases_;
  }

  TempDir dir_;
  const fs::path root_ = dir_ / "bundles";
  fs::path bundle_;
  std::unique_ptr<core::Runtime> runtime_;
  core::EventJournal::ListenerId listener_{};
  std::unique_ptr<HostServer> server_;
  std::unique_ptr<v1::PluginHost::Stub> stub_;
  absl::Mutex mu_;
  std::vector<SeenPhase> phases_;
};

// The heart of it: a reload requested over gRPC swaps the bundle between two frames, on the
// application's thread, and never inside a frame.
TEST_F(EmbeddedHostTest, AReloadTakesOverExactlyAtAFrameBoundaryOnTheApplicationThread) {
  ASSERT_NO_FATAL_FAILURE(StartServer(Options()));
  ASSERT_EQ(RunFrame().at_start, 1);
  test::OverwriteArtifact(test::TestBundleDir("counter_v2"), bundle_);
  std::unique_ptr<PendingReload> reload = ReloadAsync();
  ASSERT_NO_FATAL_FAILURE(WaitUntilQueued());

  // Frames go on while the reload waits; each sees one version from start to end.
  std::vector<Frame> frames;
  std::vector<size_t> ran;
  while (frames.empty() || frames.back().at_start != 2) {
    size_t n = 0;
    frames.push_back(RunFrame(&n));
    ran.push_back(n);
    ASSERT_LT(frames.size(), 10u) << "the reload never took over";
  }
  for (const Frame& f : frames) EXPECT_EQ(f.at_start, f.at_end) << "a frame saw a swap";
  // The first frame ran the reload at its end; the next one is the first on v2.
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(frames[0].at_start, 1);
  EXPECT_EQ(ran[0], 1u);

  ASSERT_EQ(reload->status.get().error_code(), grpc::StatusCode::OK);
  EXPECT_EQ(reload->response.outcome(), v1::RELOAD_OUTCOME_RELOADED);
  std::vector<SeenPhase> phases = Phases();
  ASSERT_GE(phases.size(), 2u);
  EXPECT_EQ(phases[0].phase, core::Phase::kPreparing);
  EXPECT_EQ(phases.back().phase, core::Phase::kReloaded);
  for (const SeenPhase& p : phases) {
    EXPECT_EQ(p.thread, std::this_thread::get_id()) << core::PhaseName(p.phase);
  }
}

// While the application does not pump, the operation waits, and the control plane keeps
// answering lookups, listings, health and streams; then it runs at the next boundary.
TEST_F(EmbeddedHostTest, AnOperationWaitsWhileTheApplicationDoesNotPumpAndOthersAreServed) {
  ASSERT_NO_FATAL_FAILURE(StartServer(Options()));
  grpc::ClientContext stream_context;
  stream_context.set_deadline(std::chrono::system_clock::now() + test::kCallDeadline);
  v1::SubscribeReloadPhasesRequest subscribe;
  subscribe.set_include_snapshot(true);
  auto stream = stub_->SubscribeReloadPhases(&stream_context, subscribe);
  test::OverwriteArtifact(test::TestBundleDir("counter_v2"), bundle_);
  std::unique_ptr<PendingReload> reload = ReloadAsync();
  ASSERT_NO_FATAL_FAILURE(WaitUntilQueued());
  EXPECT_EQ(server_->pending_operations(), 1u);

  v1::FindContractRequest find;
  find.set_name("test.counter@1");
  v1::ContractHandle handle;
  ASSERT_TRUE(stub_->FindContract(Context().get(), find, &handle).ok());
  EXPECT_EQ(handle.provider_version().major(), 1u);
  v1::ListBundlesResponse list;
  ASSERT_TRUE(stub_->ListBundles(Context().get(), {}, &list).ok());
  ASSERT_EQ(list.bundles_size(), 1);
  EXPECT_EQ(list.bundles(0).version().major(), 1u);
  auto health = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(Address(), grpc::InsecureChannelCredentials()));
  grpc::health::v1::HealthCheckRequest check;
  check.set_service("counter");
  grpc::health::v1::HealthCheckResponse serving;
  ASSERT_TRUE(health->Check(Context().get(), check, &serving).ok());
  EXPECT_EQ(serving.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  v1::ReloadPhaseEvent message;
  ASSERT_TRUE(stream->Read(&message));
  EXPECT_EQ(message.kind(), v1::EVENT_KIND_SNAPSHOT);
  EXPECT_EQ(message.bundle_version().major(), 1u);
  ASSERT_TRUE(stream->Read(&message));
  EXPECT_EQ(message.kind(), v1::EVENT_KIND_SNAPSHOT_END);
  EXPECT_EQ(reload->status.wait_for(std::chrono::seconds(0)), std::future_status::timeout)
      << "the reload answered before the application ran it";
  EXPECT_EQ(Version(), 1);

  EXPECT_EQ(server_->RunPendingOperations(), 1u);
  ASSERT_EQ(reload->status.get().error_code(), grpc::StatusCode::OK);
  EXPECT_EQ(reload->response.outcome(), v1::RELOAD_OUTCOME_RELOADED);
  EXPECT_EQ(Version(), 2);
  // The stream goes on with the reload's phases.
  ASSERT_TRUE(stream->Read(&message));
  EXPECT_EQ(message.phase(), v1::PHASE_PREPARING);
  ASSERT_TRUE(stream->Read(&message));
  EXPECT_EQ(message.phase(), v1::PHASE_RELOADED);
  EXPECT_EQ(message.bundle_version().major(), 2u);
  stream_context.TryCancel();
  EXPECT_EQ(server_->pending_operations(), 0u);
  EXPECT_EQ(server_->RunPendingOperations(), 0u);
}

// An application that stops with operations queued fails them with a reason that says so,
// and the runtime it keeps is untouched.
TEST_F(EmbeddedHostTest, StoppingWithQueuedOperationsFailsThemAndLeavesTheBundleAsItWas) {
  ASSERT_NO_FATAL_FAILURE(StartServer(Options()));
  test::OverwriteArtifact(test::TestBundleDir("counter_v2"), bundle_);
  std::unique_ptr<PendingReload> reload = ReloadAsync();
  ASSERT_NO_FATAL_FAILURE(WaitUntilQueued());
  server_->Shutdown();

  const grpc::Status status = reload->status.get();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << test::ToString(status);
  EXPECT_EQ(test::ReasonTokenOf(status), "SHUTTING_DOWN") << test::ToString(status);
  EXPECT_THAT(status.error_message(), HasSubstr("RunPendingOperations"));
  EXPECT_THAT(status.error_message(), HasSubstr("did not run"));
  auto trailer = reload->context->GetServerTrailingMetadata().find(wire::kReasonTrailer);
  ASSERT_NE(trailer, reload->context->GetServerTrailingMetadata().end());
  EXPECT_EQ(std::string(trailer->second.data(), trailer->second.size()), "SHUTTING_DOWN");
  // Nothing of the reload happened; the application's bundle serves on.
  EXPECT_EQ(Version(), 1);
  EXPECT_TRUE(Phases().empty());
  EXPECT_EQ(server_->RunPendingOperations(), 0u);
}

// A caller that gave up while its operation waited (its deadline passed) is told so by
// gRPC, and the operation does not run behind its back at the next boundary.
TEST_F(EmbeddedHostTest, AnOperationWhoseDeadlinePassedWhileQueuedDoesNotRun) {
  ASSERT_NO_FATAL_FAILURE(StartServer(Options()));
  test::OverwriteArtifact(test::TestBundleDir("counter_v2"), bundle_);
  v1::EchoRequest echo;
  v1::EchoResponse echoed;
  // Connected first: the deadline below is spent waiting in the queue, not connecting.
  ASSERT_TRUE(stub_->Echo(Context().get(), echo, &echoed).ok());
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
  std::unique_ptr<PendingReload> reload = ReloadAsync(std::move(context));
  ASSERT_NO_FATAL_FAILURE(WaitUntilQueued());
  EXPECT_EQ(reload->status.get().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  // The host learns of it from the stream's reset, which comes before this call's frames on
  // the one connection; and its own copy of the deadline passes too.
  ASSERT_TRUE(stub_->Echo(Context().get(), echo, &echoed).ok());
  // Taken from the queue, answered without running.
  EXPECT_EQ(server_->RunPendingOperations(), 1u);
  EXPECT_EQ(Version(), 1);
  EXPECT_TRUE(Phases().empty());
}

// A reload that fails at the boundary leaves the frames on the old version, with no frame
// that saw anything else.
TEST_F(EmbeddedHostTest, AFailedReloadLeavesTheFramesOnTheOldVersion) {
  ASSERT_NO_FATAL_FAILURE(StartServer(Options()));
  fs::path artifact;
  for (const fs::directory_entry& e : fs::directory_iterator(bundle_)) {
    if (e.path().extension() == ".so") artifact = e.path();
  }
  ASSERT_FALSE(artifact.empty());
  test::WriteFile(artifact, "not an ELF file");
  std::unique_ptr<PendingReload> reload = ReloadAsync();
  ASSERT_NO_FATAL_FAILURE(WaitUntilQueued());
  size_t ran = 0;
  Frame frame = RunFrame(&ran);
  EXPECT_EQ(ran, 1u);
  ASSERT_EQ(reload->status.get().error_code(), grpc::StatusCode::OK);
  EXPECT_EQ(reload->response.outcome(), v1::RELOAD_OUTCOME_FAILED);
  EXPECT_EQ(reload->response.reason(), v1::FAILURE_REASON_ARTIFACT_NOT_LOADABLE);
  for (int i = 0; i < 3; ++i) {
    frame = RunFrame();
    EXPECT_EQ(frame.at_start, 1);
    EXPECT_EQ(frame.at_end, 1);
  }
}

// --watch in an embedded host: the watcher decides, the application's boundary runs it. A
// bundle directory it finds and cannot load is a FAILED event (for editors on the stream).
TEST_F(EmbeddedHostTest, WatchedChangesRunAtTheBoundaryAndAnUnloadableNewDirectoryIsAnEvent) {
  HostServerOptions options = Options();
  options.watch = true;
  ASSERT_NO_FATAL_FAILURE(StartServer(std::move(options)));
  test::OverwriteArtifact(test::TestBundleDir("counter_v2"), bundle_);
  ASSERT_NO_FATAL_FAILURE(WaitUntilQueued());
  EXPECT_EQ(Version(), 1) << "the watcher reloaded before the application's boundary";
  EXPECT_GE(server_->RunPendingOperations(), 1u);
  EXPECT_EQ(Version(), 2);

  // A new directory whose manifest is broken, written whole (a rename).
  const uint64_t before = runtime_->journal().last_seq();
  const fs::path broken = root_ / "broken";
  const fs::path staging = dir_ / "staging";
  fs::create_directories(staging);
  test::WriteFile(staging / "manifest.toml", "name = \"broken\"\nthis is not toml\n");
  fs::rename(staging, broken);
  // Pump at each operation the watcher posts until the broken directory's event is there.
  std::optional<core::PhaseEvent> failed;
  while (!failed) {
    ASSERT_NO_FATAL_FAILURE(WaitUntilQueued());
    server_->RunPendingOperations();
    auto events = runtime_->journal().ReadAfter(before);
    ASSERT_TRUE(events.ok()) << events.status();
    for (const core::PhaseEvent& e : *events) {
      if (e.bundle_name == "broken") failed = e;
    }
  }
  EXPECT_EQ(failed->phase, core::Phase::kFailed);
  EXPECT_EQ(failed->reason, core::ErrorReason::kManifestInvalid);
  EXPECT_THAT(failed->message, HasSubstr(broken.string()));
  EXPECT_EQ(Version(), 2);
}

// What the watcher posts is decided when the application runs it, not when the watcher
// saw the change: a bundle directory moved away and back while the application is not
// pumping is still loaded afterwards (one reload), not unloaded by a stale decision.
TEST_F(EmbeddedHostTest, WatchedChangesAreDecidedWhenTheyRunNotWhenSeen) {
  HostServerOptions options = Options();
  options.watch = true;
  ASSERT_NO_FATAL_FAILURE(StartServer(std::move(options)));
  const fs::path aside = dir_ / "aside";
  fs::rename(bundle_, aside);
  ASSERT_NO_FATAL_FAILURE(WaitUntilQueued());  // the watcher would unload it
  fs::rename(aside, bundle_);
  EXPECT_EQ(server_->RunPendingOperations(), 1u);
  auto counter = runtime_->GetBundle("counter");
  ASSERT_TRUE(counter.ok()) << counter.status();
  EXPECT_EQ(counter->dir, fs::canonical(bundle_));
  EXPECT_EQ(Version(), 1);
}

// A copy of a loaded bundle's directory appearing in the root is a FAILED event saying it is
// loaded from elsewhere; the loaded bundle stays where it is.
TEST_F(EmbeddedHostTest, ACopyOfALoadedBundleIsAFailureAndDoesNotMoveIt) {
  HostServerOptions options = Options();
  options.watch = true;
  ASSERT_NO_FATAL_FAILURE(StartServer(std::move(options)));
  const uint64_t before = runtime_->journal().last_seq();
  const fs::path staging = dir_ / "staging";
  fs::copy(bundle_, staging, fs::copy_options::recursive);
  fs::rename(staging, root_ / "counter_copy");
  std::optional<core::PhaseEvent> failed;
  while (!failed) {
    ASSERT_NO_FATAL_FAILURE(WaitUntilQueued());
    server_->RunPendingOperations();
    auto events = runtime_->journal().ReadAfter(before);
    ASSERT_TRUE(events.ok()) << events.status();
    for (const core::PhaseEvent& e : *events) {
      ASSERT_NE(e.phase, core::Phase::kPreparing) << "the loaded bundle was reloaded";
      if (e.phase == core::Phase::kFailed) failed = e;
    }
  }
  EXPECT_EQ(failed->bundle_name, "counter");
  EXPECT_EQ(failed->reason, core::ErrorReason::kBundleAlreadyLoaded);
  auto counter = runtime_->GetBundle("counter");
  ASSERT_TRUE(counter.ok()) << counter.status();
  EXPECT_EQ(counter->dir, fs::canonical(bundle_));
}

// The default, for contrast: operations run on the host's worker and need no pumping.
TEST_F(EmbeddedHostTest, WithTheHostWorkerOperationsRunWithoutTheApplication) {
  HostServerOptions options = Options();
  options.operations = OperationThread::kHostWorker;
  ASSERT_NO_FATAL_FAILURE(StartServer(std::move(options)));
  test::OverwriteArtifact(test::TestBundleDir("counter_v2"), bundle_);
  std::unique_ptr<PendingReload> reload = ReloadAsync();
  ASSERT_EQ(reload->status.get().error_code(), grpc::StatusCode::OK);
  EXPECT_EQ(reload->response.outcome(), v1::RELOAD_OUTCOME_RELOADED);
  EXPECT_EQ(Version(), 2);
  EXPECT_EQ(server_->RunPendingOperations(), 0u);
  for (const SeenPhase& p : Phases()) EXPECT_NE(p.thread, std::this_thread::get_id());
}

// The application keeps its runtime: what it loaded itself is served, and stays loaded
// after the host is gone.
TEST_F(EmbeddedHostTest, TheApplicationsOwnBundlesAreServedAndOutliveTheHost) {
  const fs::path elsewhere = dir_ / "own";
  fs::create_directories(elsewhere);
  const fs::path own = test::CopyTestBundle("stateless", elsewhere);
  ASSERT_TRUE(runtime_->LoadBundle(own).ok());
  ASSERT_NO_FATAL_FAILURE(StartServer(Options()));
  EXPECT_EQ(&server_->runtime(), runtime_.get());
  v1::ListBundlesResponse list;
  ASSERT_TRUE(stub_->ListBundles(Context().get(), {}, &list).ok());
  EXPECT_EQ(list.bundles_size(), 2);
  server_->Shutdown();
  server_.reset();
  EXPECT_EQ(runtime_->ListBundles().size(), 2u);
  EXPECT_EQ(Version(), 1);
}

// A start that fails after the roots were loaded (here: the TCP port is taken) leaves the
// application's runtime as it was.
TEST_F(EmbeddedHostTest, AStartThatFailsLateLeavesTheApplicationsRuntimeAsItWas) {
  const int taken = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(taken, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(taken, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(listen(taken, 1), 0);
  socklen_t length = sizeof(address);
  ASSERT_EQ(getsockname(taken, reinterpret_cast<sockaddr*>(&address), &length), 0);
  HostServerOptions options = Options();
  options.listen.push_back(absl::StrCat("127.0.0.1:", ntohs(address.sin_port)));
  auto server = HostServer::Start(*runtime_, options);
  close(taken);
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(std::string(server.status().message()), HasSubstr("cannot listen"));
  EXPECT_TRUE(runtime_->ListBundles().empty()) << "the roots' bundles were left loaded";
  EXPECT_FALSE(fs::exists(dir_ / "host.sock"));
  // And the runtime takes a host again.
  ASSERT_NO_FATAL_FAILURE(StartServer(Options()));
  EXPECT_EQ(Version(), 1);
}

TEST_F(EmbeddedHostTest, RuntimeSettingsAndSupervisionAreRefusedForTheApplicationsRuntime) {
  HostServerOptions options = Options();
  options.journal_size = 16;
  auto server = HostServer::Start(*runtime_, options);
  ASSERT_THAT(server.status(), HasReason(core::ErrorReason::kInvalidArgument));
  EXPECT_THAT(std::string(server.status().message()), HasSubstr("journal_size"));
  options = Options();
  options.supervisor_state = dir_ / "supervisor";
  server = HostServer::Start(*runtime_, options);
  ASSERT_THAT(server.status(), HasReason(core::ErrorReason::kInvalidArgument));
  EXPECT_THAT(std::string(server.status().message()), HasSubstr("--supervise"));
  EXPECT_FALSE(fs::exists(dir_ / "host.sock"));
}

}  // namespace
}  // namespace polyplug::host
