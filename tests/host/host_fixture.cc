#include "host/host_fixture.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "support/child_process.h"

namespace polyplug::test {

namespace fs = std::filesystem;
namespace v1 = ::polyplug::host::v1;

namespace {

constexpr absl::string_view kReasonTrailer = "polyplug-reason";

// Channel arguments every test channel uses: reconnect quickly while the host is still
// binding its socket, and keep each channel's connection to itself.
void AddCommonArgs(grpc::ChannelArguments& args) {
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 250);
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
}

std::chrono::system_clock::time_point Deadline(std::chrono::seconds after) {
  return std::chrono::system_clock::now() + after;
}

std::string ReadWholeFile(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return "";
  return ReadFile(path);
}

}  // namespace

HostProcess::HostProcess(std::vector<std::string> args, std::string auth_token)
    : args_(std::move(args)),
      auth_token_(std::move(auth_token)),
      address_(absl::StrCat("unix:", (dir_.path() / "host.sock").string())) {}

HostProcess::~HostProcess() {
  // Closing our connection first lets the host's graceful shutdown finish at once.
  stub_.reset();
  channel_.reset();
  if (running()) {
    // Every scenario must end in a clean shutdown.
    Kill(SIGTERM);
    const int status = WaitExit();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "polyplug-host " << DescribeWaitStatus(status) << " on SIGTERM; stderr:\n"
        << Stderr();
  }
  if (pid_ > 0) {
    const std::string log = Stderr();
    EXPECT_FALSE(absl::StrContains(log, "Sanitizer") || absl::StrContains(log, "runtime error:"))
        << "polyplug-host reported a sanitizer error:\n"
        << log;
  }
}

void HostProcess::AddArgs(std::vector<std::string> args) {
  args_.insert(args_.end(), std::make_move_iterator(args.begin()),
               std::make_move_iterator(args.end()));
}

void HostProcess::AddListenAddress(std::string address) {
  extra_listen_.push_back(std::move(address));
}

void HostProcess::SetAddress(std::string address) { address_ = std::move(address); }

void HostProcess::UseDefaultListenAddress() {
  default_listen_ = true;
  address_ = absl::StrCat("unix:", (dir_.path() / "polyplug-host.sock").string());
}

absl::Status HostProcess::Start() {
  std::vector<std::string> argv = {POLYPLUG_HOST_BINARY};
  if (!default_listen_) {
    // One comma-separated flag, so that args_ may add --listen flags of their own.
    std::vector<std::string> listen = {address_};
    listen.insert(listen.end(), extra_listen_.begin(), extra_listen_.end());
    argv.push_back("--listen");
    argv.push_back(absl::StrJoin(listen, ","));
  }
  if (std::find(args_.begin(), args_.end(), "--state-dir") == args_.end()) {
    const fs::path state = dir_.path() / "state";
    fs::create_directories(state);
    argv.push_back("--state-dir");
    argv.push_back(state.string());
  }
  argv.insert(argv.end(), args_.begin(), args_.end());
  SpawnOptions spawn;
  spawn.argv = argv;
  spawn.out = Redirect::Truncate(dir_.path() / "stdout.log");
  spawn.err = Redirect::Truncate(dir_.path() / "stderr.log");
  if (default_listen_) spawn.env.push_back({"XDG_RUNTIME_DIR", dir_.path().string()});
  spawn.file_size_limit = file_size_limit_;
  absl::StatusOr<pid_t> pid = Spawn(spawn);
  if (!pid.ok()) {
    pid_ = -1;
    return pid.status();
  }
  pid_ = *pid;
  const std::string command = absl::StrJoin(argv, " ");

  channel_ = NewChannel();
  stub_ = v1::PluginHost::NewStub(channel_);
  const auto deadline = Deadline(kStartDeadline);
  // Wait on the channel's state in short slices so that a host that dies at start-up is
  // reported at once rather than after the whole deadline.
  while (!channel_->WaitForConnected(
      std::min(deadline, std::chrono::system_clock::now() + std::chrono::milliseconds(200)))) {
    if (PollExited()) {
      return absl::UnavailableError(absl::StrCat("`", command, "` ",
                                                 DescribeWaitStatus(*exit_status_),
                                                 " before serving; stderr:\n", Stderr()));
    }
    if (std::chrono::system_clock::now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "`", command, "` did not accept a connection on ", address_, "; stderr:\n", Stderr()));
    }
  }
  auto context = NewContext();
  context->set_deadline(deadline);
  const grpc::Status status =
      stub_->GetHostInfo(context.get(), v1::GetHostInfoRequest(), &info_at_start_);
  if (!status.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "`", command, "`: GetHostInfo failed: ", ToString(status), "; stderr:\n", Stderr()));
  }
  return absl::OkStatus();
}

