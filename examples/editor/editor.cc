// polyplug-editor: a small interactive client of a running polyplug-host, the way a game
// editor talks to the game's runtime process. It shows the host's bundles, prints every
// reload phase live, keeps a live handle and a live instance of one contract, and calls one
// of its methods again after every reload (or failed reload) of the bundle providing it, so
// that a developer rebuilding the plugin sees the answer change. Commands come from stdin,
// one per line (interactively or through a pipe).
//
// usage: polyplug-editor [--host TARGET] [--contract NAME@MAJOR] [--method METHOD]
//                        [--data TEXT]
//   --host      unix:PATH, HOST:PORT or an absolute socket path; default $POLYPLUG_HOST,
//               else the host's default socket for this user
//   --contract  default example.greeter@1
//   --method    default greet
//   --data      the request of the calls made without text; default "editor"
//
// Commands: help, list, handle, call [TEXT], reload BUNDLE, quit (also: end of input).
// A prompt "> " is printed only when stdin is a terminal.
//
// Exit codes: 0 after quit or end of input, 2 usage error, 3 the host cannot be reached at
// start (the message names the target).
//
// Output, on stdout. Every line below is printed whole (stdout is shared under a mutex), in
// the order the events and commands happened; errors of the start-up go to stderr. MESSAGE,
// ANSWER and DATA are made single-line (control characters escaped as \n, \t, \xNN).
// Lines printed at start, in this order (the "[connection] up" line may be missing, and a
// "[handle]" line may come in between):
//   connected to polyplug-host HOSTVERSION at TARGET (epoch EPOCH)
//   bundle NAME VERSION provides CONTRACT[,CONTRACT...]    ("provides -" when none)
//   listed N bundles
//   [connection] up
//   [resync] INITIAL at seq SEQ: NAME VERSION[, NAME VERSION...]    ("(no bundles)")
//   handle CONTRACT: PROVIDER VERSION (slot SLOT, generation GEN)   (or: error CODE: MESSAGE)
//   METHOD("DATA") -> ANSWER                                         (or: failed: ...)
// Lines printed as things happen on the host (subscription, tracker, automatic calls):
//   [phase] seq SEQ PREPARING|LOADED|UNLOADING NAME VERSION[ (cascade)][: MESSAGE]
//   [phase] seq SEQ RELOADED NAME OLDVERSION -> NEWVERSION[ (cascade)][: MESSAGE]
//   [phase] seq SEQ FAILED NAME VERSION[ (cascade)] [REASON] MESSAGE
//   [resync] HOST_RESTARTED|FELL_BEHIND at seq SEQ: NAME VERSION, ...
//   [host] restarted: epoch OLD -> NEW
//   [connection] lost: CODE: MESSAGE
//   [connection] up                    (connected, at start or again after a loss)
//   [subscription] stopped: CODE: MESSAGE
//   [handle] CONTRACT: PROVIDER VERSION (slot SLOT, generation GEN)    (the handle changed)
//   [handle] CONTRACT: error CODE: MESSAGE
//   METHOD("DATA") -> ANSWER             (after a RELOADED or FAILED of the provider, a
//   METHOD("DATA") failed: CODE: MESSAGE  resync, or a new provider)
// Lines printed in response to commands:
//   list:    the "bundle ..." lines and "listed N bundles" as above, or
//            "list: error CODE: MESSAGE"
//   handle:  "handle CONTRACT: PROVIDER VERSION (slot SLOT, generation GEN)", or
//            "handle CONTRACT: error CODE: MESSAGE"
//   call:    "METHOD("DATA") -> ANSWER" or "METHOD("DATA") failed: CODE: MESSAGE"
//   reload:  "reload BUNDLE: RELOADED (reload ID)", "reload BUNDLE: RELOADED, dependents
//            FAILED: NAME, ... (reload ID)" (the bundle's new version is live, those
//            dependents kept their old one), "reload BUNDLE: FAILED [REASON] MESSAGE",
//            or "reload BUNDLE: error CODE: MESSAGE" (the host refused the request)
//   help:    "commands:" then one line per command, each starting with two spaces
//   quit:    "bye" (also at end of input)
//   other:   "error: unknown command "WORD" (try help)", "error: usage: reload BUNDLE"
// UNKNOWN stands for a version the editor has not seen (e.g. OLDVERSION of a bundle loaded
// before a missed event).
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
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
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "polyplug/client/host_client.h"

namespace client = polyplug::client;
namespace v1 = polyplug::host::v1;

