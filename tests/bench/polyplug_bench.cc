// polyplug-bench: end-to-end measurements against a real polyplug-host it starts itself.
//
// Shared machines drift, so every figure is reported next to a floor measured in the same
// run (interleaved with it where the two are single calls), as a ratio, with the target of
// issue 8. Sections (--section NAME, repeatable; all by default):
//   rpc         FindContract and Invoke (a trivial method on an instance) against Echo, the
//               host's do-nothing RPC, on a unix socket and on TCP loopback: p50 and p99.
//   reload      Reload end to end (the call is sent until a subscriber holds RELOADED)
//               against copy + dlopen + polyplug_init + dlclose of the same bundle in this
//               process plus one Echo.
//   push        PushBundle of a 16 MiB bundle (a copy of the counter test bundle and a data
//               file), versions 1 and 2 in turn so that each push reloads, against
//               EchoStream of the same bytes in the same 1 MiB messages on a channel made
//               like the HostClient's, interleaved; and against copying the same files into
//               a bundle directory + Runtime::ReloadBundle in this process.
//   fanout      One reload with 1, 100 and 1,000 subscribed streams over 8 channels: time
//               from the event until the last subscriber holds RELOADED; host CPU per
//               delivered event (against the same reloads with no subscriber); host memory
//               and threads per idle subscriber. Each next to the same figure of a bare
//               gRPC broadcaster (polyplug-fanout-floor) measured alongside.
//   sporadic    FindContract and Reload each after 1-2 s of idleness: the worst call, next
//               to Echo after the same idleness (each kind on a host of its own, side by
//               side).
//   sustained   50 reloads per second with 100 subscribers: missed events, p99 reload
//               latency, host CPU.
//   throughput  FindContract and Invoke calls per second from 8 concurrent clients, next to
//               Echo likewise.
//   embedded    A game loop in this process embedding the host (OperationThread::
//               kApplication), each frame calling a bundle through a core handle. The time
//               of a frame that runs a reload requested over gRPC at its boundary (worst
//               and p99 over 100), against frames that run the same reload by calling the
//               runtime directly at the boundary (the in-process floor), interleaved; and
//               the p99 frame time while 8 clients (another process) hammer FindContract
//               and Invoke, against the same frames with no client (before and after) and
//               against the same frames while the clients hammer a separate polyplug-host.
//   fleet       A fleet (docs/FLEET.md) of 5 polyplug-host processes over a 3-member etcd
//               cluster started here: polyplugctl rollout of versions 1 and 2 in turn; the
//               time from the write of the desired state until every host acknowledged it,
//               against one etcd watch notification (a write until a watcher holds it) plus
//               one in-process reload (as in `reload`), interleaved. Then the etcd writes
//               one rollout makes with 5, 20 and 50 hosts (must grow linearly), and its
//               time there.
//   python      The Python client (client/python, tests/bench/python_client_bench.py)
//               against the C++ client on one host: FindContract and Reload per call (the
//               Python overhead, no target), and the events per second each subscriber takes
//               in while the host replays its journal as fast as the reader reads.
// --quick shortens every section (the whole run takes well under a minute) and is a smoke
// test: it shows the benchmark works, never how fast anything is. --json prints one object
// per figure.
//
// polyplug-bench [--json] [--quick] [--section NAME]... [--sporadic-calls N]
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "fleet/etcd_cluster.h"
#include "fleet/src/etcd_client.h"
#include "fleet/src/fleet_follower.h"
#include "fleet/src/fleet_keys.h"
#include "floor_load.h"
#include "polyplug/abi.h"
#include "polyplug/client/host_client.h"
#include "polyplug/client/subscription.h"
#include "polyplug/core/ids.h"
#include "polyplug/core/runtime.h"
#include "polyplug/host/host_server.h"
#include "polyplug/host/v1/host.grpc.pb.h"
#include "support/child_process.h"
#include "wire/wire.h"

namespace {

namespace fs = std::filesystem;
namespace v1 = polyplug::host::v1;
using polyplug::client::CallOptions;
using polyplug::client::HostClient;
using Clock = std::chrono::steady_clock;

struct Options {
  bool json = false;
  bool quick = false;
  std::set<std::string> sections;
  int sporadic_calls = 1000;

  bool Wants(const std::string& section) const {
    return sections.empty() || sections.contains(section);
  }
};

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "polyplug-bench: %s\n", what.c_str());
  std::exit(1);
}

template <typename T>
T Check(absl::StatusOr<T> result, const std::string& what) {
  if (!result.ok()) Die(absl::StrCat(what, ": ", result.status().ToString()));
  return *std::move(result);
}

double ElapsedUs(Clock::time_point start) {
  return std::chrono::duration<double, std::micro>(Clock::now() - start).count();
}

std::string ReadFileText(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// ---- Reporting ------------------------------------------------------------------------

struct Percentiles {
  double p50 = 0;
  double p99 = 0;
  double max = 0;
};

Percentiles Summarise(std::vector<double> samples) {
  if (samples.empty()) return {};
  std::sort(samples.begin(), samples.end());
  auto at = [&](double q) {
    return samples[std::min(samples.size() - 1,
                            static_cast<size_t>(q * static_cast<double>(samples.size())))];
  };
  return {at(0.50), at(0.99), samples.back()};
}

// One reported figure: a value, and, when it has one, its floor and target.
struct Figure {
  std::string section;
  std::string name;
  double value = 0;
  std::string unit;
  std::optional<double> floor;  // same unit
  // The target: the ratio value/floor (or the value itself when there is no floor) must
  // be at most this. Absent: reported only.
  std::optional<double> target;
  std::string note;
};

class Report {
 public:
  explicit Report(const Options& options) : options_(options) {}

  void Add(Figure f) {
    const std::optional<double> ratio =
        f.floor && *f.floor > 0 ? std::optional<double>(f.value / *f.floor) : std::nullopt;
    const double judged = ratio.value_or(f.value);
    const bool met = f.target.has_value() && judged <= *f.target;
    if (f.target) {
      ++judged_;
      if (!met) ++missed_;
    }
    if (options_.json) {
      std::string line = absl::StrFormat(
          "{\"section\": \"%s\", \"name\": \"%s\", \"value\": %.3f, \"unit\": \"%s\"", f.section,
          f.name, f.value, f.unit);
      if (f.floor) absl::StrAppendFormat(&line, ", \"floor\": %.3f", *f.floor);
      if (ratio) absl::StrAppendFormat(&line, ", \"ratio\": %.3f", *ratio);
      if (f.target) {
        absl::StrAppendFormat(&line, ", \"target\": %.3f, \"met\": %s", *f.target,
                              met ? "true" : "false");
      }
      if (!f.note.empty()) absl::StrAppendFormat(&line, ", \"note\": \"%s\"", f.note);
      std::printf("%s}\n", line.c_str());
    } else {
      if (f.section != last_section_) {
        std::printf("\n[%s]\n", f.section.c_str());
        last_section_ = f.section;
      }
      std::string text = absl::StrFormat("  %-44s %10.2f %-6s", f.name, f.value, f.unit);
      if (f.floor) absl::StrAppendFormat(&text, "  floor %9.2f", *f.floor);
      if (ratio) absl::StrAppendFormat(&text, "  ratio %5.2f", *ratio);
      if (f.target) {
        absl::StrAppendFormat(&text, "  target <= %g%s %s", *f.target,
                              ratio ? "" : absl::StrCat(" ", f.unit).c_str(),
                              met ? "met" : "MISSED");
      }
      if (!f.note.empty()) absl::StrAppend(&text, "  (", f.note, ")");
      std::printf("%s\n", text.c_str());
    }
    std::fflush(stdout);
  }

  void Summary() const {
    if (options_.json) {
      std::printf("{\"section\": \"summary\", \"targets\": %d, \"missed\": %d, \"quick\": %s}\n",
                  judged_, missed_, options_.quick ? "true" : "false");
    } else {
      std::printf("\n%d targets, %d missed%s\n", judged_, missed_,
                  options_.quick ? " (--quick: too few samples to judge anything)" : "");
    }
  }

 private:
  const Options& options_;
  std::string last_section_;
  int judged_ = 0;
  int missed_ = 0;
};

// ---- The host --------------------------------------------------------------------------

// What /proc says about a process.
struct ProcessSample {
  double cpu_seconds = 0;  // user + system
  double switches_in = 0;  // times any of its threads was put on a CPU
  double rss_kib = 0;
  int threads = 0;
};

ProcessSample SampleProcess(pid_t pid) {
  ProcessSample sample;
  // Each thread's time on a CPU, in ns (/proc/<pid>/stat counts whole clock ticks, 10 ms,
  // too coarse for microseconds per event).
  std::error_code ec;
  for (const fs::directory_entry& task :
       fs::directory_iterator(absl::StrCat("/proc/", pid, "/task"), ec)) {
    // Time on a CPU (ns), time waiting for one (ns), times it was put on one.
    std::ifstream schedstat(task.path() / "schedstat");
    double ns = 0, waited_ns = 0, slices = 0;
    if (schedstat >> ns >> waited_ns >> slices) {
      sample.cpu_seconds += ns / 1e9;
      sample.switches_in += slices;
    }
  }
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    std::vector<std::string> parts =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (parts.size() < 2) continue;
    if (parts[0] == "VmRSS:") (void)absl::SimpleAtod(parts[1], &sample.rss_kib);
    if (parts[0] == "Threads:") (void)absl::SimpleAtoi(parts[1], &sample.threads);
  }
  return sample;
}

