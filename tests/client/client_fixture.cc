#include "client/client_fixture.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "support/child_process.h"

namespace polyplug::test {

// ---- SubscriptionLog

client::PhaseHandlers SubscriptionLog::Handlers() {
  client::PhaseHandlers h;
  auto on_event = [this](const client::PhaseEvent& event) {
    std::ostringstream thread;
    thread << std::this_thread::get_id();
    // The event and its line together: a waiter that sees the event sees its line too.
    std::string line = Describe(event);
    {
      std::lock_guard<std::mutex> lock(mu_);
      events_.push_back(event);
      threads_.push_back(thread.str());
      lines_.push_back(std::move(line));
    }
    changed_.notify_all();
  };
  h.on_preparing = h.on_reloaded = h.on_failed = h.on_unloading = h.on_loaded = on_event;
  h.on_host_restarted = [this](const client::HostRestarted& restarted) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      restarts_.push_back(restarted);
      lines_.push_back("HOST_RESTARTED");
    }
    changed_.notify_all();
  };
  h.on_resynced = [this](const client::Resynced& resynced) {
    std::vector<std::string> names;
    for (const client::BundleState& b : resynced.bundles) names.push_back(b.name);
    {
      std::lock_guard<std::mutex> lock(mu_);
      resyncs_.push_back(resynced);
      lines_.push_back(absl::StrCat("RESYNCED ", client::ResyncCauseName(resynced.cause), " ",
                                    absl::StrJoin(names, ",")));
    }
    changed_.notify_all();
  };
  h.on_connection_changed = [this](const absl::Status& status) {
    Add(status.ok() ? "CONNECTED"
                    : absl::StrCat("DISCONNECTED ", absl::StatusCodeToString(status.code())));
  };
  h.on_stopped = [this](const absl::Status& status) {
    Add(absl::StrCat("STOPPED ", absl::StatusCodeToString(status.code())));
  };
  return h;
}

void SubscriptionLog::Add(std::string line) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    lines_.push_back(std::move(line));
  }
  changed_.notify_all();
}

std::vector<std::string> SubscriptionLog::lines() const {
  std::lock_guard<std::mutex> lock(mu_);
  return lines_;
}
std::vector<client::PhaseEvent> SubscriptionLog::events() const {
  std::lock_guard<std::mutex> lock(mu_);
  return events_;
}
std::vector<client::Resynced> SubscriptionLog::resyncs() const {
  std::lock_guard<std::mutex> lock(mu_);
  return resyncs_;
}
std::vector<client::HostRestarted> SubscriptionLog::restarts() const {
  std::lock_guard<std::mutex> lock(mu_);
  return restarts_;
}
std::vector<std::string> SubscriptionLog::handler_threads() const {
  std::lock_guard<std::mutex> lock(mu_);
  return threads_;
}

bool SubscriptionLog::WaitFor(absl::string_view what,
                              const std::function<bool(const std::vector<std::string>&)>& done) {
  std::unique_lock<std::mutex> lock(mu_);
  if (changed_.wait_for(lock, kCallDeadline, [&] { return done(lines_); })) return true;
  ADD_FAILURE() << "gave up waiting for " << what << "; the subscription delivered:\n  "
                << absl::StrJoin(lines_, "\n  ");
  return false;
}

bool SubscriptionLog::WaitForLine(absl::string_view line, size_t after) {
  return WaitFor(absl::StrCat("'", line, "'"), [&](const std::vector<std::string>& lines) {
    for (size_t i = after; i < lines.size(); ++i) {
      if (lines[i] == line) return true;
    }
    return false;
  });
}

bool SubscriptionLog::WaitForEvents(size_t n) {
  return WaitFor(absl::StrCat(n, " phase events"),
                 [&](const std::vector<std::string>&) { return events_.size() >= n; });
}

std::vector<std::string> LinesFrom(const SubscriptionLog& log, size_t from) {
  std::vector<std::string> lines = log.lines();
  std::vector<std::string> out(
      lines.begin() + static_cast<std::ptrdiff_t>(std::min(from, lines.size())), lines.end());
  for (std::string& line : out) {
    if (line.rfind("DISCONNECTED", 0) == 0) line = "DISCONNECTED";
  }
  return out;
}

bool WaitForDisconnect(SubscriptionLog& log, size_t after) {
  return log.WaitFor("a DISCONNECTED line", [after](const std::vector<std::string>& lines) {
    for (size_t i = after; i < lines.size(); ++i) {
      if (lines[i].rfind("DISCONNECTED", 0) == 0) return true;
    }
    return false;
  });
}

std::string Describe(const client::PhaseEvent& event) {
  return absl::StrCat(client::PhaseName(event.phase), " ", event.bundle_name,
                      event.synthetic ? " (synthetic)" : "");
}

std::vector<std::string> Describe(const std::vector<client::PhaseEvent>& events) {
  std::vector<std::string> out;
  for (const client::PhaseEvent& e : events) out.push_back(Describe(e));
  return out;
}

// ---- TcpProxy