std::shared_ptr<grpc::Channel> HostProcess::NewChannel(grpc::ChannelArguments args) const {
  AddCommonArgs(args);
  return grpc::CreateCustomChannel(address_, grpc::InsecureChannelCredentials(), args);
}

std::unique_ptr<v1::PluginHost::Stub> HostProcess::NewStub(grpc::ChannelArguments args) const {
  return v1::PluginHost::NewStub(NewChannel(std::move(args)));
}

std::unique_ptr<grpc::ClientContext> HostProcess::NewContext() const {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(Deadline(kCallDeadline));
  if (!auth_token_.empty()) context->AddMetadata("authorization", "Bearer " + auth_token_);
  return context;
}

std::string HostProcess::Stdout() const { return ReadWholeFile(dir_.path() / "stdout.log"); }
std::string HostProcess::Stderr() const { return ReadWholeFile(dir_.path() / "stderr.log"); }

absl::StatusOr<std::string> HostProcess::WaitForStderrLine(absl::string_view needle) {
  const fs::path log = dir_.path() / "stderr.log";
  auto find_line = [&]() -> std::optional<std::string> {
    const std::string text = Stderr();
    size_t start = 0;
    for (size_t end; (end = text.find('\n', start)) != std::string::npos; start = end + 1) {
      absl::string_view line(text.data() + start, end - start);
      if (absl::StrContains(line, needle)) return std::string(line);
    }
    return std::nullopt;
  };
  const int inotify = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  if (inotify < 0)
    return absl::InternalError(absl::StrCat("inotify_init1: ", std::strerror(errno)));
  if (inotify_add_watch(inotify, log.c_str(), IN_MODIFY | IN_CLOSE_WRITE) < 0) {
    const int error = errno;
    close(inotify);
    return absl::FailedPreconditionError(
        absl::StrCat("cannot watch ", log.string(), ": ", std::strerror(error)));
  }
  const int pidfd = running() ? static_cast<int>(syscall(SYS_pidfd_open, pid_, 0)) : -1;
  const auto deadline = std::chrono::steady_clock::now() + kStartDeadline;
  absl::StatusOr<std::string> result;
  while (true) {
    // Exit first, then the log: a line written just before the exit is still found.
    const bool exited = !running() || PollExited();
    if (auto line = find_line()) {
      result = *std::move(line);
      break;
    }
    if (exited) {
      result = absl::NotFoundError(absl::StrCat(
          "polyplug-host ",
          exit_status_ ? DescribeWaitStatus(*exit_status_) : std::string("is not running"),
          " without writing a line containing \"", needle, "\"; stderr:\n", Stderr()));
      break;
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      result = absl::DeadlineExceededError(
          absl::StrCat("no line containing \"", needle, "\" in the host's stderr:\n", Stderr()));
      break;
    }
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
    // Without a pidfd, the exit is only noticed by PollExited() between short waits.
    if (pidfd < 0) wait = std::min(wait, std::chrono::milliseconds(200));
    pollfd fds[2] = {{inotify, POLLIN, 0}, {pidfd, POLLIN, 0}};
    const int r = poll(fds, pidfd >= 0 ? 2 : 1, static_cast<int>(wait.count()) + 1);
    if (r < 0 && errno != EINTR) {
      result = absl::InternalError(absl::StrCat("poll: ", std::strerror(errno)));
      break;
    }
    // Drain the inotify events; their content does not matter.
    char buffer[4096];
    while (read(inotify, buffer, sizeof buffer) > 0) {
    }
  }
  if (pidfd >= 0) close(pidfd);
  close(inotify);
  return result;
}

