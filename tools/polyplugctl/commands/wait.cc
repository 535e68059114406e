// polyplugctl wait [--bundle NAME [--version X.Y.Z] [--sha256 HEX]]: waits until the host
// serves, and until a bundle is loaded (at a version, with an artifact), or --timeout.
//
// The host's health is asked with wait_for_ready, so a host that is not up yet is waited
// for; the bundle's state comes from a subscription (a snapshot, then the events), so
// nothing polls the host for it.
#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <google/protobuf/struct.pb.h>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "polyplug/client/subscription.h"
#include "polyplugctl/commands/commands.h"
#include "polyplugctl/commands/support.h"

namespace polyplug::ctl {
namespace {

namespace v1 = host::v1;

constexpr char kWaitType[] = "polyplugctl.Wait";

constexpr FlagSpec kFlags[] = {{.name = "bundle", .takes_value = true},
                               {.name = "version", .takes_value = true},
                               {.name = "sha256", .takes_value = true}};

// What the wait is for, beyond a serving host.
struct Want {
  std::string bundle;                      // "" when only the host is waited for
  std::optional<client::Version> version;  // --version
  std::string sha256;                      // --sha256, lowercase; "" for any
};

absl::StatusOr<client::Version> ParseVersion(const std::string& text) {
  std::vector<std::string> parts = absl::StrSplit(text, '.');
  client::Version v;
  if (parts.size() != 3 || !absl::SimpleAtoi(parts[0], &v.major) ||
      !absl::SimpleAtoi(parts[1], &v.minor) || !absl::SimpleAtoi(parts[2], &v.patch)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--version wants a version X.Y.Z, e.g. 2.0.0, not '", text, "'"));
  }
  return v;
}

// The bundle as the subscription last saw it.
struct Seen {
  client::Version version;
  std::string sha256;
};

// What the subscription has told so far. Guarded by `mu`.
struct WaitState {
  std::mutex mu;
  std::condition_variable changed;
  bool synced = false;                  // a snapshot arrived
  std::map<std::string, Seen> bundles;  // loaded now (only the wanted one: the filter)
  client::Cursor at;                    // the position of what was seen last
  std::string last_failure;             // the wanted bundle's last FAILED event
  std::optional<absl::Status> stopped;  // the subscription gave up
  uint64_t changes = 0;                 // bumped by every handler call
};

// "greeter is not loaded", "greeter is at 1.0.0 (sha256 ...)".
std::string Describe(const Want& want, const WaitState& state) {
  auto it = state.bundles.find(want.bundle);
  if (it == state.bundles.end()) return absl::StrCat(want.bundle, " is not loaded");
  return absl::StrCat(
      want.bundle, " is at ", it->second.version.ToString(),
      it->second.sha256.empty() ? "" : " (artifact sha256 " + it->second.sha256 + ")");
}

bool Met(const Want& want, const WaitState& state) {
  auto it = state.bundles.find(want.bundle);
  if (it == state.bundles.end()) return false;
  if (want.version && !(it->second.version == *want.version)) return false;
  return want.sha256.empty() || it->second.sha256 == want.sha256;
}

int TimedOut(Context& ctx, absl::Duration timeout, const std::string& what) {
  ctx.out.Error("wait", absl::DeadlineExceededError(absl::StrCat(
                            "--timeout ", absl::FormatDuration(timeout), " passed: ", what)));
  return kExitTimeout;
}

// Waits until the host's health is SERVING (the host may not be up yet).
int WaitForHost(Context& ctx, absl::Time deadline, absl::Duration timeout) {
  absl::Duration backoff = absl::Milliseconds(100);
  while (true) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return TimedOut(ctx, timeout, absl::StrCat(ctx.client.target(), " does not serve"));
    }
    client::CallOptions call = ctx.call;
    call.timeout = left;
    call.wait_for_ready = true;
    auto status = ctx.client.CheckHealth("", call);
    if (status.ok() && *status == client::ServingStatus::kServing) return kExitOk;
    if (!status.ok()) {
      if (absl::IsDeadlineExceeded(status.status()) &&
          client::FailureReasonOf(status.status()) == v1::FAILURE_REASON_UNSPECIFIED) {
        return TimedOut(ctx, timeout,
                        absl::StrCat(ctx.client.target(), " did not come up (",
                                     status.status().message(), ")"));
      }
      // A connection that broke mid-call (a host stopping or restarting) is waited out;
      // anything else (credentials refused, ...) ends the wait.
      if (!ConnectionBroke(status.status())) return Failed(ctx, "wait", status.status());
    }
    // Up but NOT_SERVING: starting or stopping, for a moment. Look again shortly.
    absl::SleepFor(std::min(backoff, deadline - absl::Now()));
    backoff = std::min(backoff * 2, absl::Seconds(1));
  }
}