namespace {

constexpr int kExitUsage = 2;
constexpr int kExitUnreachable = 3;

constexpr char kUsage[] =
    "usage: polyplug-editor [--host TARGET] [--contract NAME@MAJOR] [--method METHOD]\n"
    "                       [--data TEXT]\n"
    "  --host TARGET         unix:PATH, HOST:PORT or a socket path (default: $POLYPLUG_HOST,\n"
    "                        else the host's default socket)\n"
    "  --contract NAME@MAJOR the contract to follow (default: example.greeter@1)\n"
    "  --method METHOD       the method to call (default: greet)\n"
    "  --data TEXT           its request when a call gives none (default: editor)\n"
    "  --help                this text\n"
    "Then type commands, one per line: help, list, handle, call [TEXT], reload BUNDLE, quit.\n";

struct Flags {
  std::string host;
  std::string contract = "example.greeter@1";
  std::string method = "greet";
  std::string data = "editor";
};

// One line of text: control characters escaped, so that every printed item is one line.
std::string OneLine(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (u < 0x20 || u == 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 0xf];
    } else {
      out += c;
    }
  }
  return out;
}

// "NOT_FOUND: [CONTRACT_NOT_FOUND] no provider of ...".
std::string Error(const absl::Status& status) {
  return absl::StrCat(absl::StatusCodeToString(status.code()), ": ", OneLine(status.message()));
}

std::string VersionText(const v1::Version& v) {
  return absl::StrCat(v.major(), ".", v.minor(), ".", v.patch());
}

// "greeter 1.0.0 (slot 0, generation 1)" or "error NOT_FOUND: ...".
std::string DescribeHandle(const absl::StatusOr<v1::ContractHandle>& handle) {
  if (!handle.ok()) return absl::StrCat("error ", Error(handle.status()));
  return absl::StrCat(handle->provider_bundle_name(), " ", VersionText(handle->provider_version()),
                      " (slot ", handle->index(), ", generation ", handle->generation(), ")");
}

// Parses the command line; an error message (and exit code 2) on a bad one. Sets `help`
// for --help.
absl::Status ParseFlags(int argc, char** argv, Flags& flags, bool& help) {
  help = false;
  if (const char* env = std::getenv("POLYPLUG_HOST"); env != nullptr && *env != '\0') {
    flags.host = env;
  }
  bool host_given = false;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      help = true;
      return absl::OkStatus();
    }
    std::string* target = nullptr;
    absl::string_view name = arg;
    std::optional<std::string> value;
    if (const size_t eq = arg.find('='); absl::StartsWith(arg, "--") && eq != arg.npos) {
      name = arg.substr(0, eq);
      value = std::string(arg.substr(eq + 1));
    }
    if (name == "--host") {
      target = &flags.host;
      host_given = true;
    } else if (name == "--contract") {
      target = &flags.contract;
    } else if (name == "--method") {
      target = &flags.method;
    } else if (name == "--data") {
      target = &flags.data;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          absl::StartsWith(arg, "-") ? "unknown flag " : "unexpected argument ", "\"", arg, "\""));
    }
    if (!value) {
      if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat(name, " needs a value"));
      value = argv[++i];
    }
    *target = *value;
  }
  if (host_given && flags.host.empty()) return absl::InvalidArgumentError("--host is empty");
  if (flags.host.empty()) flags.host = client::DefaultHostTarget();
  const size_t at = flags.contract.rfind('@');
  uint32_t major = 0;
  if (at == std::string::npos || at == 0 ||
      !absl::SimpleAtoi(absl::string_view(flags.contract).substr(at + 1), &major) ||
      !std::isdigit(static_cast<unsigned char>(flags.contract[at + 1]))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--contract wants NAME@MAJOR (e.g. example.greeter@1), not \"", flags.contract, "\""));
  }
  if (flags.method.empty()) return absl::InvalidArgumentError("--method is empty");
  return absl::OkStatus();
}

// stdout, shared by the command loop, the subscription and the worker. Keeps the prompt
// (on a terminal) on a line of its own when an event arrives while it is shown.
class Console {
 public:
  explicit Console(bool interactive) : interactive_(interactive) {}

  void Line(const std::string& text) {
    std::lock_guard<std::mutex> lock(mu_);
    if (prompt_shown_) std::fputs("\n", stdout);
    std::fputs(text.c_str(), stdout);
    std::fputs("\n", stdout);
    if (prompt_shown_) std::fputs("> ", stdout);
    std::fflush(stdout);
  }
  void Prompt() {
    if (!interactive_) return;
    std::lock_guard<std::mutex> lock(mu_);
    std::fputs("> ", stdout);
    std::fflush(stdout);
    prompt_shown_ = true;
  }
  // A line of input was read: the prompt is no longer the last thing on screen.
  void InputRead() {
    std::lock_guard<std::mutex> lock(mu_);
    prompt_shown_ = false;
  }

