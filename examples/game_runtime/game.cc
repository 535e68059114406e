// polyplug-game: a game's runtime process that embeds the polyplug host (docs/EMBEDDING.md).
//
// A fixed-step loop (60 Hz by default) calls the gameplay bundle (example.gameplay@1,
// gameplay_contract.h) every frame, in process, through a core handle, while the host it
// embeds serves the control plane (polyplugctl, polyplug-editor, grpcurl) on a socket. Every
// load, reload and unload requested over gRPC or by --watch waits for the frame boundary,
// where the loop calls HostServer::RunPendingOperations() on its own thread
// (OperationThread::kApplication): a frame never sees the gameplay code swapped under it.
// The loop prints the frame where each new version took over and that frame's time next to
// the running median (the reload's hitch), and checks every frame that the code it called at
// the start and at the end of the frame was the same generation.
//
// usage: polyplug-game [--listen ADDR]... [--bundles DIR]... [--watch] [--frames N]
//                      [--hz HZ] [--state-dir DIR]
//   --listen     unix:PATH or HOST:PORT (repeatable, or comma-separated); default: the host's
//                default socket, unix:$XDG_RUNTIME_DIR/polyplug-host.sock (else
//                unix:/tmp/polyplug-host-<uid>.sock), where polyplugctl and polyplug-editor
//                look by default
//   --bundles    a bundle root (repeatable): every bundle one level below is loaded at start;
//                default: the root this build stages (root/ beside this program)
//   --watch      reload bundles when their files change (a rebuild)
//   --frames     stop after N frames; 0 (the default) runs until SIGINT or SIGTERM
//   --hz         frames per second, 1 to 1000 (default 60); each frame is one fixed step
//   --state-dir  where the runtime keeps its private copies of the loaded libraries
//                (default: a fresh temp dir, removed at exit)
//
// Exit codes: 0 after --frames frames or SIGINT/SIGTERM; 1 the frame-boundary guarantee was
// broken (a mid-frame switch, or a phase callback that ran off the game's thread); 2 usage
// error; 3 the runtime or the host could not start (the message on stderr says why).
//
// Output, on stdout, one whole line at a time, flushed (the host's own log, one line per
// phase, goes to stderr). FRAME counts from 1. A frame's time is the work part of the frame:
// the operations run at its boundary plus its gameplay calls, without the sleep to the next
// tick; P50 is the median over the frames before it in the window (the last 10 s of frames,
// at least 100). Times are in milliseconds with three decimals. Lines too long for this
// comment are wrapped below (continuation indented); each is one line of output.
//   ready: serving on ADDR[, ADDR...]
//       once the bundles are loaded and the host listens; the frames start after it
//   frame FRAME: NAME VERSION running (generation G)
//       the first provider of example.gameplay@1 the game calls (normally frame 1)
//   frame FRAME: NAME VERSION took over (generation G, frame time T ms, p50 P ms)
//       after a reload (or a new load after an unload): FRAME is the first frame whose
//       calls all went to the new code, G what that code reports, T that frame's time
//       (which includes the reload, run at its boundary)
//   frame FRAME: NAME reload FAILED [REASON] MESSAGE (VERSION keeps running, frame time T ms,
//       p50 P ms)
//       a reload (or load) failed at this frame's boundary; "(not loaded, ...)" when no
//       version of the bundle is loaded. Printed for every FAILED event.
//   frame FRAME: NAME VERSION unloaded
//   frame FRAME: no provider of example.gameplay@1, running without gameplay
//       at start when none is loaded, and after the provider was unloaded
//   error: frame FRAME: mid-frame switch: generation A at the start, B at the end
//       (or "... the handle no longer resolves at the end", or "... the provider changed
//       without PREPARING"): never expected; exit code 1
//   error: frame FRAME: gameplay call failed: MESSAGE
//       printed when calls start failing (counted in the summary for every frame)
//   error: phase callback ran off the game thread (N times)    (at exit; exit code 1)
//   stopping: SIGINT|SIGTERM at frame FRAME
//   summary: F frames, R reloads, X failed reloads, M mid-frame switches, C failed calls;
//       gameplay VERSION (generation G), score S; frame time p50 A ms, p99 B ms, worst W ms
//       over the last N frames
//       (one line; "gameplay none" when no provider was running at the end)
// MESSAGE is made single-line (control characters escaped as \n, \t, \xNN).
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "gameplay_contract.h"
#include "polyplug/abi.h"
#include "polyplug/core/error.h"
#include "polyplug/core/ids.h"
#include "polyplug/core/phase_event.h"
#include "polyplug/core/registry.h"
#include "polyplug/core/runtime.h"
#include "polyplug/host/host_server.h"

