// Helpers for tests that drive a real polyplug-host process over gRPC.
//
// HostProcess spawns the executable (POLYPLUG_HOST_BINARY) on a unix socket in its own
// temp dir, captures stdout and stderr to files there, and waits until the host answers
// GetHostInfo. Everything waits on events (channel state, stream reads, process exit);
// deadlines only bound how long a broken host can stall a test, they are never assertions.
#ifndef POLYPLUG_TESTS_HOST_HOST_FIXTURE_H_
#define POLYPLUG_TESTS_HOST_HOST_FIXTURE_H_

#include <grpcpp/grpcpp.h>
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "polyplug/host/v1/host.grpc.pb.h"
#include "support/bundle_fixture.h"

namespace polyplug::test {

// How long a single call or stream may take before the test gives up on the host. A
// safety net against a hung host, not a performance expectation.
inline constexpr std::chrono::seconds kCallDeadline{60};
// How long the host may take to come up.
inline constexpr std::chrono::seconds kStartDeadline{30};

// One polyplug-host process. Not copyable. The destructor stops a host still running with
// SIGTERM and expects it to exit 0, and expects no sanitizer report in its stderr.
class HostProcess {
 public:
  // `args` are the flags after the binary, e.g. {"--bundles", root}. --listen
  // unix:<dir>/host.sock is always added, and --state-dir <dir>/state unless `args` has
  // one. `auth_token` (if any) is sent by NewContext() and the readiness probe.
  explicit HostProcess(std::vector<std::string> args, std::string auth_token = "");
  ~HostProcess();
  HostProcess(const HostProcess&) = delete;
  HostProcess& operator=(const HostProcess&) = delete;

  // Before Start(): appends `args` to the flags given to the constructor (e.g. flags that
  // name files under dir(), which exists only once the HostProcess does).
  void AddArgs(std::vector<std::string> args);
  // Before Start(): more addresses for the fixture's own --listen flag, passed as one
  // comma-separated value after it ("unix:<dir>/host.sock,127.0.0.1:0"). The readiness
  // probe and the stubs still use address(). See ServingAddress() for the real ports.
  void AddListenAddress(std::string address);
  // Before Start(): serve on `address` (e.g. "unix:/other/dir/host.sock") instead of
  // unix:<dir>/host.sock; the readiness probe and the stubs use it too.
  void SetAddress(std::string address);
  // Before Start(): pass no --listen at all, so that the host picks its default address,
  // and run it with XDG_RUNTIME_DIR=dir(); address() becomes unix:<dir>/polyplug-host.sock.
  void UseDefaultListenAddress();
  // Before Start(): the host may not write files larger than `bytes` (RLIMIT_FSIZE): its
  // disk is full for anything bigger.
  void SetFileSizeLimit(uint64_t bytes) { file_size_limit_ = bytes; }

  // Spawns the host and waits until its channel is connected and GetHostInfo succeeds.
  // On failure the status names what went wrong and carries the host's stderr.
  absl::Status Start();

  // The stub on the main channel.
  host::v1::PluginHost::Stub& stub() { return *stub_; }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  // A new channel with its own connection (local subchannel pool), e.g. for a concurrent
  // subscriber; `args` may add channel arguments.
  std::shared_ptr<grpc::Channel> NewChannel(grpc::ChannelArguments args = {}) const;
  std::unique_ptr<host::v1::PluginHost::Stub> NewStub(grpc::ChannelArguments args = {}) const;

  // A client context with the auth token (if any) and a deadline of kCallDeadline.
  std::unique_ptr<grpc::ClientContext> NewContext() const;

  // GetHostInfo as of Start().
  const host::v1::HostInfo& info_at_start() const { return info_at_start_; }
  uint64_t epoch() const { return info_at_start_.host_epoch(); }

  const std::string& address() const { return address_; }  // "unix:/.../host.sock"
  const std::filesystem::path& dir() const { return dir_.path(); }
  pid_t pid() const { return pid_; }

  // What the host wrote so far.
  std::string Stdout() const;
  std::string Stderr() const;

  // Waits until the host's stderr has a complete line containing `needle` and returns the
  // first such line (without its newline). Waits on inotify events of the log file and on
  // the process exiting, never by polling; fails when the host exits without writing the
  // line, or after kStartDeadline. Call after Start() (or after a failed Start()).
  absl::StatusOr<std::string> WaitForStderrLine(absl::string_view needle);
  // The address the host reports in its "polyplug-host: serving on <address>" line for a
  // listener whose requested address starts with `requested_prefix` (e.g. "127.0.0.1:"),
  // with the real port of a port-0 listener. Waits for the line like WaitForStderrLine().
  absl::StatusOr<std::string> ServingAddress(absl::string_view requested_prefix);

  // Sends `signal` to the host (no-op once it was reaped).
  void Kill(int signal);
  // SIGSTOP, and waits until every thread of the host has stopped; Thaw() resumes it.
  void Freeze();
  void Thaw();
  // Waits until the host exits and returns its waitpid status (use WIFEXITED etc.). A host
  // that has not exited after kCallDeadline records a test failure and is killed.
  int WaitExit();
  // True until WaitExit() reaped the process (or Start() saw it die).
  bool running() const { return pid_ > 0 && !exit_status_.has_value(); }

 private:
  // Reaps the process if it exited; true if it did.
  bool PollExited();