// Waits, on a subscription, until the bundle is as wanted.
int WaitForBundle(Context& ctx, const Want& want, absl::Time deadline, absl::Duration timeout,
                  client::Cursor* met_at, Seen* met) {
  auto state = std::make_shared<WaitState>();
  client::PhaseHandlers handlers;
  auto loaded = [state](const client::PhaseEvent& e) {
    std::lock_guard<std::mutex> lock(state->mu);
    state->bundles[e.bundle_name] = Seen{e.bundle_version, e.artifact_sha256};
    state->at = client::Cursor{e.host_epoch, e.seq};
    ++state->changes;
    state->changed.notify_all();
  };
  handlers.on_loaded = loaded;
  handlers.on_reloaded = loaded;
  handlers.on_unloading = [state](const client::PhaseEvent& e) {
    std::lock_guard<std::mutex> lock(state->mu);
    state->bundles.erase(e.bundle_name);
    state->at = client::Cursor{e.host_epoch, e.seq};
    ++state->changes;
    state->changed.notify_all();
  };
  handlers.on_failed = [state](const client::PhaseEvent& e) {
    std::lock_guard<std::mutex> lock(state->mu);
    state->last_failure = absl::StrCat(e.bundle_name, " ", e.bundle_version.ToString(), " FAILED [",
                                       client::ReasonToken(e.reason), "] ", e.message);
    state->at = client::Cursor{e.host_epoch, e.seq};
    ++state->changes;
    state->changed.notify_all();
  };
  handlers.on_resynced = [state](const client::Resynced& r) {
    std::lock_guard<std::mutex> lock(state->mu);
    state->bundles.clear();
    for (const client::BundleState& b : r.bundles) {
      state->bundles[b.name] = Seen{b.version, b.artifact_sha256};
    }
    state->synced = true;
    state->at = client::Cursor{r.host_epoch, r.seq};
    ++state->changes;
    state->changed.notify_all();
  };
  handlers.on_stopped = [state](const absl::Status& status) {
    std::lock_guard<std::mutex> lock(state->mu);
    state->stopped = status;
    ++state->changes;
    state->changed.notify_all();
  };
  client::SubscribeOptions options;
  options.bundle_names = {want.bundle};
  options.synthesize_transitions = false;  // each resync carries the whole state anyway
  std::unique_ptr<client::Subscription> subscription =
      ctx.client.Subscribe(std::move(handlers), options);

  std::unique_lock<std::mutex> lock(state->mu);
  bool told_unhashed = false;
  while (true) {
    if (state->stopped) {
      const absl::Status status = *state->stopped;
      lock.unlock();
      return Failed(ctx, "wait", status);
    }
    if (state->synced && Met(want, *state)) {
      *met_at = state->at;
      *met = state->bundles[want.bundle];
      return kExitOk;
    }
    auto it = state->bundles.find(want.bundle);
    if (!want.sha256.empty() && it != state->bundles.end() && it->second.sha256.empty() &&
        !told_unhashed) {
      // A host that does not hash artifacts never reports one: say so, and keep waiting
      // (a host restarted with --hash-artifacts would).
      ctx.out.Note(
          "the host reports no artifact SHA-256 (it hashes artifacts only with "
          "--hash-artifacts or --supervise): --sha256 cannot match until it does");
      told_unhashed = true;
    }
    const uint64_t changes = state->changes;
    if (!state->changed.wait_until(lock, absl::ToChronoTime(deadline),
                                   [&] { return state->changes != changes; })) {
      std::string what = state->synced ? Describe(want, *state)
                                       : absl::StrCat("no snapshot from ", ctx.client.target());
      if (want.version || !want.sha256.empty()) {
        absl::StrAppend(&what, "; waited for ", want.bundle,
                        want.version ? " " + want.version->ToString() : "",
                        want.sha256.empty() ? "" : " with artifact sha256 " + want.sha256);
      }
      if (!state->last_failure.empty()) absl::StrAppend(&what, "; last: ", state->last_failure);
      lock.unlock();
      return TimedOut(ctx, timeout, what);
    }
  }
}