// A scratch directory of this run, removed with it.
class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = (fs::temp_directory_path() / "polyplug-bench-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) Die("mkdtemp failed");
    path_ = pattern;
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// A server process of the bench, its output in `log` so that the bench's own output stays
// parseable; stopped with SIGTERM and reaped on destruction, and sent SIGTERM by the kernel
// if the bench dies first (killed, or its output pipe closed), so that no server outlives
// it. The parent-death signal follows the thread that started the server: each server
// here is started and stopped by the same thread.
class ServerProcess {
 public:
  ServerProcess(std::vector<std::string> args, const fs::path& log) {
    polyplug::test::SpawnOptions spawn;
    spawn.argv = std::move(args);
    spawn.out = polyplug::test::Redirect::Truncate(log);
    spawn.err = polyplug::test::Redirect::ToStdout();
    spawn.death_signal = SIGTERM;  // the server cleans its socket up
    absl::StatusOr<pid_t> pid = polyplug::test::Spawn(spawn);
    if (!pid.ok()) Die(std::string(pid.status().message()));
    pid_ = *pid;
  }
  ~ServerProcess() {
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
  }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  pid_t pid() const { return pid_; }
  ProcessSample Sample() const { return SampleProcess(pid_); }

 private:
  pid_t pid_ = -1;
};

// A client of a bench server, with a connection of its own.
std::unique_ptr<HostClient> Connect(const std::string& target) {
  polyplug::client::ConnectOptions options;
  options.call_timeout = absl::Seconds(60);
  return Check(HostClient::Connect(target, options), "connect to " + target);
}

// Connect(), once the server answers.
std::unique_ptr<HostClient> ConnectWhenUp(const std::string& target) {
  std::unique_ptr<HostClient> client = Connect(target);
  CallOptions patient;
  patient.wait_for_ready = true;
  patient.timeout = absl::Seconds(30);
  Check(client->Echo("up?", patient), absl::StrCat(target, " did not start"));
  return client;
}

// A server process of the bench's in a scratch directory of its own, listening (at least)
// on a unix socket there, with a client connected once it answers.
class BenchServer {
 public:
  BenchServer(const BenchServer&) = delete;
  BenchServer& operator=(const BenchServer&) = delete;

  const std::string& unix_address() const { return unix_; }
  HostClient& client() { return *client_; }
  pid_t pid() const { return process_->pid(); }
  ProcessSample Sample() const { return process_->Sample(); }

 protected:
  explicit BenchServer(const std::string& socket_name)
      : unix_("unix:" + (dir_.path() / socket_name).string()) {}
  ~BenchServer() {
    client_.reset();
    process_.reset();  // before the scratch directory goes
  }

  const fs::path& dir() const { return dir_.path(); }
  // Runs `args` (output to `log_name` in the scratch directory) and waits until it answers.
  void Start(std::vector<std::string> args, const std::string& log_name) {
    process_.emplace(std::move(args), dir_.path() / log_name);
    client_ = ConnectWhenUp(unix_);
  }

 private:
  ScratchDir dir_;
  std::string unix_;
  std::optional<ServerProcess> process_;
  std::unique_ptr<HostClient> client_;
};

// A polyplug-host serving a copy of the counter test bundle, on a unix socket and a TCP
// loopback port.
class BenchHost : public BenchServer {
 public:
  explicit BenchHost(std::vector<std::string> extra_args = {}) : BenchServer("host.sock") {
    const fs::path bundles = dir() / "bundles";
    fs::create_directories(bundles);
    fs::copy(CounterBundle(), bundles / "counter", fs::copy_options::recursive);
    std::vector<std::string> args = {POLYPLUG_HOST_BINARY,
                                     "--bundles",
                                     bundles.string(),
                                     "--listen",
                                     unix_address() + ",127.0.0.1:0",
                                     "--state-dir",
                                     (dir() / "state").string()};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    Start(std::move(args), "host.log");
    const v1::HostInfo info = Check(client().GetHostInfo(), "GetHostInfo");
    for (const std::string& address : info.listen_addresses()) {
      if (address.rfind("unix:", 0) != 0) tcp_ = address;
    }
  }

  static fs::path CounterBundle() { return fs::path(POLYPLUG_TEST_BUNDLES_DIR) / "counter_v1"; }

  const std::string& tcp_address() const { return tcp_; }

 private:
  std::string tcp_;
};

// ---- rpc -----------------------------------------------------------------------------

void RunRpc(const Options& options, Report& report) {
  BenchHost host;
  const int iterations = options.quick ? 300 : 5000;
  const int warmup = options.quick ? 50 : 500;
  for (const auto& [transport, address] :
       {std::pair<std::string, std::string>{"unix", host.unix_address()},
        {"tcp", host.tcp_address()}}) {
    auto client = Connect(address);
    const v1::InstanceRef instance =
        Check(client->CreateInstance("test.counter@1"), "CreateInstance");
    std::vector<double> echo, find, invoke;
    for (int i = 0; i < warmup + iterations; ++i) {
      auto start = Clock::now();
      Check(client->Echo("ping"), "Echo");
      const double e = ElapsedUs(start);
      start = Clock::now();
      Check(client->FindContract("test.counter@1"), "FindContract");
      const double f = ElapsedUs(start);
      start = Clock::now();
      Check(client->Invoke(instance, "echo", "ping"), "Invoke");
      const double v = ElapsedUs(start);
      if (i < warmup) continue;
      echo.push_back(e);
      find.push_back(f);
      invoke.push_back(v);
    }
    const Percentiles e = Summarise(echo), f = Summarise(find), v = Summarise(invoke);
    const std::string at = absl::StrCat(" (", transport, ")");
    report.Add({"rpc", "FindContract p50" + at, f.p50, "us", e.p50, 1.10, "floor: Echo p50"});
    report.Add({"rpc", "FindContract p99" + at, f.p99, "us", e.p99, 1.10, "floor: Echo p99"});
    report.Add({"rpc", "Invoke p50" + at, v.p50, "us", e.p50, 1.15, "floor: Echo p50"});
    report.Add({"rpc", "Invoke p99" + at, v.p99, "us", e.p99, 1.15, "floor: Echo p99"});
  }
}

// ---- reload --------------------------------------------------------------------------

// The reload floor (floor_load.h), timed.
double InProcessLoadUs(const fs::path& library, const fs::path& scratch, int n) {
  const auto start = Clock::now();
  const std::string error =
      polyplug::bench::LoadInitUnload(library, scratch / absl::StrCat("floor-", n, ".so"));
  if (!error.empty()) Die(error);
  return ElapsedUs(start);
}

// Phase events a client-library subscription delivered, with when each arrived.
class ReloadedWaiter {
 public:
  polyplug::client::PhaseHandlers Handlers() {
    polyplug::client::PhaseHandlers h;
    h.on_reloaded = [this](const polyplug::client::PhaseEvent& e) {
      std::lock_guard<std::mutex> lock(mu_);
      arrived_[e.reload_id] = Clock::now();
      cv_.notify_all();
    };
    h.on_resynced = [this](const polyplug::client::Resynced&) {
      std::lock_guard<std::mutex> lock(mu_);
      synced_ = true;
      cv_.notify_all();
    };
    return h;
  }
  void WaitSynced() {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, std::chrono::seconds(30), [&] { return synced_; })) {
      Die("the subscription did not start");
    }
  }
  Clock::time_point WaitReloaded(uint64_t reload_id) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, std::chrono::seconds(30),
                      [&] { return arrived_.contains(reload_id); })) {
      Die("RELOADED did not arrive");
    }
    return arrived_.at(reload_id);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool synced_ = false;
  std::map<uint64_t, Clock::time_point> arrived_;
};

void RunReload(const Options& options, Report& report) {
  BenchHost host;
  HostClient& client = host.client();
  ReloadedWaiter waiter;
  auto subscription = client.Subscribe(waiter.Handlers());
  waiter.WaitSynced();
  const ScratchDir floor_dir;
  const fs::path& scratch = floor_dir.path();
  const fs::path library = BenchHost::CounterBundle() / "libcounter.so";
  const int iterations = options.quick ? 40 : 500;
  const int warmup = options.quick ? 5 : 20;
  std::vector<double> reload, floor;
  for (int i = 0; i < warmup + iterations; ++i) {
    const double load_us = InProcessLoadUs(library, scratch, i);
    auto start = Clock::now();
    Check(client.Echo("ping"), "Echo");
    const double echo_us = ElapsedUs(start);
    start = Clock::now();
    const v1::ReloadResponse response = Check(client.Reload("counter"), "Reload");
    if (response.outcome() != v1::RELOAD_OUTCOME_RELOADED) Die("the reload failed");
    const Clock::time_point held = waiter.WaitReloaded(response.reload_id());
    if (i < warmup) continue;
    reload.push_back(std::chrono::duration<double, std::micro>(held - start).count());
    floor.push_back(load_us + echo_us);
  }
  const Percentiles r = Summarise(reload), f = Summarise(floor);
  report.Add({"reload", "Reload until a subscriber holds RELOADED p50", r.p50, "us", f.p50, 1.5,
              "floor: in-process copy+dlopen+init+dlclose + Echo"});
  report.Add({"reload", "Reload until a subscriber holds RELOADED p99", r.p99, "us", f.p99,
              std::nullopt, "same floor"});
}

