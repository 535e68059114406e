// Helpers for tests of libpolyplug_client and polyplugctl against a real polyplug-host.
//
// SubscriptionLog records what a client::Subscription delivers and lets the test wait for
// it (condition variable, never sleeps). TcpProxy is a real TCP relay in front of the
// host's unix socket whose connections a test can cut, to drop a client's connection
// without touching the host.
#ifndef POLYPLUG_TESTS_CLIENT_CLIENT_FIXTURE_H_
#define POLYPLUG_TESTS_CLIENT_CLIENT_FIXTURE_H_

#include <sys/types.h>

#include <condition_variable>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "gtest/gtest.h"
#include "host/host_fixture.h"
#include "polyplug/client/host_client.h"
#include "support/bundle_fixture.h"

namespace polyplug::test {

// Everything one subscription delivered, in order, as compact lines:
// "PREPARING greeter", "LOADED greeter (synthetic)", "RESYNCED INITIAL greeter,shouter",
// "HOST_RESTARTED",
// "CONNECTED", "DISCONNECTED UNAVAILABLE", "STOPPED OUT_OF_RANGE". Thread-safe.
class SubscriptionLog {
 public:
  // Handlers that record into this log; the log must outlive the subscription.
  client::PhaseHandlers Handlers();

  std::vector<std::string> lines() const;
  std::vector<client::PhaseEvent> events() const;  // phase events only
  std::vector<client::Resynced> resyncs() const;
  std::vector<client::HostRestarted> restarts() const;
  std::vector<std::string> handler_threads() const;  // one per phase event: thread id text

  // Waits until `done(lines)` holds, or kCallDeadline passed (then false, and the lines so
  // far are in the test failure). `what` describes the wait for that message.
  bool WaitFor(absl::string_view what,
               const std::function<bool(const std::vector<std::string>&)>& done);
  // Waits until some line equals `line`, counting from the `after`-th line on.
  bool WaitForLine(absl::string_view line, size_t after = 0);
  // Waits until at least `n` phase events arrived.
  bool WaitForEvents(size_t n);

 private:
  void Add(std::string line);

  mutable std::mutex mu_;
  std::condition_variable changed_;
  std::vector<std::string> lines_;
  std::vector<client::PhaseEvent> events_;
  std::vector<client::Resynced> resyncs_;
  std::vector<client::HostRestarted> restarts_;
  std::vector<std::string> threads_;
};

// The lines of `log` from index `from` on, with "DISCONNECTED <CODE>" shortened to
// "DISCONNECTED": how gRPC words a broken connection (UNAVAILABLE "Socket closed", UNKNOWN
// "Stream removed", ...) depends on the moment it breaks.
std::vector<std::string> LinesFrom(const SubscriptionLog& log, size_t from);
// Waits for a "DISCONNECTED <any code>" line at or after index `after`.
bool WaitForDisconnect(SubscriptionLog& log, size_t after);

// "PREPARING greeter"; "LOADED greeter (synthetic)" for a synthetic event.
std::string Describe(const client::PhaseEvent& event);
std::vector<std::string> Describe(const std::vector<client::PhaseEvent>& events);

// A TCP listener on 127.0.0.1 relaying every connection to a unix socket. Sever() closes
// every relayed connection and refuses new ones (accepts and closes them) until Restore().
class TcpProxy {
 public:
  explicit TcpProxy(std::filesystem::path unix_socket);
  ~TcpProxy();
  TcpProxy(const TcpProxy&) = delete;
  TcpProxy& operator=(const TcpProxy&) = delete;

  std::string address() const;  // "127.0.0.1:<port>"
  void Sever();
  void Restore();
  // Connections relayed so far (accepted while not severed).
  int connections_relayed() const;

 private:
  void Loop();
  void CloseAllLocked();