namespace core = polyplug::core;
namespace host = polyplug::host;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kExitBrokenGuarantee = 1;
constexpr int kExitUsage = 2;
constexpr int kExitStartFailed = 3;

constexpr char kUsage[] =
    "usage: polyplug-game [--listen ADDR]... [--bundles DIR]... [--watch] [--frames N]\n"
    "                     [--hz HZ] [--state-dir DIR]\n"
    "  --listen ADDR     unix:PATH or HOST:PORT, repeatable (default: the host's default\n"
    "                    socket, where polyplugctl and polyplug-editor look)\n"
    "  --bundles DIR     a bundle root, repeatable (default: " POLYPLUG_GAME_DEFAULT_BUNDLES
    ")\n"
    "  --watch           reload bundles when their files change\n"
    "  --frames N        stop after N frames; 0 runs until SIGINT/SIGTERM (default 0)\n"
    "  --hz HZ           frames per second, 1 to 1000 (default 60)\n"
    "  --state-dir DIR   the runtime's private copies of libraries (default: a temp dir)\n"
    "  --help            this text\n";

// Set by the SIGINT/SIGTERM handler (on whichever thread gets the signal, a gRPC thread
// too); the loop reads it once per frame. A lock-free atomic: safe in a signal handler and
// across threads (a volatile sig_atomic_t is only the former).
std::atomic<int> g_stop_signal{0};
static_assert(std::atomic<int>::is_always_lock_free);
extern "C" void OnStopSignal(int signal) { g_stop_signal.store(signal); }

struct Flags {
  std::vector<std::string> listen;
  std::vector<fs::path> bundles;
  bool watch = false;
  int64_t frames = 0;
  int hz = 60;
  fs::path state_dir;
};

absl::Status ParseFlags(int argc, char** argv, Flags& flags, bool& help) {
  help = false;
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      help = true;
      return absl::OkStatus();
    }
    absl::string_view name = arg;
    std::optional<std::string> value;
    if (const size_t eq = arg.find('='); absl::StartsWith(arg, "--") && eq != arg.npos) {
      name = arg.substr(0, eq);
      value = std::string(arg.substr(eq + 1));
    }
    if (name == "--watch") {
      if (value) return absl::InvalidArgumentError("--watch takes no value");
      flags.watch = true;
      continue;
    }
    if (name != "--listen" && name != "--bundles" && name != "--frames" && name != "--hz" &&
        name != "--state-dir") {
      return absl::InvalidArgumentError(absl::StrCat(
          absl::StartsWith(arg, "-") ? "unknown flag " : "unexpected argument ", "\"", arg, "\""));
    }
    if (!value) {
      if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat(name, " needs a value"));
      value = argv[++i];
    }
    if (name == "--listen") {
      for (absl::string_view address : absl::StrSplit(*value, ',')) {
        if (address.empty()) return absl::InvalidArgumentError("--listen has an empty address");
        flags.listen.emplace_back(address);
      }
    } else if (name == "--bundles") {
      if (value->empty()) return absl::InvalidArgumentError("--bundles is empty");
      flags.bundles.emplace_back(*value);
    } else if (name == "--frames") {
      if (!absl::SimpleAtoi(*value, &flags.frames) || flags.frames < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("--frames wants a count >= 0, not \"", *value, "\""));
      }
    } else if (name == "--hz") {
      if (!absl::SimpleAtoi(*value, &flags.hz) || flags.hz < 1 || flags.hz > 1000) {
        return absl::InvalidArgumentError(
            absl::StrCat("--hz wants 1 to 1000 frames per second, not \"", *value, "\""));
      }
    } else {
      if (value->empty()) return absl::InvalidArgumentError("--state-dir is empty");
      flags.state_dir = *value;
    }
  }
  if (flags.bundles.empty()) flags.bundles.emplace_back(POLYPLUG_GAME_DEFAULT_BUNDLES);
  return absl::OkStatus();
}