absl::StatusOr<std::string> HostProcess::ServingAddress(absl::string_view requested_prefix) {
  const std::string kServingOn = "polyplug-host: serving on ";
  absl::StatusOr<std::string> line = WaitForStderrLine(absl::StrCat(kServingOn, requested_prefix));
  if (!line.ok()) return line.status();
  const size_t at = line->find(kServingOn);
  return line->substr(at + kServingOn.size());
}

void HostProcess::Kill(int signal) {
  if (running()) kill(pid_, signal);
}

void HostProcess::Freeze() {
  if (!running()) return;
  kill(pid_, SIGSTOP);
  // kill() returns before every thread has stopped; the stop is only certain once waitpid
  // reports it.
  int status = 0;
  while (waitpid(pid_, &status, WUNTRACED) < 0 && errno == EINTR) {
  }
}

void HostProcess::Thaw() {
  if (!running()) return;
  kill(pid_, SIGCONT);
  int status = 0;
  while (waitpid(pid_, &status, WCONTINUED) < 0 && errno == EINTR) {
  }
}

bool HostProcess::PollExited() {
  if (pid_ <= 0) return false;
  if (exit_status_) return true;
  int status = 0;
  pid_t r;
  do {
    r = waitpid(pid_, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == pid_) {
    exit_status_ = status;
    return true;
  }
  return false;
}

int HostProcess::WaitExit() {
  if (exit_status_) return *exit_status_;
  if (pid_ <= 0) {
    ADD_FAILURE() << "WaitExit() on a host that was never started";
    return -1;
  }
  // A pidfd becomes readable when the process exits: wait for that event, bounded.
  const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid_, 0));
  if (pidfd >= 0) {
    pollfd fd{pidfd, POLLIN, 0};
    int r;
    do {
      r = poll(&fd, 1, static_cast<int>(std::chrono::milliseconds(kCallDeadline).count()));
    } while (r < 0 && errno == EINTR);
    close(pidfd);
    if (r == 0) {
      ADD_FAILURE() << "polyplug-host (pid " << pid_ << ") did not exit within "
                    << kCallDeadline.count() << " s; killing it. stderr:\n"
                    << Stderr();
      kill(pid_, SIGKILL);
    }
  }
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0) {
    if (errno != EINTR) {
      ADD_FAILURE() << "waitpid(" << pid_ << "): " << std::strerror(errno);
      return -1;
    }
  }
  exit_status_ = status;
  return status;
}

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exited with ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return absl::StrCat("killed by signal ", WTERMSIG(status), " (", strsignal(WTERMSIG(status)),
                        ")");
  }
  return absl::StrCat("wait status ", status);
}

std::string ToString(const grpc::Status& status) {
  // absl and gRPC share the canonical code numbering.
  const std::string name =
      absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code()));
  if (status.ok()) return name;
  return absl::StrCat(name, ": ", status.error_message());
}

std::string ReasonTokenOf(const grpc::Status& status) {
  const std::string& message = status.error_message();
  if (!absl::StartsWith(message, "[")) return "";
  const size_t end = message.find(']');
  if (end == std::string::npos) return "";
  return message.substr(1, end - 1);
}