 private:
  const bool interactive_;
  std::mutex mu_;
  bool prompt_shown_ = false;  // guarded by mu_
};

// Runs `call` on its own thread once per Request(), so that subscription handlers never
// wait for a remote call and the answers come after the event lines that asked for them.
class Worker {
 public:
  explicit Worker(std::function<void()> call)
      : call_(std::move(call)), thread_([this] { Loop(); }) {}
  ~Worker() { Stop(); }

  void Request() {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    ++pending_;
    cv_.notify_all();
  }
  // Forgets pending requests, waits for a running call and ends the thread.
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
      pending_ = 0;
      cv_.notify_all();
    }
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return stopping_ || pending_ > 0; });
      if (stopping_) return;
      --pending_;
      lock.unlock();
      call_();
      lock.lock();
    }
  }

  std::function<void()> call_;
  std::mutex mu_;
  std::condition_variable cv_;
  int pending_ = 0;        // guarded by mu_
  bool stopping_ = false;  // guarded by mu_
  std::thread thread_;     // last: starts once the rest is initialised
};

class Editor {
 public:
  Editor(Flags flags, bool interactive) : flags_(std::move(flags)), console_(interactive) {}

  // Connects, shows the bundles, starts following the host and makes the first call.
  // Returns an exit code when the editor cannot start.
  std::optional<int> Start();
  // Reads and runs commands until quit or end of input.
  void Run();
  // Stops every thread; no line is printed after it returns.
  void Stop();

 private:
  void Call(const std::string& data);
  void List();
  void ShowHandle();
  void Reload(const std::string& bundle);
  void Help();
  // Whether `bundle` provides the contract, as far as the live handle knows.
  bool IsProvider(const std::string& bundle) const;
  client::PhaseHandlers Handlers();
  void PrintPhase(const client::PhaseEvent& e);

  const Flags flags_;
  Console console_;
  std::unique_ptr<client::HostClient> host_;
  std::unique_ptr<client::TrackedContract> tracked_;
  std::unique_ptr<client::LiveInstance> live_;
  std::unique_ptr<Worker> worker_;
  std::unique_ptr<client::Subscription> subscription_;

  // Bundle versions as the subscription saw them, for "OLD -> NEW" on RELOADED. Touched by
  // the subscription's thread only (and read after it is joined).
  std::map<std::string, std::string> versions_;

  std::mutex synced_mu_;
  std::condition_variable synced_cv_;
  bool synced_ = false;  // guarded by synced_mu_; the first snapshot arrived
};

std::optional<int> Editor::Start() {
  auto connected = client::HostClient::Connect(flags_.host);
  if (!connected.ok()) {
    std::fprintf(stderr, "polyplug-editor: --host %s: %s\n%s", flags_.host.c_str(),
                 std::string(connected.status().message()).c_str(), kUsage);
    return kExitUsage;
  }
  host_ = std::move(*connected);
  client::CallOptions quick;
  quick.timeout = absl::Seconds(10);
  auto info = host_->GetHostInfo(quick);
  if (!info.ok()) {
    std::fprintf(stderr, "polyplug-editor: cannot reach polyplug-host at %s: %s\n",
                 flags_.host.c_str(), Error(info.status()).c_str());
    return kExitUnreachable;
  }
  console_.Line(absl::StrCat("connected to polyplug-host ", info->version(), " at ", flags_.host,
                             " (epoch ", info->host_epoch(), ")"));
  List();

  // Made in this order because each one's callbacks use the ones before it; Stop() takes
  // them down in reverse.
  live_ = host_->MakeLiveInstance(flags_.contract);
  worker_ = std::make_unique<Worker>([this] { Call(flags_.data); });
  tracked_ = host_->TrackContract(
      flags_.contract, 0,
      [this](const absl::StatusOr<v1::ContractHandle>& before,
             const absl::StatusOr<v1::ContractHandle>& now) {
        console_.Line(absl::StrCat("[handle] ", flags_.contract, ": ", DescribeHandle(now)));
        // A provider appeared, or another bundle took over: its answer is news. (A reload
        // of the same provider is handled by the phase events.)
        const bool appeared = !before.ok() && absl::IsNotFound(before.status());
        if (now.ok() && (appeared || (before.ok() && before->provider_bundle_name() !=
                                                         now->provider_bundle_name()))) {
          worker_->Request();
        }
      });
  subscription_ = host_->Subscribe(Handlers());
  {
    // Wait for the snapshot, so that the start-up lines come in a fixed order. A host that
    // vanished meanwhile is reported by the subscription; go on regardless.
    std::unique_lock<std::mutex> lock(synced_mu_);
    synced_cv_.wait_for(lock, std::chrono::seconds(30), [&] { return synced_; });
  }
  ShowHandle();
  Call(flags_.data);
  return std::nullopt;
}