// One line of text: control characters escaped.
std::string OneLine(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (u < 0x20 || u == 0x7f) {
      absl::StrAppendFormat(&out, "\\x%02x", u);
    } else {
      out += c;
    }
  }
  return out;
}

// Every line of the documented output goes through here: whole, flushed.
void Say(const std::string& line) {
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

std::string Ms(double ms) { return absl::StrFormat("%.3f ms", ms); }

// Frame times over a sliding window of the last `window` frames.
class FrameStats {
 public:
  explicit FrameStats(size_t window) : window_(window) { times_.reserve(window); }

  void Add(double ms) {
    if (times_.size() < window_) {
      times_.push_back(ms);
    } else {
      times_[next_] = ms;
      next_ = (next_ + 1) % window_;
    }
  }
  // Nearest-rank percentile (q in (0, 1]) over the window; 0 when it is empty.
  double Percentile(double q) const {
    if (times_.empty()) return 0;
    std::vector<double> sorted = times_;
    const auto rank = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
    const size_t index = std::clamp<size_t>(rank, 1, sorted.size()) - 1;
    std::nth_element(sorted.begin(), sorted.begin() + static_cast<ptrdiff_t>(index), sorted.end());
    return sorted[index];
  }
  double Worst() const {
    return times_.empty() ? 0 : *std::max_element(times_.begin(), times_.end());
  }
  size_t size() const { return times_.size(); }

 private:
  const size_t window_;
  std::vector<double> times_;
  size_t next_ = 0;  // the oldest entry once the window is full
};

// A native call through the contract's function table: no lookup, no serialisation.
template <typename Out>
absl::StatusOr<Out> CallNative(const PolyplugGuestContractInterface& iface, uint32_t function,
                               PolyplugGuestContractInstance instance, const void* args) {
  if (function >= iface.function_count || iface.functions[function] == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("the provider has no function ", function,
                                                      " (it has ", iface.function_count, ")"));
  }
  Out out{};
  PolyplugAbiError error{POLYPLUG_ABI_OK, {nullptr, 0}};
  iface.functions[function](instance, args, &out, &error);
  if (error.code != POLYPLUG_ABI_OK) return absl::InternalError(core::DescribeAbiError(error));
  return out;
}