// ---- push ----------------------------------------------------------------------------

// What a pushed bundle weighs, all its files together, and the messages its bytes travel
// in (HostClient::PushBundle's chunks, client/src/bundle_push.cc).
constexpr uint64_t kPushBundleBytes = uint64_t{16} << 20;
constexpr size_t kPushChunkBytes = size_t{1} << 20;

// A copy of the test bundle `bundle` in `dir` with a data file of pseudo-random bytes
// (from `seed`) that brings its files to kPushBundleBytes.
fs::path MakePushBundle(const fs::path& bundle, const fs::path& dir, uint64_t seed) {
  fs::copy(bundle, dir, fs::copy_options::recursive);
  uint64_t size = 0;
  for (const fs::directory_entry& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) size += entry.file_size();
  }
  if (size >= kPushBundleBytes) Die(absl::StrCat(bundle.string(), " is larger than 16 MiB"));
  std::string data(kPushBundleBytes - size, '\0');
  std::mt19937_64 random(seed);
  for (size_t at = 0; at + 8 <= data.size(); at += 8) {
    const uint64_t word = random();
    std::memcpy(data.data() + at, &word, 8);
  }
  std::ofstream out(dir / "data.bin", std::ios::binary);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  if (!out.flush()) Die(absl::StrCat("cannot write ", (dir / "data.bin").string()));
  return dir;
}

// The bytes of the files below `dir`, one after the other in the order PushBundle sends
// them (by relative path).
std::string BundleBytes(const fs::path& dir) {
  std::vector<fs::path> files;
  for (const fs::directory_entry& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) files.push_back(entry.path().lexically_relative(dir));
  }
  std::sort(files.begin(), files.end(), [](const fs::path& a, const fs::path& b) {
    return a.generic_string() < b.generic_string();
  });
  std::string bytes;
  for (const fs::path& file : files) bytes += ReadFileText(dir / file);
  return bytes;
}

// A channel made as HostClient::Connect makes its own (client/src/host_client.cc): the same
// target, credentials and arguments. HostClient does not hand its channel out, and gRPC's
// subchannel pool gives channels alike the same connection.
std::shared_ptr<grpc::Channel> ChannelLikeHostClient(const std::string& target) {
  const polyplug::client::ConnectOptions defaults;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(defaults.max_message_bytes);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30'000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10'000);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetLoadBalancingPolicyName("round_robin");
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(defaults.reconnect_initial_backoff)));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(defaults.reconnect_max_backoff)));
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

// The sockets process `pid` holds open: its listeners and its connections.
int SocketCount(pid_t pid) {
  int sockets = 0;
  std::error_code ec;
  for (const fs::directory_entry& fd :
       fs::directory_iterator(absl::StrCat("/proc/", pid, "/fd"), ec)) {
    std::error_code link_ec;
    if (fs::read_symlink(fd.path(), link_ec).string().rfind("socket:", 0) == 0) ++sockets;
  }
  return sockets;
}

// EchoStream of `bytes` in messages of kPushChunkBytes, each copied into its message as
// PushBundle reads a file into its own: the time of the whole call, in us.
double EchoStreamUs(v1::PluginHost::Stub& stub, const std::string& bytes) {
  const auto start = Clock::now();
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  v1::EchoStreamResponse response;
  std::unique_ptr<grpc::ClientWriter<v1::EchoRequest>> writer =
      stub.EchoStream(&context, &response);
  v1::EchoRequest request;
  for (size_t at = 0; at < bytes.size(); at += kPushChunkBytes) {
    request.mutable_payload()->assign(bytes, at, kPushChunkBytes);
    if (!writer->Write(request)) break;
  }
  writer->WritesDone();
  const grpc::Status status = writer->Finish();
  if (!status.ok()) Die(absl::StrCat("EchoStream: ", status.error_message()));
  if (response.bytes() != bytes.size()) Die("EchoStream: the host did not receive every byte");
  return ElapsedUs(start);
}

// A polyplug-host that takes pushes into a deploy root of its own and serves nothing else.
class PushHost : public BenchServer {
 public:
  PushHost() : BenchServer("host.sock") {
    Start({POLYPLUG_HOST_BINARY, "--deploy-root", (dir() / "deploy").string(), "--listen",
           unix_address(), "--state-dir", (dir() / "state").string()},
          "host.log");
  }
};

// The push's in-process floor: a runtime in this process with the bundle loaded from a
// directory of its own; a version is deployed by copying its files over that directory's
// (no fsync, as a build or `cp` writes them) and calling Runtime::ReloadBundle.
class InProcessDeploy {
 public:
  explicit InProcessDeploy(const fs::path& first) : bundle_(dir_.path() / "counter") {
    fs::copy(first, bundle_, fs::copy_options::recursive);
    polyplug::core::RuntimeOptions runtime_options;
    runtime_options.state_dir = dir_.path() / "state";
    runtime_ = Check(polyplug::core::Runtime::Create(runtime_options), "Runtime::Create");
    Check(runtime_->LoadBundle(bundle_), "LoadBundle");
  }
  ~InProcessDeploy() { runtime_.reset(); }  // before the scratch directory goes

  // Deploys `version`; the time of the copy and the reload, in us.
  double CopyAndReloadUs(const fs::path& version) {
    const auto start = Clock::now();
    fs::copy(version, bundle_, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
    const polyplug::core::ReloadOutcome outcome =
        Check(runtime_->ReloadBundle(bundle_), "ReloadBundle");
    if (!outcome.ok()) {
      Die(absl::StrCat("the in-process reload failed: ", outcome.status.ToString()));
    }
    return ElapsedUs(start);
  }

 private:
  ScratchDir dir_;
  fs::path bundle_;
  std::unique_ptr<polyplug::core::Runtime> runtime_;
};

void RunPush(const Options& options, Report& report) {
  // Two versions of 16 MiB; the runtime in this process starts at the second and the host
  // at neither, so that every push after the first (a load) and every in-process deploy
  // replaces the version running.
  const ScratchDir work;
  const std::array<fs::path, 2> versions = {
      MakePushBundle(fs::path(POLYPLUG_TEST_BUNDLES_DIR) / "counter_v1", work.path() / "v1", 1),
      MakePushBundle(fs::path(POLYPLUG_TEST_BUNDLES_DIR) / "counter_v2", work.path() / "v2", 2)};
  const std::string bytes = BundleBytes(versions[0]);
  PushHost host;
  HostClient& client = host.client();
  InProcessDeploy in_process(versions[1]);
  const int sockets_before = SocketCount(host.pid());
  std::unique_ptr<v1::PluginHost::Stub> stub =
      v1::PluginHost::NewStub(ChannelLikeHostClient(host.unix_address()));
  const int iterations = options.quick ? 4 : 100;
  const int warmup = options.quick ? 1 : 4;
  std::vector<double> floor, push, local;
  for (int i = 0; i < warmup + iterations; ++i) {
    const fs::path& version = versions[i % 2];
    const double floor_us = EchoStreamUs(*stub, bytes);
    const auto start = Clock::now();
    const v1::PushBundleResponse response = Check(client.PushBundle(version), "PushBundle");
    const double push_us = ElapsedUs(start);
    const v1::PushOutcome expected = i == 0 ? v1::PUSH_OUTCOME_LOADED : v1::PUSH_OUTCOME_RELOADED;
    if (response.outcome() != expected) {
      Die(absl::StrCat("push ", i + 1, ": ", v1::PushOutcome_Name(response.outcome()), " (",
                       response.message(), "), expected ", v1::PushOutcome_Name(expected)));
    }
    const double local_us = in_process.CopyAndReloadUs(version);
    if (i < warmup) continue;
    floor.push_back(floor_us);
    push.push_back(push_us);
    local.push_back(local_us);
  }
  // Whether the floor's channel got the HostClient's connection: the host accepted no other.
  const bool shared = SocketCount(host.pid()) == sockets_before;
  const Percentiles f = Summarise(floor), p = Summarise(push), l = Summarise(local);
  auto mib_per_s = [](double us) {
    return static_cast<double>(kPushBundleBytes >> 20) / (us / 1e6);
  };
  report.Add(
      {"push", "PushBundle of 16 MiB (a reload) p50", p.p50 / 1e3, "ms", f.p50 / 1e3, 1.25,
       absl::StrFormat("floor: EchoStream of the same bytes in 1 MiB messages on a channel made "
                       "like the HostClient's (%s), p50; %.0f MiB/s against %.0f MiB/s",
                       shared ? "it shared the HostClient's connection"
                              : "a connection of its own, the host's second",
                       mib_per_s(p.p50), mib_per_s(f.p50))});
  report.Add({"push", "PushBundle of 16 MiB (a reload) p99", p.p99 / 1e3, "ms", f.p99 / 1e3,
              std::nullopt, "same floor, p99"});
  report.Add({"push", "PushBundle vs copy + reload in process p50", p.p50 / 1e3, "ms", l.p50 / 1e3,
              std::nullopt,
              absl::StrFormat("floor: the same files copied over a bundle directory + "
                              "Runtime::ReloadBundle in this process; p99 %.1f against %.1f ms",
                              p.p99 / 1e3, l.p99 / 1e3)});
}

// ---- fanout and sustained: many raw subscriber streams -------------------------------

// Counts what every subscriber received. Thread-safe.
class FanoutLedger {
 public:
  void OnEstablished() {
    std::lock_guard<std::mutex> lock(mu_);
    ++established_;
    cv_.notify_all();
  }
  void OnEnded() {
    std::lock_guard<std::mutex> lock(mu_);
    ++ended_;
    cv_.notify_all();
  }
  // A phase event one subscriber received; `last_seq` is that subscriber's own cursor.
  void OnEvent(const v1::ReloadPhaseEvent& e, uint64_t* last_seq) {
    const absl::Time now = absl::Now();
    std::lock_guard<std::mutex> lock(mu_);
    if (*last_seq != 0 && e.seq() != *last_seq + 1) gaps_ += e.seq() - *last_seq - 1;
    *last_seq = e.seq();
    ++events_;
    if (e.phase() != v1::PHASE_RELOADED) return;
    const absl::Time emitted = polyplug::wire::FromProto(e.time());
    Delivery& d = deliveries_[e.reload_id()];
    ++d.count;
    d.last_us = std::max(d.last_us, absl::ToDoubleMicroseconds(now - emitted));
    cv_.notify_all();
  }
  bool WaitEstablished(size_t n) {
    return Wait([&] { return established_ >= n; });
  }
  bool WaitEnded(size_t n) {
    return Wait([&] { return ended_ >= n; });
  }
  // Waits until `n` subscribers hold the RELOADED of `reload_id`; the latest one's time
  // since the event (us).
  std::optional<double> WaitDelivered(uint64_t reload_id, size_t n) {
    if (!Wait([&] { return deliveries_[reload_id].count >= n; })) return std::nullopt;
    std::lock_guard<std::mutex> lock(mu_);
    return deliveries_[reload_id].last_us;
  }
  uint64_t events() const {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }
  uint64_t gaps() const {
    std::lock_guard<std::mutex> lock(mu_);
    return gaps_;
  }