  const std::filesystem::path unix_socket_;
  int listener_ = -1;
  int port_ = 0;
  int wake_[2] = {-1, -1};
  mutable std::mutex mu_;
  bool severed_ = false;
  bool stopping_ = false;
  int relayed_ = 0;
  std::map<int, int> peer_;  // fd -> the other end, both directions
  std::thread thread_;
};

// A finished child process: exit code (or 128+signal) and what it printed.
struct ProcessResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// What a ChildProcess reads as stdin: the test's own stdin, or a connection the test
// writes to (WriteLine, CloseStdin). The latter is a unix stream socket rather than a pipe,
// so that writing to a child that exited fails instead of raising SIGPIPE in the test.
enum class ChildStdin { kInherit, kFromTest };

// A child process with `env` added to its environment, its stdout on a pipe (read line by
// line, so a test can wait for output) and its stderr in a temp file. Reads wait at most
// kCallDeadline; the destructor kills a child that is still running.
class ChildProcess {
 public:
  ChildProcess(const std::vector<std::string>& argv,
               const std::vector<std::pair<std::string, std::string>>& env = {},
               ChildStdin in = ChildStdin::kInherit);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // The next line of stdout (without newline); nullopt at end of output or on timeout.
  std::optional<std::string> ReadLine();
  // With ChildStdin::kFromTest: writes `line` and a newline to the child's stdin. False
  // (with a test failure recorded) when it cannot, e.g. after CloseStdin or the child's exit.
  bool WriteLine(absl::string_view line);
  // With ChildStdin::kFromTest: closes the child's stdin (it reads end of input). Idempotent.
  void CloseStdin();
  // Sends a signal to the child.
  void Signal(int signal);
  // Closes the child's stdin (with ChildStdin::kFromTest), reads the rest of stdout, waits
  // for the exit (killing the child after kCallDeadline, recorded as a test failure) and
  // returns everything. Call once.
  ProcessResult Wait();

 private:
  TempDir dir_;
  pid_t pid_ = -1;
  int out_fd_ = -1;
  int in_fd_ = -1;        // the test's end of the child's stdin (ChildStdin::kFromTest)
  std::string buffered_;  // stdout read but not yet returned
  std::string consumed_;  // stdout returned by ReadLine
  bool waited_ = false;
};

// Runs `argv` to completion: ChildProcess(argv, env).Wait().
ProcessResult RunProcess(const std::vector<std::string>& argv,
                         const std::vector<std::pair<std::string, std::string>>& env = {});

// A test with its own bundle root and a polyplug-host on a unix socket whose path does not
// change when the host is killed and started again.
class ClientTest : public ::testing::Test {
 protected:
  const std::filesystem::path& root() const { return root_; }
  // Copies a test bundle (tests/bundles target) into root() as root()/<target>.
  std::filesystem::path Copy(absl::string_view target);
  // Copies an example bundle (examples/bundles target) into root()/<target>.
  std::filesystem::path CopyExample(absl::string_view target);

  // Starts a host serving root() at address(), with `extra_args` after --bundles;
  // `auth_token` is what the fixture's own probe sends (for --auth-token-file).
  void StartHost(std::vector<std::string> extra_args = {}, std::string auth_token = "");
  HostProcess& host() { return *host_; }
  // kill -9 of the host, and wait for it to be gone.
  void KillHost();
  // "unix:<temp dir>/host.sock".
  std::string address() const { return "unix:" + socket_path().string(); }
  std::filesystem::path socket_path() const { return dir_.path() / "host.sock"; }

  // Options for tests: short reconnect backoff, so that reconnects follow events closely.
  static client::ConnectOptions FastOptions();
  // A client of address() (or `target`); fails the test if Connect() does.
  std::unique_ptr<client::HostClient> Connect(client::ConnectOptions options = FastOptions(),
                                              std::string target = "");
  // Reloads `bundle` through `client` and expects it to succeed (a fatal failure if not).
  static void ReloadOk(client::HostClient& client, const std::string& bundle);

  TempDir dir_;
  std::filesystem::path root_ = dir_.path() / "bundles";
  std::unique_ptr<HostProcess> host_;
};

}  // namespace polyplug::test

#endif  // POLYPLUG_TESTS_CLIENT_CLIENT_FIXTURE_H_