// The gameplay side of the game: the handle on example.gameplay@1, the instance, the world,
// and what the phase listener noticed between two frames.
//
// Why a kept handle, resolved every frame: a handle survives a reload (same slot and
// generation), and Resolve() is a lock-free read of the registry, a few nanoseconds, so each
// frame resolves it again under a ReadPin and calls through the interface it gets. There is
// no pointer to refresh after RELOADED and nothing that can dangle: the pin keeps the
// interface valid during the frame and is released before the frame boundary (a pin held
// across RunPendingOperations() would make the reload wait for it forever). When the
// provider is unloaded the handle goes stale, Resolve() says so, and the game looks the
// contract up again each frame (Find(), also lock-free) until a provider appears.
//
// The instance (the bundle's per-instance state) is what must not outlive the code that
// made it: the phase listener saves its state and destroys it at the provider's PREPARING or
// UNLOADING, while the old code is still mapped, and the next frame creates a new one from
// the saved state (the cr.h pattern). With OperationThread::kApplication those listeners run
// inside RunPendingOperations(), on this thread, between two frames; so a frame never finds
// its instance gone halfway.
class Gameplay {
 public:
  Gameplay(core::Runtime& runtime, int hz)
      : runtime_(runtime),
        contract_id_(core::GuestContractId(gameplay::kContractName, gameplay::kContractMajor)),
        dt_(1.0 / hz),
        world_(std::make_unique<gameplay::World>()),
        thread_(std::this_thread::get_id()) {
    for (int i = 0; i < gameplay::kParticleCount; ++i) {
      world_->particles[i] =
          gameplay::Particle{static_cast<float>(i % 100), static_cast<float>(50 + i % 50),
                             static_cast<float>(i % 7) - 3.0f, -10.0f - static_cast<float>(i % 40)};
    }
  }