 private:
  struct Delivery {
    size_t count = 0;
    double last_us = 0;
  };
  bool Wait(const std::function<bool()>& done) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(60), done);
  }

  mutable std::mutex mu_;
  std::condition_variable cv_;
  size_t established_ = 0;
  size_t ended_ = 0;
  uint64_t events_ = 0;
  uint64_t gaps_ = 0;
  std::map<uint64_t, Delivery> deliveries_;
};

// One SubscribeReloadPhases stream on the callback API: no thread of its own.
class RawSubscriber : public grpc::ClientReadReactor<v1::ReloadPhaseEvent> {
 public:
  RawSubscriber(v1::PluginHost::Stub& stub, FanoutLedger& ledger) : ledger_(ledger) {
    stub.async()->SubscribeReloadPhases(&context_, &request_, this);
    StartRead(&event_);
    StartCall();
  }
  void Cancel() { context_.TryCancel(); }

  void OnReadInitialMetadataDone(bool ok) override {
    if (ok) ledger_.OnEstablished();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    if (event_.kind() == v1::EVENT_KIND_PHASE) ledger_.OnEvent(event_, &last_seq_);
    StartRead(&event_);
  }
  void OnDone(const grpc::Status&) override { ledger_.OnEnded(); }

 private:
  FanoutLedger& ledger_;
  grpc::ClientContext context_;
  v1::SubscribeReloadPhasesRequest request_;
  v1::ReloadPhaseEvent event_;
  uint64_t last_seq_ = 0;
};

// `n` subscribers spread over up to 8 connections.
class SubscriberFleet {
 public:
  SubscriberFleet(const std::string& address, size_t n, FanoutLedger& ledger) : ledger_(ledger) {
    const size_t channels = std::min<size_t>(8, std::max<size_t>(1, n));
    for (size_t c = 0; c < channels; ++c) {
      grpc::ChannelArguments args;
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection of its own
      stubs_.push_back(v1::PluginHost::NewStub(
          grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args)));
    }
    for (size_t i = 0; i < n; ++i) {
      subscribers_.push_back(std::make_unique<RawSubscriber>(*stubs_[i % channels], ledger_));
    }
    if (!ledger_.WaitEstablished(n)) Die(absl::StrCat(n, " subscriptions did not start"));
  }
  ~SubscriberFleet() {
    for (auto& s : subscribers_) s->Cancel();
    ledger_.WaitEnded(subscribers_.size());
  }

 private:
  FanoutLedger& ledger_;
  std::vector<std::unique_ptr<v1::PluginHost::Stub>> stubs_;
  std::vector<std::unique_ptr<RawSubscriber>> subscribers_;
};

// polyplug-fanout-floor (fanout_floor_server.cc) on a unix socket: the leanest broadcaster
// gRPC's callback API allows, which the fan-out figures are compared with.
class FanoutFloor : public BenchServer {
 public:
  FanoutFloor() : BenchServer("floor.sock") {
    Start({POLYPLUG_FANOUT_FLOOR_BINARY, "--listen", unix_address()}, "floor.log");
  }
};

// What `reloads` reloads of the counter bundle cost `server`: CPU seconds and switches.
ProcessSample CostOfReloads(BenchServer& server, int reloads) {
  const ProcessSample before = server.Sample();
  for (int i = 0; i < reloads; ++i) Check(server.client().Reload("counter"), "Reload");
  const ProcessSample after = server.Sample();
  ProcessSample cost;
  cost.cpu_seconds = after.cpu_seconds - before.cpu_seconds;
  cost.switches_in = after.switches_in - before.switches_in;
  return cost;
}

struct FanoutResult {
  Percentiles last_us;            // from the event until the last subscriber holds RELOADED
  double cpu_per_event_us = 0;    // beyond the same reloads with no subscriber
  double switches_per_event = 0;  // likewise: times a thread of the server was put on a CPU
  double rss_per_idle_kib = 0;
  int threads_before = 0;
  int threads_with = 0;
};

// `reloads` reloads with `n` subscribers on `server` (a BenchHost or a FanoutFloor), whose
// reloads alone cost `alone`.
FanoutResult MeasureFanout(BenchServer& server, size_t n, int reloads, const ProcessSample& alone) {
  FanoutLedger ledger;
  const ProcessSample idle_before = server.Sample();
  SubscriberFleet fleet(server.unix_address(), n, ledger);
  const ProcessSample idle_after = server.Sample();
  std::vector<double> last_us;
  const ProcessSample before = server.Sample();
  for (int i = 0; i < reloads; ++i) {
    const v1::ReloadResponse response = Check(server.client().Reload("counter"), "Reload");
    auto delivered = ledger.WaitDelivered(response.reload_id(), n);
    if (!delivered) Die("RELOADED did not reach every subscriber");
    last_us.push_back(*delivered);
  }
  const ProcessSample after = server.Sample();
  const double deliveries = 2.0 * static_cast<double>(n) * reloads;  // PREPARING, RELOADED
  FanoutResult result;
  result.last_us = Summarise(last_us);
  result.cpu_per_event_us =
      std::max(0.0, after.cpu_seconds - before.cpu_seconds - alone.cpu_seconds) * 1e6 / deliveries;
  result.switches_per_event =
      std::max(0.0, after.switches_in - before.switches_in - alone.switches_in) / deliveries;
  result.rss_per_idle_kib = (idle_after.rss_kib - idle_before.rss_kib) / static_cast<double>(n);
  result.threads_before = idle_before.threads;
  result.threads_with = idle_after.threads;
  return result;
}

void RunFanout(const Options& options, Report& report) {
  const std::vector<size_t> sizes =
      options.quick ? std::vector<size_t>{1, 100} : std::vector<size_t>{1, 100, 1000};
  const int reloads = options.quick ? 10 : 100;
  BenchHost host({"--max-subscribers", "4096"});
  FanoutFloor floor;
  // The servers' CPU for the reloads alone: what deliveries are measured against.
  for (int i = 0; i < 5; ++i) {
    Check(host.client().Reload("counter"), "warm-up Reload");
    Check(floor.client().Reload("counter"), "warm-up Reload");
  }
  const ProcessSample host_alone = CostOfReloads(host, reloads);
  const ProcessSample floor_alone = CostOfReloads(floor, reloads);
  for (size_t n : sizes) {
    const FanoutResult f = MeasureFanout(floor, n, reloads, floor_alone);
    const FanoutResult h = MeasureFanout(host, n, reloads, host_alone);
    const std::string at = absl::StrCat(" (", n, " subscribers)");
    std::optional<double> target;
    if (n == 100) target = 5000;
    if (n == 1000) target = 30000;
    const std::string bare = "bare gRPC broadcaster: ";
    report.Add({"fanout", "event to last subscriber p50" + at, h.last_us.p50, "us", f.last_us.p50,
                std::nullopt, "floor: " + bare + "p50"});
    report.Add({"fanout", "event to last subscriber p99" + at, h.last_us.p99, "us", std::nullopt,
                target, absl::StrFormat("%s%.0f us", bare, f.last_us.p99)});
    // With one subscriber the deliveries are lost in the reloads' own CPU: reported only.
    report.Add({"fanout", "host CPU per delivered event" + at, h.cpu_per_event_us, "us",
                std::nullopt, n >= 100 ? std::optional<double>(5.0) : std::nullopt,
                absl::StrFormat("%s%.2f us; each less the same reloads with no subscriber", bare,
                                f.cpu_per_event_us)});
    report.Add({"fanout", "host CPU per delivered event vs bare gRPC" + at, h.cpu_per_event_us,
                "us", f.cpu_per_event_us, std::nullopt, "floor: " + bare + "the same figure"});
    report.Add({"fanout", "host thread switches per delivered event" + at, h.switches_per_event,
                "switches", f.switches_per_event, std::nullopt,
                "times a host thread was put on a CPU; floor: " + bare + "the same figure"});
    // One subscriber's memory is below the granularity of RSS (pages): reported only.
    report.Add({"fanout", "host RSS per idle subscriber" + at, h.rss_per_idle_kib, "KiB",
                std::nullopt, n >= 100 ? std::optional<double>(20.0) : std::nullopt,
                absl::StrFormat("%s%.1f KiB", bare, f.rss_per_idle_kib)});
    report.Add({"fanout", "host threads added" + at,
                static_cast<double>(h.threads_with - h.threads_before), "threads", std::nullopt,
                std::nullopt,
                absl::StrCat(h.threads_before, " before, ", h.threads_with, " with them")});
  }
}