TcpProxy::TcpProxy(std::filesystem::path unix_socket) : unix_socket_(std::move(unix_socket)) {
  listener_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (listener_ < 0 || bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      listen(listener_, 64) != 0) {
    ADD_FAILURE() << "TcpProxy: cannot listen on 127.0.0.1: " << std::strerror(errno);
    return;
  }
  socklen_t len = sizeof addr;
  getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  if (pipe2(wake_, O_CLOEXEC) != 0) ADD_FAILURE() << "TcpProxy: pipe: " << std::strerror(errno);
  thread_ = std::thread([this] { Loop(); });
}

TcpProxy::~TcpProxy() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  if (wake_[1] >= 0) (void)!write(wake_[1], "x", 1);
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> lock(mu_);
  CloseAllLocked();
  for (int fd : {listener_, wake_[0], wake_[1]}) {
    if (fd >= 0) close(fd);
  }
}

std::string TcpProxy::address() const { return absl::StrCat("127.0.0.1:", port_); }

void TcpProxy::Sever() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    severed_ = true;
  }
  (void)!write(wake_[1], "s", 1);  // the loop closes the connections
}

void TcpProxy::Restore() {
  std::lock_guard<std::mutex> lock(mu_);
  severed_ = false;
}

int TcpProxy::connections_relayed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return relayed_;
}

void TcpProxy::CloseAllLocked() {
  for (const auto& [fd, other] : peer_) {
    shutdown(fd, SHUT_RDWR);
    close(fd);
  }
  peer_.clear();
}

void TcpProxy::Loop() {
  while (true) {
    std::vector<pollfd> fds = {{wake_[0], POLLIN, 0}, {listener_, POLLIN, 0}};
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
      if (severed_) CloseAllLocked();
      for (const auto& [fd, other] : peer_) fds.push_back({fd, POLLIN, 0});
    }
    if (poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[0].revents & POLLIN) {
      char drain[64];
      (void)!read(wake_[0], drain, sizeof drain);
      continue;  // re-evaluate stop/sever first
    }
    // Relay first: a descriptor closed below may be reused by the accept that follows.
    for (size_t i = 2; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      std::lock_guard<std::mutex> lock(mu_);
      auto it = peer_.find(fds[i].fd);
      if (it == peer_.end()) continue;
      const int from = it->first, to = it->second;
      char buffer[65536];
      const ssize_t n = read(from, buffer, sizeof buffer);
      bool broken = n <= 0;
      for (ssize_t done = 0; !broken && done < n;) {
        // MSG_NOSIGNAL: a peer that closed is a broken relay, not a SIGPIPE for the test.
        const ssize_t w = send(to, buffer + done, static_cast<size_t>(n - done), MSG_NOSIGNAL);
        if (w <= 0) broken = true;
        done += w > 0 ? w : 0;
      }
      if (broken) {
        for (int fd : {from, to}) {
          shutdown(fd, SHUT_RDWR);
          close(fd);
          peer_.erase(fd);
        }
      }
    }
    if (fds[1].revents & POLLIN) {
      const int client = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client >= 0) {
        std::lock_guard<std::mutex> lock(mu_);
        const int upstream = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strncpy(addr.sun_path, unix_socket_.c_str(), sizeof addr.sun_path - 1);
        if (severed_ || upstream < 0 ||
            connect(upstream, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
          if (upstream >= 0) close(upstream);
          shutdown(client, SHUT_RDWR);
          close(client);
        } else {
          peer_[client] = upstream;
          peer_[upstream] = client;
          ++relayed_;
        }
      }
    }
  }
}

// ---- ChildProcess

ChildProcess::ChildProcess(const std::vector<std::string>& argv,
                           const std::vector<std::pair<std::string, std::string>>& env,
                           ChildStdin in) {
  int out_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe: " << std::strerror(errno);
    return;
  }
  int in_pair[2] = {-1, -1};  // [0] the test's end, [1] the child's stdin
  if (in == ChildStdin::kFromTest &&
      socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in_pair) != 0) {
    ADD_FAILURE() << "socketpair: " << std::strerror(errno);
    close(out_pipe[0]);
    close(out_pipe[1]);
    return;
  }
  SpawnOptions spawn;
  spawn.argv = argv;
  spawn.env = env;
  spawn.in = in_pair[1] >= 0 ? Redirect::Fd(in_pair[1]) : Redirect::Inherit();
  spawn.out = Redirect::Fd(out_pipe[1]);
  spawn.err = Redirect::Truncate(dir_.path() / "stderr");
  absl::StatusOr<pid_t> pid = Spawn(spawn);
  pid_ = pid.ok() ? *pid : -1;
  close(out_pipe[1]);
  out_fd_ = out_pipe[0];
  if (in_pair[1] >= 0) {
    close(in_pair[1]);
    in_fd_ = in_pair[0];
  }
  if (!pid.ok()) ADD_FAILURE() << pid.status();
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && !waited_) {
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
  }
  if (out_fd_ >= 0) close(out_fd_);
  CloseStdin();
}