  // The runtime's phase listener.
  void OnPhase(const core::PhaseEvent& e) {
    if (std::this_thread::get_id() != thread_) {
      // Never expected with kApplication. Only noted here (stdout is the game thread's).
      off_thread_phases_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    const bool ours = provider_bundle_id_ != 0 && e.bundle_id == provider_bundle_id_;
    switch (e.phase) {
      case core::Phase::kPreparing:
        if (ours) DropInstance();
        break;
      case core::Phase::kUnloading:
        if (ours) {
          DropInstance();
          notes_.push_back(
              Note{Note::kUnloaded, absl::StrCat(e.bundle_name, " ", e.bundle_version.ToString())});
        }
        break;
      case core::Phase::kReloaded:
        if (ours) {
          ++reloads_;
          takeover_pending_ = true;
          version_ = e.bundle_version.ToString();
        }
        break;
      case core::Phase::kFailed: {
        ++failed_reloads_;
        absl::StatusOr<core::BundleInfo> loaded = runtime_.GetBundle(e.bundle_name);
        notes_.push_back(Note{
            Note::kFailed,
            absl::StrCat(e.bundle_name, " reload FAILED [", core::ReasonToken(e.reason), "] ",
                         OneLine(e.message), " (",
                         loaded.ok() ? absl::StrCat(loaded->version.ToString(), " keeps running")
                                     : std::string("not loaded"))});
        break;
      }
      case core::Phase::kLoaded:
        break;  // a frame without a provider looks again anyway
    }
  }

  // The gameplay part of frame `frame`: one step, with the generation checked at its start
  // and at its end. Returns false on a mid-frame switch.
  bool RunFrame(int64_t frame) {
    if (handle_.is_null() && !Acquire()) return true;
    const core::ReadPin pin = runtime_.Pin();  // released at the end of the frame
    absl::StatusOr<const PolyplugGuestContractInterface*> iface = runtime_.Resolve(handle_);
    if (!iface.ok()) {
      // Stale: unloaded (after its UNLOADING, which dropped the instance). Look again.
      Forget();
      return true;
    }
    if (instance_iface_ != nullptr && instance_iface_ != *iface) {
      // Cannot happen with kApplication: every change of the provider starts with the
      // PREPARING or UNLOADING that dropped the instance, between two frames. Had it
      // happened, the old code may be unmapped already: abandon the instance, do not call it.
      ++mid_frame_switches_;
      Say(absl::StrCat("error: frame ", frame,
                       ": mid-frame switch: the provider changed without PREPARING"));
      instance_ = PolyplugGuestContractInstance{nullptr, 0};
      instance_iface_ = nullptr;
      return false;
    }
    // Start of the frame.
    absl::StatusOr<int32_t> at_start =
        CallNative<int32_t>(**iface, gameplay::kGeneration, instance_, nullptr);
    if (!at_start.ok()) return CallFailed(frame, at_start.status());
    if (instance_iface_ == nullptr) {
      const PolyplugBytesView args{reinterpret_cast<const uint8_t*>(&saved_score_),
                                   sizeof saved_score_};
      absl::StatusOr<PolyplugGuestContractInstance> made = runtime_.CreateInstance(**iface, args);
      if (!made.ok()) return CallFailed(frame, made.status());
      instance_ = *made;
      instance_iface_ = *iface;
    }
    // The frame's work.
    const gameplay::StepArgs step{frame, dt_, world_.get()};
    absl::StatusOr<int32_t> stepped =
        CallNative<int32_t>(**iface, gameplay::kStep, instance_, &step);
    if (!stepped.ok()) return CallFailed(frame, stepped.status());
    // End of the frame: look the contract up again, as a later system of the frame would.
    absl::StatusOr<const PolyplugGuestContractInterface*> again = runtime_.Resolve(handle_);
    if (!again.ok()) {
      ++mid_frame_switches_;
      Say(absl::StrCat("error: frame ", frame, ": mid-frame switch: generation ", *at_start,
                       " at the start, the handle no longer resolves at the end (",
                       OneLine(again.status().message()), ")"));
      return false;
    }
    absl::StatusOr<int32_t> at_end =
        CallNative<int32_t>(**again, gameplay::kGeneration, instance_, nullptr);
    if (!at_end.ok()) return CallFailed(frame, at_end.status());
    calls_failing_ = false;
    generation_ = *at_start;
    ran_ = true;
    if (*at_end != *at_start || *stepped != *at_start || *again != *iface) {
      ++mid_frame_switches_;
      Say(absl::StrCat("error: frame ", frame, ": mid-frame switch: generation ", *at_start,
                       " at the start, ", *at_end, " at the end"));
      return false;
    }
    return true;
  }

  // After frame `frame` took `frame_ms` (`stats`: the frames before it): the lines about
  // what happened at its boundary, and about a new version that ran in it.
  void Report(int64_t frame, double frame_ms, const FrameStats& stats) {
    if (notes_.empty() && !(ran_ && takeover_pending_) &&
        (!handle_.is_null() || absent_reported_)) {
      ran_ = false;
      return;  // the common case: nothing to say, no percentile to compute
    }
    const std::string timing =
        absl::StrCat("frame time ", Ms(frame_ms), ", p50 ", Ms(stats.Percentile(0.5)), ")");
    for (const Note& note : notes_) {
      if (note.kind == Note::kFailed) {
        Say(absl::StrCat("frame ", frame, ": ", note.text, ", ", timing));
      } else {
        Say(absl::StrCat("frame ", frame, ": ", note.text, " unloaded"));
      }
    }
    notes_.clear();
    if (handle_.is_null() && !absent_reported_) {
      absent_reported_ = true;
      Say(absl::StrCat("frame ", frame, ": no provider of ", gameplay::kContractName, "@",
                       gameplay::kContractMajor, ", running without gameplay"));
    }
    if (ran_ && takeover_pending_) {
      takeover_pending_ = false;
      if (first_run_) {
        Say(absl::StrCat("frame ", frame, ": ", provider_name_, " ", version_,
                         " running (generation ", generation_, ")"));
      } else {
        Say(absl::StrCat("frame ", frame, ": ", provider_name_, " ", version_,
                         " took over (generation ", generation_, ", ", timing));
      }
      first_run_ = false;
    }
    ran_ = false;
  }

  // At exit: saves the score and destroys the instance while the bundle is loaded.
  void Stop() { DropInstance(); }

  std::string Summary(const FrameStats& stats, int64_t frames) const {
    const std::string gameplay =
        provider_name_.empty() || handle_.is_null()
            ? std::string("gameplay none")
            : absl::StrCat(provider_name_, " ", version_, " (generation ", generation_, ")");
    return absl::StrCat("summary: ", frames, " frames, ", reloads_, " reloads, ", failed_reloads_,
                        " failed reloads, ", mid_frame_switches_, " mid-frame switches, ",
                        failed_calls_, " failed calls; ", gameplay, ", score ", saved_score_,
                        "; frame time p50 ", Ms(stats.Percentile(0.5)), ", p99 ",
                        Ms(stats.Percentile(0.99)), ", worst ", Ms(stats.Worst()),
                        " over the last ", stats.size(), " frames");
  }

  int64_t off_thread_phases() const { return off_thread_phases_.load(); }
  int64_t mid_frame_switches() const { return mid_frame_switches_; }

 private:
  struct Note {
    enum Kind { kFailed, kUnloaded } kind;
    std::string text;
  };

  // Looks the contract up; false (and the game runs without gameplay) when none provides it.
  bool Acquire() {
    absl::StatusOr<core::ContractHandle> found = runtime_.Find(contract_id_, 1);
    if (!found.ok()) return false;
    absl::StatusOr<core::ContractEntry> entry = runtime_.registry().Describe(*found);
    if (!entry.ok()) return false;
    absl::StatusOr<std::pair<std::string, core::Version>> bundle =
        runtime_.BundleNameAndVersion(entry->bundle_id);
    if (!bundle.ok()) return false;
    handle_ = *found;
    provider_bundle_id_ = entry->bundle_id;
    provider_name_ = bundle->first;
    version_ = bundle->second.ToString();
    takeover_pending_ = true;  // "running" the first time, "took over" after an unload
    absent_reported_ = false;
    return true;
  }

  void Forget() {
    handle_ = core::ContractHandle{};
    provider_bundle_id_ = 0;
  }

  // Saves the instance's score for the next instance and destroys it. Runs between frames
  // (in a phase listener, or at exit), while the code that made the instance is mapped.
  void DropInstance() {
    if (instance_iface_ == nullptr) return;
    absl::StatusOr<int64_t> score =
        CallNative<int64_t>(*instance_iface_, gameplay::kSave, instance_, nullptr);
    if (score.ok()) saved_score_ = *score;
    runtime_.DestroyInstance(*instance_iface_, instance_);
    instance_ = PolyplugGuestContractInstance{nullptr, 0};
    instance_iface_ = nullptr;
  }

  bool CallFailed(int64_t frame, const absl::Status& status) {
    ++failed_calls_;
    if (!calls_failing_) {
      calls_failing_ = true;
      Say(absl::StrCat("error: frame ", frame,
                       ": gameplay call failed: ", OneLine(status.message())));
    }
    return true;
  }

  core::Runtime& runtime_;
  const uint64_t contract_id_;
  const double dt_;
  std::unique_ptr<gameplay::World> world_;
  const std::thread::id thread_;

  core::ContractHandle handle_;  // null: no provider
  uint64_t provider_bundle_id_ = 0;
  std::string provider_name_;
  std::string version_;
  // The instance and the interface that made it (valid until the provider's next change,
  // which starts with the PREPARING or UNLOADING that destroys the instance).
  PolyplugGuestContractInstance instance_{nullptr, 0};
  const PolyplugGuestContractInterface* instance_iface_ = nullptr;
  int64_t saved_score_ = 0;

  int32_t generation_ = 0;  // what the code of the last frame that ran reported
  bool ran_ = false;        // this frame called the gameplay successfully
  bool first_run_ = true;
  bool takeover_pending_ = false;
  bool absent_reported_ = false;
  bool calls_failing_ = false;
  std::vector<Note> notes_;  // from the phase listener, printed after the frame

  int64_t reloads_ = 0;
  int64_t failed_reloads_ = 0;
  int64_t mid_frame_switches_ = 0;
  int64_t failed_calls_ = 0;
  std::atomic<int64_t> off_thread_phases_{0};
};

const char* SignalName(int signal) {
  return signal == SIGINT ? "SIGINT" : signal == SIGTERM ? "SIGTERM" : "signal";
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  bool help = false;
  if (absl::Status parsed = ParseFlags(argc, argv, flags, help); !parsed.ok()) {
    std::fprintf(stderr, "polyplug-game: %s\n%s", std::string(parsed.message()).c_str(), kUsage);
    return kExitUsage;
  }
  if (help) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  struct sigaction on_stop {};
  on_stop.sa_handler = OnStopSignal;
  sigemptyset(&on_stop.sa_mask);
  sigaction(SIGINT, &on_stop, nullptr);
  sigaction(SIGTERM, &on_stop, nullptr);

  // 1. The game's runtime. Its phase listener is added before anything loads, so that it
  //    sees the provider from the first LOADED on.
  core::RuntimeOptions runtime_options;
  runtime_options.state_dir = flags.state_dir;
  absl::StatusOr<std::unique_ptr<core::Runtime>> runtime = core::Runtime::Create(runtime_options);
  if (!runtime.ok()) {
    std::fprintf(stderr, "polyplug-game: cannot create the runtime: %s\n",
                 runtime.status().ToString().c_str());
    return kExitStartFailed;
  }
  auto game = std::make_unique<Gameplay>(**runtime, flags.hz);
  const core::EventJournal::ListenerId listener = (*runtime)->AddPhaseCallback(
      [&game](const PolyplugReloadPhase&, const core::PhaseEvent& e) { game->OnPhase(e); });

  // 2. The control plane over it. Operations wait for RunPendingOperations() below.
  host::HostServerOptions options;
  options.listen = flags.listen;
  options.bundle_roots = flags.bundles;
  options.watch = flags.watch;
  options.operations = host::OperationThread::kApplication;
  absl::StatusOr<std::unique_ptr<host::HostServer>> server =
      host::HostServer::Start(**runtime, std::move(options));
  if (!server.ok()) {
    std::fprintf(stderr, "polyplug-game: cannot serve: %s\n", server.status().ToString().c_str());
    (*runtime)->RemovePhaseCallback(listener);
    return kExitStartFailed;
  }
  Say(absl::StrCat("ready: serving on ", absl::StrJoin((*server)->listen_addresses(), ", ")));

  // 3. The loop: operations at the boundary, then the frame's gameplay, then sleep.
  const auto period = std::chrono::nanoseconds(1'000'000'000 / flags.hz);
  FrameStats stats(std::max<size_t>(100, static_cast<size_t>(flags.hz) * 10));
  int64_t frame = 0;
  auto next_tick = Clock::now();
  while (g_stop_signal.load() == 0 && (flags.frames == 0 || frame < flags.frames)) {
    ++frame;
    const auto start = Clock::now();
    (*server)->RunPendingOperations();  // the safe point: no pin held, no call in progress
    game->RunFrame(frame);
    const double frame_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    game->Report(frame, frame_ms, stats);
    stats.Add(frame_ms);

    next_tick += period;
    const auto now = Clock::now();
    if (next_tick < now - period) next_tick = now;  // fell behind: do not try to catch up
    std::this_thread::sleep_until(next_tick);
  }
  if (g_stop_signal.load() != 0)
    Say(absl::StrCat("stopping: ", SignalName(g_stop_signal.load()), " at frame ", frame));

  // 4. Down in reverse: the instance (while its code is mapped), the control plane (queued
  //    operations fail with SHUTTING_DOWN), the listener, the runtime (unloads everything).
  game->Stop();
  (*server)->Shutdown();
  Say(game->Summary(stats, frame));
  const int64_t off_thread = game->off_thread_phases();
  if (off_thread != 0) {
    Say(absl::StrCat("error: phase callback ran off the game thread (", off_thread, " times)"));
  }
  server->reset();
  (*runtime)->RemovePhaseCallback(listener);
  const bool broken = off_thread != 0 || game->mid_frame_switches() != 0;
  game.reset();
  runtime->reset();
  return broken ? kExitBrokenGuarantee : 0;
}