std::string TrailingReasonOf(const grpc::ClientContext& context) {
  const auto& trailers = context.GetServerTrailingMetadata();
  auto it = trailers.find(grpc::string_ref(kReasonTrailer.data(), kReasonTrailer.size()));
  if (it == trailers.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

std::string Describe(const v1::ReloadPhaseEvent& event) {
  switch (event.kind()) {
    case v1::EVENT_KIND_PHASE: {
      std::string phase = v1::Phase_Name(event.phase());
      if (absl::StartsWith(phase, "PHASE_")) phase = phase.substr(6);
      return absl::StrCat(phase, " ", event.bundle_name());
    }
    case v1::EVENT_KIND_SNAPSHOT:
      return absl::StrCat("SNAPSHOT ", event.bundle_name());
    case v1::EVENT_KIND_SNAPSHOT_END:
      return "SNAPSHOT_END";
    case v1::EVENT_KIND_PROGRESS:
      return "PROGRESS";
    default:
      return absl::StrCat("kind ", static_cast<int>(event.kind()), " ", event.bundle_name());
  }
}

std::vector<std::string> Describe(const std::vector<v1::ReloadPhaseEvent>& events) {
  std::vector<std::string> out;
  for (const v1::ReloadPhaseEvent& e : events) out.push_back(Describe(e));
  return out;
}

std::vector<std::string> Describe(
    const google::protobuf::RepeatedPtrField<v1::ReloadPhaseEvent>& events) {
  return Describe(std::vector<v1::ReloadPhaseEvent>(events.begin(), events.end()));
}

std::vector<uint64_t> SeqsOf(const std::vector<v1::ReloadPhaseEvent>& events) {
  std::vector<uint64_t> out;
  for (const v1::ReloadPhaseEvent& e : events) out.push_back(e.seq());
  return out;
}

std::vector<uint64_t> SeqsOf(
    const google::protobuf::RepeatedPtrField<v1::ReloadPhaseEvent>& events) {
  return SeqsOf(std::vector<v1::ReloadPhaseEvent>(events.begin(), events.end()));
}

std::string VersionString(const v1::Version& version) {
  return absl::StrCat(version.major(), ".", version.minor(), ".", version.patch());
}

Subscription::Subscription(v1::PluginHost::Stub& stub,
                           const v1::SubscribeReloadPhasesRequest& request,
                           std::unique_ptr<grpc::ClientContext> context)
    : context_(std::move(context)) {
  reader_ = stub.SubscribeReloadPhases(context_.get(), request);
}

Subscription::~Subscription() {
  if (!status_) {
    context_->TryCancel();
    Finish();
  }
}

std::optional<v1::ReloadPhaseEvent> Subscription::Next() {
  if (status_) return std::nullopt;
  v1::ReloadPhaseEvent event;
  if (!reader_->Read(&event)) return std::nullopt;
  return event;
}

std::optional<v1::ReloadPhaseEvent> Subscription::NextPhase() {
  while (auto event = Next()) {
    if (event->kind() == v1::EVENT_KIND_PHASE) return event;
  }
  return std::nullopt;
}

std::optional<v1::ReloadPhaseEvent> Subscription::ReadSnapshot(
    std::vector<v1::ReloadPhaseEvent>* snapshot) {
  while (auto event = Next()) {
    if (event->kind() == v1::EVENT_KIND_SNAPSHOT_END) return event;
    if (snapshot != nullptr && event->kind() == v1::EVENT_KIND_SNAPSHOT) {
      snapshot->push_back(*event);
    }
  }
  return std::nullopt;
}

std::vector<v1::ReloadPhaseEvent> Subscription::ReadPhases(size_t n) {
  std::vector<v1::ReloadPhaseEvent> out;
  while (out.size() < n) {
    auto event = NextPhase();
    if (!event) break;
    out.push_back(*std::move(event));
  }
  return out;
}

std::vector<v1::ReloadPhaseEvent> Subscription::ReadToEnd() {
  std::vector<v1::ReloadPhaseEvent> out;
  while (auto event = Next()) out.push_back(*std::move(event));
  return out;
}

grpc::Status Subscription::Finish() {
  if (!status_) status_ = reader_->Finish();
  return *status_;
}

void MakeBlockFifos(const fs::path& fifos) {
  fs::create_directories(fifos);
  ASSERT_EQ(mkfifo((fifos / "started").c_str(), 0600), 0);
  ASSERT_EQ(mkfifo((fifos / "release").c_str(), 0600), 0);
}

bool WaitForBlockedCall(const fs::path& fifos) {
  const int fd = open((fifos / "started").c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return false;
  pollfd readable{fd, POLLIN, 0};
  char byte = 0;
  const int timeout_ms = static_cast<int>(std::chrono::milliseconds(kCallDeadline).count());
  const bool started =
      poll(&readable, 1, timeout_ms) == 1 && read(fd, &byte, 1) == 1 && byte == '1';
  close(fd);
  return started;
}

void ReleaseBlockedCall(const fs::path& fifos) { std::ofstream release(fifos / "release"); }

void ReleaseBlockedCallIfWaiting(const fs::path& fifos) {
  const int fd = open((fifos / "release").c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd >= 0) close(fd);
}

}  // namespace polyplug::test