std::optional<std::string> ChildProcess::ReadLine() {
  const auto give_up = std::chrono::steady_clock::now() + kCallDeadline;
  while (true) {
    if (const size_t nl = buffered_.find('\n'); nl != std::string::npos) {
      std::string line = buffered_.substr(0, nl);
      consumed_ += buffered_.substr(0, nl + 1);
      buffered_.erase(0, nl + 1);
      return line;
    }
    if (out_fd_ < 0) return std::nullopt;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        give_up - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      ADD_FAILURE() << "gave up waiting for a line of output; so far: " << consumed_ << buffered_;
      return std::nullopt;
    }
    pollfd p{out_fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char buffer[4096];
    const ssize_t n = read(out_fd_, buffer, sizeof buffer);
    if (n <= 0) {
      close(out_fd_);
      out_fd_ = -1;
      if (buffered_.empty()) return std::nullopt;
      buffered_.push_back('\n');  // a last line without newline
      continue;
    }
    buffered_.append(buffer, static_cast<size_t>(n));
  }
}

bool ChildProcess::WriteLine(absl::string_view line) {
  if (in_fd_ < 0) {
    ADD_FAILURE() << "WriteLine(\"" << line << "\"): the child's stdin is not open";
    return false;
  }
  const std::string data = absl::StrCat(line, "\n");
  for (size_t done = 0; done < data.size();) {
    // MSG_NOSIGNAL: a child that exited is an error here, not a SIGPIPE for the test.
    const ssize_t n = send(in_fd_, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ADD_FAILURE() << "WriteLine(\"" << line << "\"): " << std::strerror(errno);
      return false;
    }
    done += static_cast<size_t>(n);
  }
  return true;
}

void ChildProcess::CloseStdin() {
  if (in_fd_ >= 0) close(in_fd_);
  in_fd_ = -1;
}

void ChildProcess::Signal(int signal) {
  if (pid_ > 0 && !waited_) kill(pid_, signal);
}

ProcessResult ChildProcess::Wait() {
  ProcessResult result;
  CloseStdin();
  while (ReadLine().has_value()) {
  }
  result.out = consumed_ + buffered_;
  if (pid_ > 0) {
    // Wait for the exit on a pidfd, bounded by kCallDeadline.
    int status = 0;
    const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid_, 0));
    pollfd p{pidfd, POLLIN, 0};
    if (pidfd < 0 ||
        poll(&p, 1, static_cast<int>(std::chrono::milliseconds(kCallDeadline).count())) != 1) {
      ADD_FAILURE() << "the process did not exit; killing it";
      kill(pid_, SIGKILL);
    }
    if (pidfd >= 0) close(pidfd);
    waitpid(pid_, &status, 0);
    waited_ = true;
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  result.err = ReadFile(dir_.path() / "stderr");
  return result;
}

// ---- ClientTest

std::filesystem::path ClientTest::Copy(absl::string_view target) {
  std::filesystem::create_directories(root_);
  return CopyTestBundle(target, root_);
}

std::filesystem::path ClientTest::CopyExample(absl::string_view target) {
  std::filesystem::create_directories(root_);
  return CopyBundle(std::filesystem::path(POLYPLUG_EXAMPLE_BUNDLES_DIR) / std::string(target),
                    root_ / std::string(target));
}

void ClientTest::StartHost(std::vector<std::string> extra_args, std::string auth_token) {
  std::filesystem::create_directories(root_);
  std::vector<std::string> args = {"--bundles", root_.string()};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  host_ = std::make_unique<HostProcess>(args, std::move(auth_token));
  host_->SetAddress(address());
  const absl::Status started = host_->Start();
  ASSERT_TRUE(started.ok()) << started;
}

void ClientTest::KillHost() {
  host_->Kill(SIGKILL);
  host_->WaitExit();
}

client::ConnectOptions ClientTest::FastOptions() {
  client::ConnectOptions options;
  options.reconnect_initial_backoff = absl::Milliseconds(20);
  options.reconnect_max_backoff = absl::Milliseconds(200);
  options.call_timeout = absl::FromChrono(kCallDeadline);
  return options;
}

std::unique_ptr<client::HostClient> ClientTest::Connect(client::ConnectOptions options,
                                                        std::string target) {
  auto connected = client::HostClient::Connect(target.empty() ? address() : target, options);
  EXPECT_TRUE(connected.ok()) << connected.status();
  return connected.ok() ? std::move(*connected) : nullptr;
}

void ClientTest::ReloadOk(client::HostClient& client, const std::string& bundle) {
  auto response = client.Reload(bundle);
  ASSERT_TRUE(response.ok()) << response.status();
  ASSERT_EQ(response->outcome(), host::v1::RELOAD_OUTCOME_RELOADED) << response->message();
}

ProcessResult RunProcess(const std::vector<std::string>& argv,
                         const std::vector<std::pair<std::string, std::string>>& env) {
  ChildProcess child(argv, env);
  return child.Wait();
}

}  // namespace polyplug::test