void RunSustained(const Options& options, Report& report) {
  const double rate = 50;  // reloads per second
  const absl::Duration length = options.quick ? absl::Seconds(4) : absl::Seconds(60);
  const size_t subscribers = options.quick ? 10 : 100;
  BenchHost host;
  HostClient& client = host.client();
  FanoutLedger ledger;
  SubscriberFleet fleet(host.unix_address(), subscribers, ledger);
  std::vector<double> latency;
  const ProcessSample before = host.Sample();
  const absl::Time start = absl::Now();
  int reloads = 0;
  uint64_t last_reload = 0;
  for (absl::Time next = start; next < start + length; next += absl::Seconds(1) / rate, ++reloads) {
    absl::SleepFor(next - absl::Now());
    const auto sent = Clock::now();
    const v1::ReloadResponse response = Check(client.Reload("counter"), "Reload");
    latency.push_back(ElapsedUs(sent));
    last_reload = response.reload_id();
  }
  const absl::Duration took = absl::Now() - start;
  if (!ledger.WaitDelivered(last_reload, subscribers)) Die("the last RELOADED did not arrive");
  const double cpu = host.Sample().cpu_seconds - before.cpu_seconds;
  const uint64_t expected = 2ull * static_cast<uint64_t>(reloads) * subscribers;
  const Percentiles p = Summarise(latency);
  const std::string at = absl::StrCat(" (", reloads, " reloads in ", absl::FormatDuration(took),
                                      ", ", subscribers, " subscribers)");
  report.Add({"sustained", "events missed" + at,
              static_cast<double>(expected - std::min(expected, ledger.events()) + ledger.gaps()),
              "events", std::nullopt, 0.0, absl::StrCat(ledger.events(), " of ", expected)});
  report.Add({"sustained", "Reload latency p50", p.p50, "us", std::nullopt, std::nullopt, ""});
  report.Add({"sustained", "Reload latency p99", p.p99, "us", std::nullopt, std::nullopt, ""});
  report.Add({"sustained", "host CPU", 100 * cpu / absl::ToDoubleSeconds(took), "% core",
              std::nullopt, std::nullopt, ""});
}

// ---- sporadic ---------------------------------------------------------------------------