int Run(Context& ctx) {
  Want want;
  want.bundle = ctx.args.Get("bundle");
  if (want.bundle.empty() && (ctx.args.Has("version") || ctx.args.Has("sha256"))) {
    return Misuse(ctx, "--version and --sha256 are about a bundle: give --bundle NAME");
  }
  if (ctx.args.Has("version")) {
    auto version = ParseVersion(ctx.args.Get("version"));
    if (!version.ok()) return Misuse(ctx, version.status().message());
    want.version = *version;
  }
  if (ctx.args.Has("sha256")) {
    want.sha256 = absl::AsciiStrToLower(ctx.args.Get("sha256"));
    if (want.sha256.size() != 64 ||
        !std::all_of(want.sha256.begin(), want.sha256.end(), absl::ascii_isxdigit)) {
      return Misuse(
          ctx, absl::StrCat("--sha256 wants 64 hex digits, not '", ctx.args.Get("sha256"), "'"));
    }
  }
  const absl::Duration timeout = ctx.timeout.value_or(client::ConnectOptions().call_timeout);
  const absl::Time deadline = absl::Now() + timeout;
  if (int code = WaitForHost(ctx, deadline, timeout); code != kExitOk) return code;
  // The health service takes no credentials: one call that does tells a CI job now, not
  // at its next command, that its token is refused.
  client::CallOptions call = ctx.call;
  call.timeout = std::max(deadline - absl::Now(), absl::Milliseconds(1));
  call.wait_for_ready = true;
  auto info = ctx.client.GetHostInfo(call);
  if (!info.ok()) {
    if (ExitCodeOf(info.status()) == kExitTimeout) {
      return TimedOut(ctx, timeout, absl::StrCat(ctx.client.target(), " did not answer"));
    }
    return Failed(ctx, "wait", info.status());
  }
  client::Cursor at;
  Seen seen;
  if (!want.bundle.empty()) {
    if (int code = WaitForBundle(ctx, want, deadline, timeout, &at, &seen); code != kExitOk) {
      return code;
    }
  }
  if (ctx.out.json()) {
    google::protobuf::Struct root;
    auto& fields = *root.mutable_fields();
    fields["target"].set_string_value(ctx.client.target());
    fields["status"].set_string_value("SERVING");
    fields["host_epoch"].set_string_value(absl::StrCat(info->host_epoch()));
    if (!want.bundle.empty()) {
      fields["host_epoch"].set_string_value(absl::StrCat(at.host_epoch));
      fields["seq"].set_string_value(absl::StrCat(at.seq));
      auto& bundle = *fields["bundle"].mutable_struct_value()->mutable_fields();
      bundle["name"].set_string_value(want.bundle);
      bundle["version"].set_string_value(seen.version.ToString());
      bundle["artifact_sha256"].set_string_value(seen.sha256);
    }
    ctx.out.Json(kWaitType, root);
  } else if (want.bundle.empty()) {
    ctx.out.Line(absl::StrCat(ctx.out.Paint("SERVING", Color::kGreen), "  ", ctx.client.target(),
                              " (host epoch ", info->host_epoch(), ", polyplug-host ",
                              info->version(), ")"));
  } else {
    ctx.out.Line(absl::StrCat(ctx.out.PhaseWord(v1::PHASE_LOADED), " ", want.bundle, " ",
                              seen.version.ToString(),
                              seen.sha256.empty() ? "" : " (artifact sha256 " + seen.sha256 + ")",
                              "  at ", at.host_epoch, ":", at.seq));
  }
  return kExitOk;
}

}  // namespace

const Command& WaitCommand() {
  static constexpr Command kCommand = {
      .name = "wait",
      .help =
          "usage: polyplugctl wait [--bundle NAME [--version X.Y.Z] [--sha256 HEX]]\n"
          "\n"
          "Waits until the host serves (its health is SERVING; a host that is not up yet is\n"
          "waited for), and with --bundle until that bundle is loaded: at exactly version\n"
          "X.Y.Z with --version, with the artifact whose SHA-256 is HEX with --sha256 (the\n"
          "host reports it with --hash-artifacts or --supervise). The bundle's state comes\n"
          "from a subscription to the host's events, so the wait ends as soon as the load\n"
          "or reload does. --version comes after the word wait (before it, --version is\n"
          "polyplugctl's own). Prints the bundle and the position EPOCH:SEQ of the event\n"
          "that met the wait (watch --from takes it).\n"
          "\n"
          "Exit code 0 when met; 4 when --timeout (default 60s) passed first; 3 when the host\n"
          "refused the credentials.\n",
      .flags = kFlags,
      .run = Run,
  };
  return kCommand;
}

}  // namespace polyplug::ctl