void Editor::Stop() {
  subscription_.reset();  // joins its thread: no handler runs after this
  tracked_.reset();       // waits for a running on_refreshed; none starts after this
  worker_.reset();        // forgets pending calls, waits for a running one
  live_.reset();          // destroys the remote instance
  host_.reset();
}

bool Editor::IsProvider(const std::string& bundle) const {
  if (!tracked_) return false;
  absl::StatusOr<v1::ContractHandle> current = tracked_->Current();
  return current.ok() && current->provider_bundle_name() == bundle;
}

void Editor::PrintPhase(const client::PhaseEvent& e) {
  std::string line =
      absl::StrCat("[phase] seq ", e.seq, " ", client::PhaseName(e.phase), " ", e.bundle_name, " ");
  const std::string version = e.bundle_version.ToString();
  if (e.phase == client::Phase::kReloaded) {
    auto it = versions_.find(e.bundle_name);
    absl::StrAppend(&line, it == versions_.end() ? "UNKNOWN" : it->second, " -> ", version);
  } else {
    absl::StrAppend(&line, version);
  }
  if (e.parent_reload_id != 0) absl::StrAppend(&line, " (cascade)");
  if (e.phase == client::Phase::kFailed) {
    absl::StrAppend(&line, " [", client::ReasonToken(e.reason), "] ", OneLine(e.message));
  } else if (!e.message.empty()) {
    absl::StrAppend(&line, ": ", OneLine(e.message));
  }
  console_.Line(line);

  switch (e.phase) {
    case client::Phase::kLoaded:
    case client::Phase::kReloaded:
      versions_[e.bundle_name] = version;
      break;
    case client::Phase::kUnloading:
      versions_.erase(e.bundle_name);
      break;
    default:
      break;
  }
}

client::PhaseHandlers Editor::Handlers() {
  client::PhaseHandlers on;
  on.on_preparing = on.on_loaded =
      on.on_unloading = [this](const client::PhaseEvent& e) { PrintPhase(e); };
  on.on_reloaded = on.on_failed = [this](const client::PhaseEvent& e) {
    PrintPhase(e);
    // The provider's code changed (or failed to): call it again, on the worker.
    if (IsProvider(e.bundle_name)) worker_->Request();
  };
  on.on_host_restarted = [this](const client::HostRestarted& r) {
    console_.Line(absl::StrCat("[host] restarted: epoch ", r.previous_epoch, " -> ", r.epoch));
  };
  on.on_resynced = [this](const client::Resynced& r) {
    versions_.clear();
    std::vector<std::string> bundles;
    for (const client::BundleState& b : r.bundles) {
      versions_[b.name] = b.version.ToString();
      bundles.push_back(absl::StrCat(b.name, " ", b.version.ToString()));
    }
    console_.Line(absl::StrCat("[resync] ", client::ResyncCauseName(r.cause), " at seq ", r.seq,
                               ": ",
                               bundles.empty() ? "(no bundles)" : absl::StrJoin(bundles, ", ")));
    if (r.cause != client::ResyncCause::kInitial) {
      worker_->Request();  // a new host, or missed events: the answer may have changed
    }
    std::lock_guard<std::mutex> lock(synced_mu_);
    synced_ = true;
    synced_cv_.notify_all();
  };
  on.on_connection_changed = [this](const absl::Status& status) {
    console_.Line(status.ok() ? std::string("[connection] up")
                              : absl::StrCat("[connection] lost: ", Error(status)));
  };
  on.on_stopped = [this](const absl::Status& status) {
    console_.Line(absl::StrCat("[subscription] stopped: ", Error(status)));
    std::lock_guard<std::mutex> lock(synced_mu_);
    synced_ = true;  // no snapshot is coming
    synced_cv_.notify_all();
  };
  return on;
}

