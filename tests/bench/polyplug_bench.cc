// polyplug-bench: end-to-end measurements against a real polyplug-host it starts itself.
//
// Each figure is reported next to a floor measured in the same run, as a ratio, because
// these machines are shared and drift. Sections so far:
//   remote-calls  Invoke of a trivial method (the counter bundle's "echo") on an instance,
//                 against FindContract, on the same HostClient (one connection); the two
//                 are interleaved so drift hits both alike.
//
// polyplug-bench [--json] [--quick] [--iterations N]
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "polyplug/client/host_client.h"

extern char** environ;

namespace {

namespace fs = std::filesystem;

struct Options {
  bool json = false;
  int iterations = 5000;
  int warmup = 500;
};

// A polyplug-host serving a copy of the counter test bundle in a scratch directory.
class BenchHost {
 public:
  BenchHost() {
    std::string pattern = (fs::temp_directory_path() / "polyplug-bench-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) {
      std::perror("polyplug-bench: mkdtemp");
      std::exit(1);
    }
    dir_ = pattern;
    const fs::path bundles = dir_ / "bundles";
    fs::create_directories(bundles);
    fs::copy(fs::path(POLYPLUG_TEST_BUNDLES_DIR) / "counter_v1", bundles / "counter",
             fs::copy_options::recursive);
    address_ = "unix:" + (dir_ / "host.sock").string();
    std::vector<std::string> args = {POLYPLUG_HOST_BINARY,
                                     "--bundles",
                                     bundles.string(),
                                     "--listen",
                                     address_,
                                     "--state-dir",
                                     (dir_ / "state").string()};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    // The host's log goes to a file: the bench's own output stays parseable.
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    const std::string log = (dir_ / "host.log").string();
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
    const int spawned = posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (spawned != 0) {
      std::fprintf(stderr, "polyplug-bench: cannot start %s\n", argv[0]);
      std::exit(1);
    }
  }
  ~BenchHost() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status = 0;
      waitpid(pid_, &status, 0);
    }
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  const std::string& address() const { return address_; }

 private:
  fs::path dir_;
  std::string address_;
  pid_t pid_ = -1;
};

struct Percentiles {
  double p50_us = 0;
  double p99_us = 0;
};

Percentiles Summarise(std::vector<double> samples_us) {
  std::sort(samples_us.begin(), samples_us.end());
  auto at = [&](double q) {
    return samples_us[std::min(samples_us.size() - 1,
                               static_cast<size_t>(q * static_cast<double>(samples_us.size())))];
  };
  return {at(0.50), at(0.99)};
}

template <typename Fn>
double TimeOnceUs(Fn&& fn) {
  const auto start = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
      .count();
}

int Fail(const absl::Status& status, const char* what) {
  std::fprintf(stderr, "polyplug-bench: %s: %s\n", what, status.ToString().c_str());
  return 1;
}

int RunRemoteCalls(const Options& options) {
  BenchHost host;
  auto client = polyplug::client::HostClient::Connect(host.address());
  if (!client.ok()) return Fail(client.status(), "connect");
  polyplug::client::CallOptions patient;
  patient.wait_for_ready = true;
  patient.timeout = absl::Seconds(30);
  if (auto info = (*client)->GetHostInfo(patient); !info.ok()) return Fail(info.status(), "host");
  auto instance = (*client)->CreateInstance("test.counter@1");
  if (!instance.ok()) return Fail(instance.status(), "CreateInstance");

  std::vector<double> find_us, invoke_us;
  bool failed = false;
  for (int i = 0; i < options.warmup + options.iterations; ++i) {
    const double find =
        TimeOnceUs([&] { failed |= !(*client)->FindContract("test.counter@1").ok(); });
    const double invoke =
        TimeOnceUs([&] { failed |= !(*client)->Invoke(*instance, "echo", "ping").ok(); });
    if (i < options.warmup) continue;
    find_us.push_back(find);
    invoke_us.push_back(invoke);
  }
  if (failed) {
    std::fprintf(stderr, "polyplug-bench: a call failed during the run\n");
    return 1;
  }
  const Percentiles find = Summarise(find_us);
  const Percentiles invoke = Summarise(invoke_us);
  if (options.json) {
    std::printf(
        "{\"section\": \"remote-calls\", \"transport\": \"unix\", \"iterations\": %d, "
        "\"find_contract_p50_us\": %.1f, \"find_contract_p99_us\": %.1f, "
        "\"invoke_p50_us\": %.1f, \"invoke_p99_us\": %.1f, "
        "\"invoke_over_find_p50\": %.3f, \"invoke_over_find_p99\": %.3f}\n",
        options.iterations, find.p50_us, find.p99_us, invoke.p50_us, invoke.p99_us,
        invoke.p50_us / find.p50_us, invoke.p99_us / find.p99_us);
  } else {
    std::printf("remote-calls (unix socket, one connection, %d interleaved pairs)\n",
                options.iterations);
    std::printf("  %-28s %10s %10s\n", "", "p50 us", "p99 us");
    std::printf("  %-28s %10.1f %10.1f\n", "FindContract (floor)", find.p50_us, find.p99_us);
    std::printf("  %-28s %10.1f %10.1f\n", "Invoke echo on an instance", invoke.p50_us,
                invoke.p99_us);
    std::printf("  %-28s %10.3f %10.3f\n", "ratio Invoke / FindContract",
                invoke.p50_us / find.p50_us, invoke.p99_us / find.p99_us);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--json") {
      options.json = true;
    } else if (arg == "--quick") {
      options.iterations = 300;
      options.warmup = 50;
    } else if (arg == "--iterations" && i + 1 < argc &&
               absl::SimpleAtoi(argv[++i], &options.iterations) && options.iterations > 0) {
    } else {
      std::fprintf(stderr, "usage: polyplug-bench [--json] [--quick] [--iterations N]\n");
      return 2;
    }
  }
  return RunRemoteCalls(options);
}