void RunSporadic(const Options& options, Report& report) {
  const int calls = options.quick ? 3 : options.sporadic_calls;
  // Each kind of call has a host of its own that idles 1-2 s before each of its calls; the
  // kinds run side by side (a call takes a millisecond or two, so they rarely meet), which
  // makes 1,000 calls of each 25 minutes instead of 100. The last kind is Reload's floor
  // after the same idleness: the same bundle copied, opened, initialised and closed in
  // this process.
  const std::vector<std::string> kinds = {"Echo", "FindContract", "Reload",
                                          "in-process copy+dlopen+init+dlclose"};
  const ScratchDir floor_dir;
  // Per kind: (how long the call took in us, when it started in s since the section began).
  std::vector<std::vector<std::pair<double, double>>> took(kinds.size());
  const auto section_start = Clock::now();
  std::vector<std::thread> threads;
  for (size_t k = 0; k < kinds.size(); ++k) {
    threads.emplace_back([&, k] {
      std::optional<BenchHost> host;
      if (k < 3) host.emplace();
      const fs::path library = BenchHost::CounterBundle() / "libcounter.so";
      std::mt19937 random(7 + static_cast<unsigned>(k));
      std::uniform_int_distribution<int> idle_ms(1000, 2000);
      for (int i = 0; i < calls; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(idle_ms(random)));
        const auto start = Clock::now();
        if (k == 0) Check(host->client().Echo("ping"), "Echo");
        if (k == 1) Check(host->client().FindContract("test.counter@1"), "FindContract");
        if (k == 2) Check(host->client().Reload("counter"), "Reload");
        if (k == 3) (void)InProcessLoadUs(library, floor_dir.path(), i);
        took[k].emplace_back(ElapsedUs(start),
                             ElapsedUs(section_start) / 1e6 - ElapsedUs(start) / 1e6);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const std::string at = absl::StrCat(" (", calls, " calls after 1-2 s idle)");
  for (size_t k = 0; k < kinds.size(); ++k) {
    std::vector<double> us;
    for (const auto& [u, when] : took[k]) us.push_back(u);
    const Percentiles p = Summarise(us);
    // The three slowest calls and when they started: outliers of all kinds at the same
    // moment point at the machine, not the host.
    std::sort(took[k].begin(), took[k].end(), std::greater<>());
    std::string slowest;
    for (size_t i = 0; i < std::min<size_t>(3, took[k].size()); ++i) {
      absl::StrAppendFormat(&slowest, "%s%.1f ms at %.0f s", i == 0 ? "" : ", ",
                            took[k][i].first / 1000, took[k][i].second);
    }
    // Echo and the in-process reload are floors: what gRPC itself costs, and what loading
    // the bundle costs, after the same idleness.
    const std::optional<double> target =
        k == 1 || k == 2 ? std::optional<double>(5000.0) : std::nullopt;
    report.Add({"sporadic", kinds[k] + " worst" + at, p.max, "us", std::nullopt, target,
                absl::StrFormat("p50 %.0f us, p99 %.0f us; slowest: %s", p.p50, p.p99, slowest)});
  }
}

// ---- embedded ----------------------------------------------------------------------------

double ThreadCpuUs() {
  timespec now{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) * 1e6 + static_cast<double>(now.tv_nsec) / 1e3;
}

std::string SelfPath() { return fs::read_symlink("/proc/self/exe").string(); }

// A game's process: its runtime, the control plane embedded in it, and a frame that calls
// the counter bundle through a handle `calls` times.
class EmbeddedGame {
 public:
  explicit EmbeddedGame(int calls) : calls_(calls) {
    const fs::path bundles = dir_.path() / "bundles";
    fs::create_directories(bundles);
    fs::copy(BenchHost::CounterBundle(), bundles / "counter", fs::copy_options::recursive);
    polyplug::core::RuntimeOptions runtime_options;
    runtime_options.state_dir = dir_.path() / "state";
    runtime_ = Check(polyplug::core::Runtime::Create(runtime_options), "Runtime::Create");
    polyplug::host::HostServerOptions host_options;
    address_ = "unix:" + (dir_.path() / "game.sock").string();
    host_options.listen = {address_};
    host_options.bundle_roots = {bundles};
    host_options.operations = polyplug::host::OperationThread::kApplication;
    host_ = Check(polyplug::host::HostServer::Start(*runtime_, host_options), "HostServer::Start");
  }
  ~EmbeddedGame() {
    host_->Shutdown();
    host_.reset();
    runtime_.reset();
  }

  const std::string& address() const { return address_; }
  polyplug::host::HostServer& host() { return *host_; }
  polyplug::core::Runtime& runtime() { return *runtime_; }

  // The frame's work: one lookup, then `calls` calls of function 0 under one pin.
  void Work() {
    polyplug::core::ReadPin pin = runtime_->Pin();
    auto handle = runtime_->Find(kCounter, 1);
    if (!handle.ok()) Die("the counter bundle is not loaded");
    auto iface = Check(runtime_->Resolve(*handle), "Resolve");
    PolyplugGuestContractInstance instance{nullptr, iface->contract_id};
    for (int i = 0; i < calls_; ++i) {
      int32_t out = 0;
      PolyplugAbiError err{POLYPLUG_ABI_OK, {nullptr, 0}};
      iface->functions[0](instance, nullptr, &out, &err);
      sink_ += out;
    }
  }

  // One frame: the work, then the boundary `boundary` (in us).
  template <typename Boundary>
  double Frame(Boundary boundary) {
    const auto start = Clock::now();
    Work();
    boundary();
    return ElapsedUs(start);
  }

 private:
  const uint64_t kCounter = polyplug::core::GuestContractId("test.counter", 1);
  ScratchDir dir_;
  const int calls_;
  std::string address_;
  std::unique_ptr<polyplug::core::Runtime> runtime_;
  std::unique_ptr<polyplug::host::HostServer> host_;
  int64_t sink_ = 0;
};

void RunEmbedded(const Options& options, Report& report) {
  EmbeddedGame game(/*calls=*/2000);
  auto client = ConnectWhenUp(game.address());

  // The hitch: a reload over gRPC run at the boundary, against the same reload called at
  // the boundary directly, one after the other.
  const int reloads = options.quick ? 10 : 100;
  std::vector<double> through_host, in_process;
  // Each frame starts after the same 1 ms of sleep (a frame after idleness costs more on
  // these VMs), and the two kinds take turns at going first.
  auto hosted_frame = [&] {
    std::thread requester([&client] { Check(client->Reload("counter"), "Reload"); });
    if (!game.host().WaitForPendingOperations(absl::Seconds(30))) Die("no reload arrived");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    size_t ran = 0;
    const double us = game.Frame([&] { ran = game.host().RunPendingOperations(); });
    requester.join();
    if (ran != 1) Die("the frame did not run the reload");
    return us;
  };
  auto direct_frame = [&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return game.Frame(
        [&] { Check(game.runtime().ReloadBundleByName("counter"), "ReloadBundleByName"); });
  };
  for (int i = 0; i < reloads + 2; ++i) {  // the first two warm up
    double hosted = 0, direct = 0;
    if (i % 2 == 0) {
      hosted = hosted_frame();
      direct = direct_frame();
    } else {
      direct = direct_frame();
      hosted = hosted_frame();
    }
    if (i < 2) continue;
    through_host.push_back(hosted);
    in_process.push_back(direct);
  }
  const Percentiles hosted = Summarise(through_host), direct = Summarise(in_process);
  report.Add({"embedded", "frame with a reload, worst", hosted.max / 1e3, "ms", direct.max / 1e3,
              1.2,
              absl::StrFormat("%d reloads over gRPC run at the boundary; floor: the same "
                              "reload called at the boundary",
                              reloads)});
  report.Add(
      {"embedded", "frame with a reload, p99", hosted.p99 / 1e3, "ms", direct.p99 / 1e3, 1.2,
       absl::StrFormat("p50 %.2f ms, floor p50 %.2f ms", hosted.p50 / 1e3, direct.p50 / 1e3)});

  // Frames while 8 clients hammer the control plane, paced at 1 kHz (a game sleeps between
  // frames too, and a frame that never yields would measure the scheduler instead).
  const int frames = options.quick ? 200 : 3000;
  // Each frame's wall time, split by whether the kernel took the thread's CPU away during
  // it (an involuntary context switch), and the thread's own CPU time.
  struct FrameTimes {
    Percentiles wall, kept_cpu, cpu;
    double preempted_share = 0;
  };
  auto run_frames = [&] {
    std::vector<double> wall, kept_cpu, cpu;
    int preempted = 0;
    auto next = Clock::now();
    for (int i = 0; i < frames; ++i) {
      next += std::chrono::milliseconds(1);
      std::this_thread::sleep_until(next);
      rusage before{}, after{};
      getrusage(RUSAGE_THREAD, &before);
      const double cpu_start = ThreadCpuUs();
      wall.push_back(game.Frame([&] { game.host().RunPendingOperations(); }));
      cpu.push_back(ThreadCpuUs() - cpu_start);
      getrusage(RUSAGE_THREAD, &after);
      if (after.ru_nivcsw != before.ru_nivcsw) {
        ++preempted;
      } else {
        kept_cpu.push_back(wall.back());
      }
    }
    return FrameTimes{Summarise(std::move(wall)), Summarise(std::move(kept_cpu)),
                      Summarise(std::move(cpu)), static_cast<double>(preempted) / frames};
  };
  // The clients are another process, as an editor or CI would be: `polyplug-bench
  // --hammer`. Returns the frames run while it calls `address`, and its calls per second.
  auto frames_while_hammering = [&](const std::string& address) {
    const fs::path log =
        fs::temp_directory_path() / absl::StrCat("polyplug-bench-hammer-", getpid(), ".log");
    std::optional<ServerProcess> hammer;
    hammer.emplace(std::vector<std::string>{SelfPath(), "--hammer", address}, log);
    // Frames start once every client made a call (the hammer prints "hammering").
    for (int i = 0; i < 3000 && ReadFileText(log).find("hammering") == std::string::npos; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    const FrameTimes times = run_frames();
    hammer.reset();  // SIGTERM: it prints how many calls it made
    double call_rate = 0;
    for (absl::string_view line : absl::StrSplit(ReadFileText(log), '\n')) {
      if (absl::ConsumePrefix(&line, "calls/s ")) (void)absl::SimpleAtod(line, &call_rate);
    }
    std::error_code ec;
    fs::remove(log, ec);
    return std::pair{times, call_rate};
  };
  // The second floor: the same clients calling a polyplug-host of their own, so that the
  // machine is as busy but nothing of it happens in the game's process.
  BenchHost elsewhere;
  const FrameTimes quiet_before = run_frames();
  const auto [elsewhere_before, elsewhere_rate_before] =
      frames_while_hammering(elsewhere.unix_address());
  const auto [loaded, call_rate] = frames_while_hammering(game.address());
  const auto [elsewhere_after, elsewhere_rate_after] =
      frames_while_hammering(elsewhere.unix_address());
  const FrameTimes quiet_after = run_frames();
  auto mean_p99 = [](const Percentiles& a, const Percentiles& b) { return (a.p99 + b.p99) / 2; };
  report.Add({"embedded", "frame p99, 8 clients calling", loaded.wall.p99, "us",
              mean_p99(quiet_before.wall, quiet_after.wall), 1.05,
              absl::StrFormat("%d frames of 2,000 handle calls at 1 kHz; %.0f calls/s served "
                              "meanwhile; p50 %.1f us against %.1f us with no client; %.1f%% "
                              "of frames lost their CPU to another thread (%.1f%% with none)",
                              frames, call_rate, loaded.wall.p50,
                              (quiet_before.wall.p50 + quiet_after.wall.p50) / 2,
                              100 * loaded.preempted_share,
                              50 * (quiet_before.preempted_share + quiet_after.preempted_share))});
  report.Add(
      {"embedded", "frame p99, the clients calling another host", loaded.wall.p99, "us",
       mean_p99(elsewhere_before.wall, elsewhere_after.wall), 1.05,
       absl::StrFormat("floor: the same frames while the same clients call a separate "
                       "polyplug-host (%.0f calls/s): what serving them in the game's "
                       "process adds to a machine this busy; %.1f%% of those frames lost "
                       "their CPU",
                       (elsewhere_rate_before + elsewhere_rate_after) / 2,
                       50 * (elsewhere_before.preempted_share + elsewhere_after.preempted_share))});
  // What the host costs a frame once the frame has its CPU: the frames no other thread
  // interrupted, and the frame thread's own CPU time.
  report.Add({"embedded", "frame p99 not preempted, 8 clients", loaded.kept_cpu.p99, "us",
              mean_p99(quiet_before.kept_cpu, quiet_after.kept_cpu), std::nullopt,
              "frames with no involuntary context switch, against the same with no client"});
  report.Add({"embedded", "frame CPU time p99, 8 clients", loaded.cpu.p99, "us",
              mean_p99(quiet_before.cpu, quiet_after.cpu), std::nullopt,
              "the frame thread's own CPU time (CLOCK_THREAD_CPUTIME_ID)"});
}

// ---- throughput ---------------------------------------------------------------------------

// Calls per second of `call` from 8 threads, each with a connection of its own.
double CallsPerSecond(const std::string& address, absl::Duration length,
                      const std::function<void(HostClient&, const v1::InstanceRef&)>& call) {
  constexpr int kClients = 8;
  std::vector<std::unique_ptr<HostClient>> clients;
  std::vector<v1::InstanceRef> instances;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(Connect(address));
    instances.push_back(Check(clients.back()->CreateInstance("test.counter@1"), "CreateInstance"));
  }
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> done{0};
  std::vector<std::thread> threads;
  const auto start = Clock::now();
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      while (!stop.load(std::memory_order_relaxed)) {
        call(*clients[i], instances[i]);
        done.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  std::this_thread::sleep_for(absl::ToChronoNanoseconds(length));
  stop = true;
  for (std::thread& t : threads) t.join();
  return static_cast<double>(done.load()) / (ElapsedUs(start) / 1e6);
}

void RunThroughput(const Options& options, Report& report) {
  BenchHost host;
  const absl::Duration length = options.quick ? absl::Seconds(1) : absl::Seconds(10);
  const std::string address = host.unix_address();
  auto echo = [](HostClient& c, const v1::InstanceRef&) { Check(c.Echo("ping"), "Echo"); };
  auto find = [](HostClient& c, const v1::InstanceRef&) {
    Check(c.FindContract("test.counter@1"), "FindContract");
  };
  auto invoke = [](HostClient& c, const v1::InstanceRef& instance) {
    Check(c.Invoke(instance, "echo", "ping"), "Invoke");
  };
  // Echo before and after each, so drift over the run reaches floor and figure alike.
  const double echo_1 = CallsPerSecond(address, length, echo);
  const double find_qps = CallsPerSecond(address, length, find);
  const double echo_2 = CallsPerSecond(address, length, echo);
  const double invoke_qps = CallsPerSecond(address, length, invoke);
  const double echo_3 = CallsPerSecond(address, length, echo);
  // Higher is better here: the ratio reported is floor / figure, so <= target reads alike.
  const double find_floor = (echo_1 + echo_2) / 2, invoke_floor = (echo_2 + echo_3) / 2;
  report.Add(
      {"throughput", "FindContract calls/s, 8 clients", find_qps, "1/s", std::nullopt, std::nullopt,
       absl::StrFormat("Echo %.0f/s; Echo/FindContract %.2f", find_floor, find_floor / find_qps)});
  report.Add(
      {"throughput", "Invoke calls/s, 8 clients", invoke_qps, "1/s", std::nullopt, std::nullopt,
       absl::StrFormat("Echo %.0f/s; Echo/Invoke %.2f", invoke_floor, invoke_floor / invoke_qps)});
}

// ---- python --------------------------------------------------------------------------

// What one client measured: per-call times, and events per second taken in from a replay.
struct ClientFigures {
  Percentiles find, reload;
  double replay_per_s = 0;
  double aio_replay_per_s = 0;  // Python only: `async for` on grpc.aio
};

// The C++ client's FindContract and Reload calls, as python_client_bench.py makes them.
ClientFigures MeasureCppCalls(HostClient& client, int calls, int reloads) {
  std::vector<double> find, reload;
  for (int i = 0; i < calls + calls / 10; ++i) {
    const auto start = Clock::now();
    Check(client.FindContract("test.counter@1"), "FindContract");
    if (i >= calls / 10) find.push_back(ElapsedUs(start));
  }
  for (int i = 0; i < reloads + 5; ++i) {
    const auto start = Clock::now();
    const v1::ReloadResponse response = Check(client.Reload("counter"), "Reload");
    if (response.outcome() != v1::RELOAD_OUTCOME_RELOADED) Die("the reload failed");
    if (i >= 5) reload.push_back(ElapsedUs(start));
  }
  return {Summarise(find), Summarise(reload), 0, 0};
}

// Events per second a C++ subscriber takes in from the host's journal, from its first event
// up to `last_seq` of `epoch`.
double CppReplayPerSecond(HostClient& client, uint64_t epoch, uint64_t last_seq) {
  std::mutex mu;
  std::condition_variable done;
  uint64_t events = 0;
  bool reached = false;
  polyplug::client::PhaseHandlers handlers;
  auto count = [&](const polyplug::client::PhaseEvent& e) {
    std::lock_guard<std::mutex> lock(mu);
    ++events;
    if (e.seq >= last_seq) reached = true;
    if (reached) done.notify_all();
  };
  handlers.on_preparing = handlers.on_reloaded = handlers.on_failed = handlers.on_unloading =
      handlers.on_loaded = count;
  polyplug::client::SubscribeOptions options;
  options.resume_after = polyplug::client::Cursor{epoch, 0};
  options.strict_resume = true;
  const auto start = Clock::now();
  auto subscription = client.Subscribe(std::move(handlers), options);
  std::unique_lock<std::mutex> lock(mu);
  if (!done.wait_for(lock, std::chrono::seconds(120), [&] { return reached; })) {
    Die("the C++ replay did not reach the last event");
  }
  return static_cast<double>(events) / (ElapsedUs(start) / 1e6);
}

// python_client_bench.py against `address`; its figures.
ClientFigures MeasurePython(const std::string& address, int calls, int reloads, uint64_t last_seq) {
  const ScratchDir scratch;
  const fs::path out = scratch.path() / "python.json";
  polyplug::test::SpawnOptions spawn;
  spawn.argv = {
      "/usr/bin/python3", POLYPLUG_PYTHON_BENCH_SCRIPT, "--host",    address,
      "--calls",          absl::StrCat(calls),          "--reloads", absl::StrCat(reloads),
      "--replay-to",      absl::StrCat(last_seq)};
  spawn.env = {{"PYTHONPATH", POLYPLUG_PYTHON_DIR}};
  spawn.out = polyplug::test::Redirect::Truncate(out);
  const pid_t pid = Check(polyplug::test::Spawn(spawn), "python_client_bench.py");
  int status = 0;
  waitpid(pid, &status, 0);
  const std::string text = ReadFileText(out);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) Die("python_client_bench.py: " + text);
  // {"find_us": {"p50": x, "p99": y}, "reload_us": {...}, ..., "replay_events_per_s": z}
  auto number_after = [&](const std::string& object, const std::string& key) {
    size_t at = text.find("\"" + object + "\"");
    if (at == std::string::npos) Die("no " + object + " in " + text);
    if (!key.empty()) at = text.find("\"" + key + "\"", at);
    at = text.find(':', at) + 1;
    double value = 0;
    const std::string digits = text.substr(at, text.find_first_of(",}", at) - at);
    if (!absl::SimpleAtod(absl::StripAsciiWhitespace(digits), &value)) {
      Die("bad " + object + " in " + text);
    }
    return value;
  };
  ClientFigures figures;
  figures.find = {number_after("find_us", "p50"), number_after("find_us", "p99"), 0};
  figures.reload = {number_after("reload_us", "p50"), number_after("reload_us", "p99"), 0};
  figures.replay_per_s = number_after("replay_events_per_s", "");
  figures.aio_replay_per_s = number_after("aio_replay_events_per_s", "");
  return figures;
}

void RunPython(const Options& options, Report& report) {
  const int calls = options.quick ? 200 : 3000;
  const int reloads = options.quick ? 10 : 200;
  const int journal_reloads = options.quick ? 50 : 2500;  // two events each
  BenchHost host({"--journal-size", "20000"});
  HostClient& client = host.client();
  for (int i = 0; i < journal_reloads; ++i) Check(client.Reload("counter"), "Reload");
  // The C++ client before and after the Python one, so that both see the same machine.
  const ClientFigures before = MeasureCppCalls(client, calls, reloads);
  const v1::HostInfo info = Check(client.GetHostInfo(), "GetHostInfo");
  const ClientFigures python = MeasurePython(host.unix_address(), calls, reloads, info.last_seq());
  const ClientFigures after = MeasureCppCalls(client, calls, reloads);
  const double cpp_replay = CppReplayPerSecond(client, info.host_epoch(), info.last_seq());
  auto mean = [](double a, double b) { return (a + b) / 2; };
  const double find_floor = mean(before.find.p50, after.find.p50);
  const double reload_floor = mean(before.reload.p50, after.reload.p50);
  report.Add({"python", "FindContract p50 (Python)", python.find.p50, "us", find_floor,
              std::nullopt,
              absl::StrFormat("floor: the C++ client's p50; Python adds %.0f us per call",
                              python.find.p50 - find_floor)});
  report.Add({"python", "FindContract p99 (Python)", python.find.p99, "us",
              mean(before.find.p99, after.find.p99), std::nullopt, "floor: the C++ client's p99"});
  report.Add({"python", "Reload p50 (Python)", python.reload.p50, "us", reload_floor, std::nullopt,
              absl::StrFormat("floor: the C++ client's p50; Python adds %.0f us per call",
                              python.reload.p50 - reload_floor)});
  report.Add({"python", "Reload p99 (Python)", python.reload.p99, "us",
              mean(before.reload.p99, after.reload.p99), std::nullopt,
              "floor: the C++ client's p99"});
  report.Add({"python", "events per second a Python subscriber takes in (iterator)",
              python.replay_per_s, "events/s", std::nullopt, std::nullopt,
              absl::StrFormat("the C++ client: %.0f events/s (%.2fx); %d events replayed",
                              cpp_replay, cpp_replay / python.replay_per_s, info.last_seq())});
  report.Add({"python", "events per second a Python subscriber takes in (async for)",
              python.aio_replay_per_s, "events/s", std::nullopt, std::nullopt,
              absl::StrFormat("the C++ client: %.2fx", cpp_replay / python.aio_replay_per_s)});
}

}  // namespace

// ---- the hammer ----------------------------------------------------------------------------

// polyplug-bench --hammer ADDR: 8 clients calling FindContract (4) and Invoke (4) on ADDR
// as fast as they can until SIGTERM; prints "hammering" once each made a call, and at the
// end "calls/s N" over the time after that.
int RunHammer(const std::string& address) {
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::atomic<bool> stop{false};
  std::atomic<int> started{0};
  std::atomic<uint64_t> calls{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < 8; ++i) {
    clients.emplace_back([&, i] {
      auto c = ConnectWhenUp(address);
      const v1::InstanceRef instance = Check(c->CreateInstance("test.counter@1"), "CreateInstance");
      bool first = true;
      while (!stop.load(std::memory_order_relaxed)) {
        if (i % 2 == 0) {
          Check(c->FindContract("test.counter@1"), "FindContract");
        } else {
          Check(c->Invoke(instance, "echo", "ping"), "Invoke");
        }
        calls.fetch_add(1, std::memory_order_relaxed);
        if (first) started.fetch_add(1);
        first = false;
      }
    });
  }
  while (started.load() < 8) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const uint64_t calls_before = calls.load();
  const auto start = Clock::now();
  std::printf("hammering\n");
  std::fflush(stdout);
  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  const double rate = static_cast<double>(calls.load() - calls_before) / (ElapsedUs(start) / 1e6);
  stop = true;
  for (std::thread& t : clients) t.join();
  std::printf("calls/s %.0f\n", rate);
  return 0;
}

// ---- fleet ---------------------------------------------------------------------------

// A fleet of polyplug-host processes over an etcd cluster, each with its own deploy root,
// registered before the constructor returns.
class BenchFleet {
 public:
  BenchFleet(const std::string& name, const std::string& endpoints, int hosts,
             polyplug::fleet::EtcdClient& etcd)
      : name_(name), endpoints_(endpoints), keys_(name) {
    polyplug::fleet::FleetFollower follower(etcd, keys_);
    Check(follower.Start().ok() ? absl::StatusOr<bool>(true)
                                : absl::StatusOr<bool>(absl::UnavailableError("etcd")),
          "watch the fleet");
    for (int i = 0; i < hosts; ++i) {
      const fs::path dir = dir_.path() / absl::StrCat("host-", i);
      fs::create_directories(dir);
      hosts_.push_back(std::make_unique<ServerProcess>(
          std::vector<std::string>{
              POLYPLUG_HOST_BINARY, "--listen", "unix:" + (dir / "host.sock").string(),
              "--state-dir", (dir / "state").string(), "--deploy-root", (dir / "deploy").string(),
              "--fleet", name, "--etcd", endpoints, "--fleet-host-id", absl::StrCat("h", i)},
          dir / "host.log"));
    }
    if (!follower.WaitUntil(absl::Now() + absl::Seconds(120),
                            [&](const polyplug::fleet::FleetState& state) {
                              return static_cast<int>(state.hosts().size()) == hosts;
                            })) {
      Die(absl::StrCat("fleet ", name, ": not every host registered"));
    }
  }

  // The CPU time every host used so far, in seconds.
  double HostCpuSeconds() const {
    double total = 0;
    for (const auto& host : hosts_) total += host->Sample().cpu_seconds;
    return total;
  }

  // polyplugctl rollout DIR; the report's fields.
  std::map<std::string, double> Rollout(const fs::path& bundle) {
    const fs::path out = dir_.path() / "rollout.json";
    polyplug::test::SpawnOptions spawn;
    spawn.argv = {POLYPLUGCTL_BINARY, "rollout",  bundle.string(), "--fleet", name_,
                  "--etcd",           endpoints_, "--json"};
    spawn.out = polyplug::test::Redirect::Truncate(out);
    const pid_t pid = Check(polyplug::test::Spawn(spawn), "polyplugctl rollout");
    int status = 0;
    waitpid(pid, &status, 0);
    const std::string text = ReadFileText(out);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) Die("rollout failed: " + text);
    std::map<std::string, double> fields;
    for (const char* field : {"apply_seconds", "etcd_writes"}) {
      const std::string key = absl::StrCat("\"", field, "\":");
      const size_t at = text.rfind(key);
      if (at == std::string::npos) Die(absl::StrCat("no ", field, " in ", text));
      std::string value = text.substr(at + key.size(), 32);
      value = value.substr(value[0] == '"' ? 1 : 0);
      value = value.substr(0, value.find_first_of("\",}"));
      if (!absl::SimpleAtod(value, &fields[field])) Die(absl::StrCat("bad ", field, " in ", text));
    }
    return fields;
  }

 private:
  ScratchDir dir_;
  std::string name_;
  std::string endpoints_;
  polyplug::fleet::FleetKeys keys_;
  std::vector<std::unique_ptr<ServerProcess>> hosts_;
};

// How long a write takes until a watcher of its key holds it, in us.
double WatchNotificationUs(polyplug::fleet::EtcdClient& etcd, int n) {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<Clock::time_point> seen;
  const std::string key = absl::StrCat("/polyplug-bench/watch/", n);
  const int64_t from = Check(etcd.Get(key), "etcd read").revision + 1;
  polyplug::fleet::WatchHandler handler;
  handler.on_events = [&](const std::vector<polyplug::fleet::WatchEvent>&, int64_t) {
    std::lock_guard<std::mutex> lock(mu);
    if (!seen) seen = Clock::now();
    cv.notify_all();
  };
  handler.on_compacted = [] { return int64_t{0}; };
  auto watch = etcd.WatchPrefix(key, from, handler);
  // The watch is created once its stream is open: a first write proves it.
  Check(etcd.Put(key, "warm"), "etcd write");
  {
    std::unique_lock<std::mutex> lock(mu);
    if (!cv.wait_for(lock, std::chrono::seconds(30), [&] { return seen.has_value(); })) {
      Die("the etcd watch saw nothing");
    }
    seen.reset();
  }
  const auto start = Clock::now();
  Check(etcd.Put(key, "value"), "etcd write");
  std::unique_lock<std::mutex> lock(mu);
  if (!cv.wait_for(lock, std::chrono::seconds(30), [&] { return seen.has_value(); })) {
    Die("the etcd watch saw nothing");
  }
  return std::chrono::duration<double, std::micro>(*seen - start).count();
}

void RunFleet(const Options& options, Report& report) {
  const ScratchDir dir;
  auto cluster = Check(polyplug::test::EtcdCluster::Start(dir.path() / "etcd", 3), "etcd");
  polyplug::fleet::EtcdOptions etcd_options;
  etcd_options.endpoints = absl::StrSplit(cluster->endpoints(), ',');
  auto etcd = Check(polyplug::fleet::EtcdClient::Create(etcd_options), "etcd client");
  const fs::path v1 = fs::path(POLYPLUG_TEST_BUNDLES_DIR) / "counter_v1";
  const fs::path v2 = fs::path(POLYPLUG_TEST_BUNDLES_DIR) / "counter_v2";
  const fs::path library = v1 / "libcounter.so";
  const ScratchDir floor_dir;
  {
    BenchFleet fleet("bench5", cluster->endpoints(), 5, *etcd);
    const int rounds = options.quick ? 2 : 20;
    std::vector<double> rollout, floor, host_cpu;
    fleet.Rollout(v1);  // the first: every host loads it
    for (int i = 0; i < rounds; ++i) {
      const double watch_us = WatchNotificationUs(*etcd, i);
      const double load_us = InProcessLoadUs(library, floor_dir.path(), i);
      floor.push_back(watch_us + load_us);
      const double cpu_before = fleet.HostCpuSeconds();
      rollout.push_back(fleet.Rollout(i % 2 == 0 ? v2 : v1).at("apply_seconds") * 1e6);
      host_cpu.push_back((fleet.HostCpuSeconds() - cpu_before) * 1e6 / 5);
    }
    const Percentiles r = Summarise(rollout), f = Summarise(floor), c = Summarise(host_cpu);
    report.Add({"fleet", "rollout to 5 hosts, write until all ACKed p50", r.p50 / 1e3, "ms",
                f.p50 / 1e3, 2.0, "floor: etcd watch notification + in-process reload"});
    report.Add({"fleet", "rollout to 5 hosts, write until all ACKed max", r.max / 1e3, "ms",
                f.max / 1e3, std::nullopt, "same floor"});
    // What the hosts spend: five of these share the machine's cores during a rollout.
    report.Add({"fleet", "host CPU per rollout and host p50", c.p50 / 1e3, "ms", std::nullopt,
                std::nullopt, absl::StrFormat("%u cores", std::thread::hardware_concurrency())});
  }
  for (const int hosts : options.quick ? std::vector<int>{5} : std::vector<int>{5, 20, 50}) {
    BenchFleet fleet(absl::StrCat("scale", hosts), cluster->endpoints(), hosts, *etcd);
    fleet.Rollout(v1);
    const std::map<std::string, double> second = fleet.Rollout(v2);
    const double writes = second.at("etcd_writes");
    report.Add({"fleet", absl::StrCat("etcd writes per rollout, ", hosts, " hosts"), writes,
                "writes", std::nullopt, std::nullopt,
                absl::StrFormat("%.2f per host", writes / hosts)});
    report.Add({"fleet", absl::StrCat("rollout to ", hosts, " hosts, write until all ACKed"),
                second.at("apply_seconds") * 1e3, "ms", std::nullopt, std::nullopt, ""});
  }
}

int main(int argc, char** argv) {
  // Debian builds Abseil without NDEBUG, which leaves absl::Mutex's deadlock detection on:
  // a lock-order graph update on every lock gRPC takes (about 6% of a busy host's CPU).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  if (argc == 3 && std::string(argv[1]) == "--hammer") return RunHammer(argv[2]);
  Options options;
  const std::set<std::string> known = {"rpc",       "reload",     "push",     "fanout", "sporadic",
                                       "sustained", "throughput", "embedded", "fleet",  "python"};
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--json") {
      options.json = true;
    } else if (arg == "--quick") {
      options.quick = true;
    } else if (arg == "--section" && i + 1 < argc && known.contains(argv[i + 1])) {
      options.sections.insert(argv[++i]);
    } else if (arg == "--sporadic-calls" && i + 1 < argc &&
               absl::SimpleAtoi(argv[++i], &options.sporadic_calls) && options.sporadic_calls > 0) {
    } else {
      std::fprintf(stderr,
                   "usage: polyplug-bench [--json] [--quick] [--section NAME]... "
                   "[--sporadic-calls N]\nsections: %s\n",
                   absl::StrJoin(known, ", ").c_str());
      return 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  Report report(options);
  if (options.Wants("rpc")) RunRpc(options, report);
  if (options.Wants("reload")) RunReload(options, report);
  if (options.Wants("push")) RunPush(options, report);
  if (options.Wants("fanout")) RunFanout(options, report);
  if (options.Wants("sustained")) RunSustained(options, report);
  if (options.Wants("throughput")) RunThroughput(options, report);
  if (options.Wants("embedded")) RunEmbedded(options, report);
  if (options.Wants("sporadic")) RunSporadic(options, report);
  if (options.Wants("fleet")) RunFleet(options, report);
  if (options.Wants("python")) RunPython(options, report);
  report.Summary();
  return 0;
}