void Editor::Call(const std::string& data) {
  auto answer = live_->Invoke(flags_.method, data);
  const std::string call = absl::StrCat(flags_.method, "(\"", OneLine(data), "\")");
  console_.Line(answer.ok() ? absl::StrCat(call, " -> ", OneLine(answer->response()))
                            : absl::StrCat(call, " failed: ", Error(answer.status())));
}

void Editor::List() {
  auto listed = host_->ListBundles();
  if (!listed.ok()) {
    console_.Line(absl::StrCat("list: error ", Error(listed.status())));
    return;
  }
  for (const v1::Bundle& b : listed->bundles()) {
    console_.Line(
        absl::StrCat("bundle ", b.name(), " ", VersionText(b.version()), " provides ",
                     b.provides().empty() ? std::string("-") : absl::StrJoin(b.provides(), ",")));
  }
  console_.Line(absl::StrCat("listed ", listed->bundles_size(), " bundles"));
}

void Editor::ShowHandle() {
  console_.Line(
      absl::StrCat("handle ", flags_.contract, ": ", DescribeHandle(tracked_->Current())));
}

void Editor::Reload(const std::string& bundle) {
  auto reloaded = host_->Reload(bundle);
  if (!reloaded.ok()) {
    console_.Line(absl::StrCat("reload ", bundle, ": error ", Error(reloaded.status())));
  } else if (reloaded->outcome() == v1::RELOAD_OUTCOME_RELOADED) {
    console_.Line(
        absl::StrCat("reload ", bundle, ": RELOADED (reload ", reloaded->reload_id(), ")"));
  } else if (reloaded->outcome() == v1::RELOAD_OUTCOME_DEPENDENTS_FAILED) {
    console_.Line(absl::StrCat("reload ", bundle, ": RELOADED, dependents FAILED: ",
                               absl::StrJoin(reloaded->failed_dependents(), ", "), " (reload ",
                               reloaded->reload_id(), ")"));
  } else {
    console_.Line(absl::StrCat("reload ", bundle, ": FAILED [",
                               client::ReasonToken(reloaded->reason()), "] ",
                               OneLine(reloaded->message())));
  }
}

void Editor::Help() {
  console_.Line("commands:");
  console_.Line("  help            this list");
  console_.Line("  list            the loaded bundles, their versions and contracts");
  console_.Line(absl::StrCat("  handle          the live handle of ", flags_.contract));
  console_.Line(absl::StrCat("  call [TEXT]     ", flags_.method, "(TEXT), default \"",
                             OneLine(flags_.data), "\""));
  console_.Line("  reload BUNDLE   reload a bundle and show the outcome");
  console_.Line("  quit            leave (so does end of input)");
}

void Editor::Run() {
  std::string input;
  while (true) {
    console_.Prompt();
    if (!std::getline(std::cin, input)) break;
    console_.InputRead();
    absl::string_view line = absl::StripAsciiWhitespace(input);
    if (line.empty()) continue;
    const size_t space = line.find_first_of(" \t");
    const absl::string_view command = line.substr(0, space);
    const absl::string_view rest =
        space == line.npos ? absl::string_view() : absl::StripAsciiWhitespace(line.substr(space));
    if (command == "quit" || command == "exit") {
      break;
    } else if (command == "help") {
      Help();
    } else if (command == "list") {
      List();
    } else if (command == "handle") {
      ShowHandle();
    } else if (command == "call") {
      Call(rest.empty() ? flags_.data : std::string(rest));
    } else if (command == "reload") {
      if (rest.empty() || rest.find_first_of(" \t") != rest.npos) {
        console_.Line("error: usage: reload BUNDLE");
      } else {
        Reload(std::string(rest));
      }
    } else {
      console_.Line(absl::StrCat("error: unknown command \"", OneLine(command), "\" (try help)"));
    }
  }
  console_.InputRead();
}

}  // namespace

int main(int argc, char** argv) {
  // Debian builds Abseil without NDEBUG, which leaves absl::Mutex's deadlock detection on:
  // a lock-order graph update on every lock gRPC takes (about 6% of a busy host's CPU).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  Flags flags;
  bool help = false;
  if (absl::Status parsed = ParseFlags(argc, argv, flags, help); !parsed.ok()) {
    std::fprintf(stderr, "polyplug-editor: %s\n%s", std::string(parsed.message()).c_str(), kUsage);
    return kExitUsage;
  }
  if (help) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  Editor editor(std::move(flags), isatty(STDIN_FILENO) == 1);
  if (std::optional<int> failed = editor.Start()) {
    editor.Stop();
    return *failed;
  }
  editor.Run();
  editor.Stop();
  std::puts("bye");
  return 0;
}