  TempDir dir_;
  std::vector<std::string> args_;
  std::string auth_token_;
  std::string address_;
  std::vector<std::string> extra_listen_;  // AddListenAddress()
  bool default_listen_ = false;            // UseDefaultListenAddress()
  uint64_t file_size_limit_ = 0;           // SetFileSizeLimit()
  pid_t pid_ = -1;
  std::optional<int> exit_status_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<host::v1::PluginHost::Stub> stub_;
  host::v1::HostInfo info_at_start_;
};

// "exited with 0", "killed by signal 9": for failure messages.
std::string DescribeWaitStatus(int status);

// "NOT_FOUND: [BUNDLE_NOT_FOUND] no bundle ...": for failure messages.
std::string ToString(const grpc::Status& status);

// The reason token a gRPC error carries at the start of its message ("[TOKEN] ..."), or ""
// when the message does not start with one.
std::string ReasonTokenOf(const grpc::Status& status);
// The `polyplug-reason` trailing metadata of a finished call, or "" when absent.
std::string TrailingReasonOf(const grpc::ClientContext& context);

// Compact forms for sequence assertions: "PREPARING chain_a", "SNAPSHOT counter",
// "SNAPSHOT_END", "PROGRESS".
std::string Describe(const host::v1::ReloadPhaseEvent& event);
std::vector<std::string> Describe(const std::vector<host::v1::ReloadPhaseEvent>& events);
std::vector<std::string> Describe(
    const google::protobuf::RepeatedPtrField<host::v1::ReloadPhaseEvent>& events);

// The seq numbers of `events`, in order.
std::vector<uint64_t> SeqsOf(const std::vector<host::v1::ReloadPhaseEvent>& events);
std::vector<uint64_t> SeqsOf(
    const google::protobuf::RepeatedPtrField<host::v1::ReloadPhaseEvent>& events);

// "1.0.0".
std::string VersionString(const host::v1::Version& version);

// One SubscribeReloadPhases stream read synchronously.
// The counter's "block" method (tests/bundles/counter.cc) writes '1' to the FIFO
// <fifos>/started once it runs, then waits for end of file on <fifos>/release.
// MakeBlockFifos creates both in `fifos` (created). WaitForBlockedCall is true once the
// byte came; false when no call wrote it within kCallDeadline (a safety net, not a timing).
void MakeBlockFifos(const std::filesystem::path& fifos);
bool WaitForBlockedCall(const std::filesystem::path& fifos);
// Lets a blocked call go on: its open of <fifos>/release returns, and closing gives it end of
// file. Blocks until the call opens the FIFO, so call it only for a call that runs.
void ReleaseBlockedCall(const std::filesystem::path& fifos);
// The same without blocking, for clean-up paths: does nothing when no call waits.
void ReleaseBlockedCallIfWaiting(const std::filesystem::path& fifos);

class Subscription {
 public:
  // Opens the stream; `context` usually comes from HostProcess::NewContext().
  Subscription(host::v1::PluginHost::Stub& stub,
               const host::v1::SubscribeReloadPhasesRequest& request,
               std::unique_ptr<grpc::ClientContext> context);
  ~Subscription();
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;

  // The next message, or nullopt once the stream ended (then call Finish()).
  std::optional<host::v1::ReloadPhaseEvent> Next();
  // The next EVENT_KIND_PHASE message, skipping progress markers; nullopt at the end.
  std::optional<host::v1::ReloadPhaseEvent> NextPhase();
  // Reads the snapshot through its EVENT_KIND_SNAPSHOT_END marker, which is returned
  // (nullopt if the stream ended first); the EVENT_KIND_SNAPSHOT messages go to `snapshot`.
  std::optional<host::v1::ReloadPhaseEvent> ReadSnapshot(
      std::vector<host::v1::ReloadPhaseEvent>* snapshot = nullptr);
  // Reads `n` phase events; fewer if the stream ends first.
  std::vector<host::v1::ReloadPhaseEvent> ReadPhases(size_t n);
  // Reads until the stream ends and returns what came (progress markers included).
  std::vector<host::v1::ReloadPhaseEvent> ReadToEnd();

  // The stream's status; reads nothing more. Call once the stream ended or was cancelled.
  grpc::Status Finish();
  void Cancel() { context_->TryCancel(); }
  grpc::ClientContext& context() { return *context_; }

 private:
  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<grpc::ClientReader<host::v1::ReloadPhaseEvent>> reader_;
  std::optional<grpc::Status> status_;
};

// One grpc.health.v1.Health/Watch stream read synchronously. Cancels the stream on
// destruction unless Finish() was called. `deadline` only bounds a broken server.
class HealthWatch {
 public:
  using ServingStatus = grpc::health::v1::HealthCheckResponse::ServingStatus;

  HealthWatch(grpc::health::v1::Health::Stub& stub, const std::string& service,
              std::chrono::seconds deadline = kCallDeadline) {
    context_.set_deadline(std::chrono::system_clock::now() + deadline);
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    reader_ = stub.Watch(&context_, request);
  }
  ~HealthWatch() {
    if (!finished_) {
      context_.TryCancel();
      reader_->Finish();
    }
  }
  HealthWatch(const HealthWatch&) = delete;
  HealthWatch& operator=(const HealthWatch&) = delete;

  // The next status, or nullopt once the stream ended.
  std::optional<ServingStatus> Next() {
    grpc::health::v1::HealthCheckResponse response;
    if (!reader_->Read(&response)) return std::nullopt;
    return response.status();
  }
  grpc::Status Finish() {
    finished_ = true;
    return reader_->Finish();
  }
  void Cancel() { context_.TryCancel(); }

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<grpc::health::v1::HealthCheckResponse>> reader_;
  bool finished_ = false;
};

}  // namespace polyplug::test

#endif  // POLYPLUG_TESTS_HOST_HOST_FIXTURE_H_
