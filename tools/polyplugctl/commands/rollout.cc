// polyplugctl rollout DIR --fleet NAME --etcd ENDPOINTS: rolls a bundle out to every host of
// a fleet through etcd (docs/FLEET.md), with per-host acknowledgement, optional canaries
// and automatic rollback.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "fleet/src/etcd_client.h"
#include "fleet/src/fleet_follower.h"
#include "fleet/src/fleet_keys.h"
#include "fleet/src/fleet_state.h"
#include "polyplug/core/bundle_signature.h"
#include "polyplug/core/runtime.h"
#include "polyplugctl/commands/commands.h"
#include "polyplugctl/commands/fleet_support.h"
#include "polyplugctl/commands/support.h"
#include "polyplugctl/connect.h"

namespace polyplug::ctl {
namespace {

namespace fs = std::filesystem;
namespace fv1 = ::polyplug::fleet::v1;
using fleet::FleetFollower;
using fleet::FleetState;

constexpr FlagSpec kFlags[] = {kFleetFlag, kEtcdFlag, {"canary", true}, {"rollout-id", true}};

std::string Short(const std::string& digest) { return digest.substr(0, 12); }

// --canary N (hosts) or P% (of the live hosts, rounded up): how many hosts go first.
absl::StatusOr<std::optional<std::pair<double, bool>>> ParseCanary(const CommandLine& args) {
  if (!args.Has("canary")) return std::nullopt;
  std::string text = args.Get("canary");
  const bool percent = !text.empty() && text.back() == '%';
  if (percent) text.pop_back();
  double value = 0;
  if (!absl::SimpleAtod(text, &value) || value <= 0 || (percent && value > 100) ||
      (!percent && value != std::floor(value))) {
    return absl::InvalidArgumentError(
        absl::StrCat("--canary wants a number of hosts (2) or a percentage (20%), not '",
                     args.Get("canary"), "'"));
  }
  return std::make_pair(value, percent);
}

// One rollout, from the claim to the outcome.
class Rollout {
 public:
  Rollout(const Invocation& ctx, fleet::EtcdClient& etcd, const fleet::FleetKeys& keys,
          std::string fleet)
      : ctx_(ctx), etcd_(etcd), keys_(keys), follower_(etcd, keys), start_(absl::Now()) {
    report_.set_fleet(std::move(fleet));
  }

  int Run(const fs::path& dir, std::optional<std::pair<double, bool>> canary,
          absl::Duration timeout, std::string rollout_id);

 private:
  enum class StageEnd { kDone, kFailed, kTimedOut, kSuperseded };

  // Waits until every live host of `targets` (empty: every live host) answered desired
  // revision `revision`, hosts in `targets` wanting `want` and the others `others`.
  StageEnd WaitStage(absl::string_view stage, const std::set<std::string>& targets,
                     int64_t revision, const fv1::BundleVersion& want, absl::Time deadline);
  void Progress(absl::string_view stage, const std::string& host, absl::string_view event,
                const std::string& reason = "", const std::string& message = "");
  int Finish(fv1::RolloutReport::Outcome outcome, const std::string& message);
  // Writes `record` over the desired record last seen at `expected`; 0 when another
  // writer changed it first (reported as a conflict by the caller).
  absl::StatusOr<int64_t> WriteDesired(const fv1::DesiredBundle& record, int64_t expected);
  int Rollback(int64_t revision, const fv1::BundleVersion& previous, absl::Time deadline);

  const Invocation& ctx_;
  fleet::EtcdClient& etcd_;
  const fleet::FleetKeys& keys_;
  FleetFollower follower_;
  const absl::Time start_;
  fv1::RolloutReport report_;
  std::string bundle_;
  int64_t first_revision_ = 0;
  absl::Time desired_written_ = absl::InfiniteFuture();
  std::map<std::pair<std::string, std::string>, std::string> printed_;  // (stage, host) -> event
  std::set<std::string> applied_, dropped_;
};

void Rollout::Progress(absl::string_view stage, const std::string& host, absl::string_view event,
                       const std::string& reason, const std::string& message) {
  std::string& last = printed_[{std::string(stage), host}];
  if (last == event) return;
  last = std::string(event);
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start_);
  if (ctx_.out.json()) {
    fv1::RolloutProgress progress;
    progress.set_stage(std::string(stage));
    progress.set_host_id(host);
    progress.set_event(std::string(event));
    progress.set_reason(reason);
    progress.set_message(message);
    progress.set_seconds(seconds);
    ctx_.out.Json(progress);
    return;
  }
  Color color = Color::kNone;
  if (event == "APPLIED") color = Color::kGreen;
  if (event == "FAILED") color = Color::kRed;
  if (event == "LEFT") color = Color::kYellow;
  ctx_.out.Line(absl::StrCat("  ", stage, "  ", host, "  ", ctx_.out.Paint(event, color),
                             reason.empty() ? "" : absl::StrCat(" [", reason, "] ", message),
                             absl::StrFormat("  (%.2fs)", seconds)));
}

absl::StatusOr<int64_t> Rollout::WriteDesired(const fv1::DesiredBundle& record, int64_t expected) {
  auto written =
      etcd_.PutIfModRevision(keys_.Desired(bundle_), fleet::RecordToJson(record), expected);
  if (!written.ok()) return written.status();
  if (written->succeeded) return written->revision;
  // The write's outcome was lost and it is retried: it may have been this rollout's own.
  auto now = etcd_.Get(keys_.Desired(bundle_));
  if (now.ok() && !now->kvs.empty() && now->kvs[0].value == fleet::RecordToJson(record)) {
    return now->kvs[0].mod_revision;
  }
  return 0;
}

Rollout::StageEnd Rollout::WaitStage(absl::string_view stage, const std::set<std::string>& targets,
                                     int64_t revision, const fv1::BundleVersion& want,
                                     absl::Time deadline) {
  std::set<std::string> waited;  // targets seen live during the stage
  StageEnd end = StageEnd::kTimedOut;
  follower_.WaitUntil(deadline, [&](const FleetState& state) {
    if (state.revision() < revision) return false;  // the watch has not seen the write yet
    auto desired = state.desired().find(bundle_);
    if (desired == state.desired().end() || desired->second.mod_revision != revision) {
      end = StageEnd::kSuperseded;
      return true;
    }
    bool all = true;
    for (const std::string& host : waited) {
      if (!state.hosts().count(host) && !dropped_.count(host)) {
        dropped_.insert(host);
        Progress(stage, host, "LEFT", "", "its lease ended: not waited for");
      }
    }
    for (const auto& [host, record] : state.hosts()) {
      if (!targets.empty() && !targets.count(host)) continue;
      if (waited.insert(host).second && dropped_.erase(host)) Progress(stage, host, "JOINED");
      const fv1::BundleStatus* status = state.StatusOf(host, bundle_);
      if (status == nullptr || status->desired_revision() < revision) {
        all = false;
        continue;
      }
      if (status->desired_revision() > revision) {
        end = StageEnd::kSuperseded;
        return true;
      }
      switch (status->state()) {
        case fv1::APPLY_STATE_APPLIED:
          if (status->version().bundle_digest() != want.bundle_digest()) {
            all = false;
            break;
          }
          Progress(stage, host, "APPLIED");
          applied_.insert(host);
          break;
        case fv1::APPLY_STATE_FAILED:
          Progress(stage, host, "FAILED", status->reason(), status->message());
          report_.set_failed_host(host);
          report_.set_reason(status->reason());
          report_.set_message(status->message());
          end = StageEnd::kFailed;
          return true;
        default:
          Progress(stage, host, "APPLYING");
          all = false;
          break;
      }
    }
    if (all) end = StageEnd::kDone;
    return all;
  });
  if (end == StageEnd::kTimedOut) {
    report_.clear_pending_hosts();
    follower_.Read([&](const FleetState& state) {
      for (const auto& [host, record] : state.hosts()) {
        if (!targets.empty() && !targets.count(host)) continue;
        const fv1::BundleStatus* status = state.StatusOf(host, bundle_);
        if (status == nullptr || status->desired_revision() != revision ||
            status->state() != fv1::APPLY_STATE_APPLIED) {
          report_.add_pending_hosts(host);
        }
      }
    });
  }
  return end;
}

int Rollout::Finish(fv1::RolloutReport::Outcome outcome, const std::string& message) {
  report_.set_outcome(outcome);
  if (report_.message().empty() || outcome == fv1::RolloutReport::SUCCEEDED) {
    report_.set_message(message);
  }
  for (const std::string& host : applied_) report_.add_applied_hosts(host);
  for (const std::string& host : dropped_) report_.add_dropped_hosts(host);
  report_.set_seconds(absl::ToDoubleSeconds(absl::Now() - start_));
  if (outcome == fv1::RolloutReport::SUCCEEDED && desired_written_ != absl::InfiniteFuture()) {
    report_.set_apply_seconds(absl::ToDoubleSeconds(absl::Now() - desired_written_));
  }
  follower_.Read([&](const FleetState& state) {
    if (first_revision_ > 0) report_.set_etcd_writes(state.revision() - first_revision_);
  });
  if (ctx_.out.json()) {
    ctx_.out.Json(report_);
  } else {
    std::string line;
    switch (outcome) {
      case fv1::RolloutReport::SUCCEEDED:
        line = ctx_.out.Paint("SUCCEEDED", Color::kGreen);
        break;
      case fv1::RolloutReport::ROLLED_BACK:
        line = ctx_.out.Paint("ROLLED BACK", Color::kRed);
        break;
      case fv1::RolloutReport::CONFLICT:
        line = ctx_.out.Paint("CONFLICT", Color::kRed);
        break;
      case fv1::RolloutReport::TIMED_OUT:
        line = ctx_.out.Paint("TIMED OUT", Color::kYellow);
        break;
      default:
        line = ctx_.out.Paint("FAILED", Color::kRed);
        break;
    }
    ctx_.out.Line(absl::StrCat(line, " ", report_.bundle_name(), " ", report_.version().version(),
                               " on fleet ", report_.fleet(), ": ", message,
                               absl::StrFormat(" (%.2fs)", report_.seconds())));
    if (!report_.failed_host().empty()) {
      ctx_.out.Line(absl::StrCat("  failed on ", report_.failed_host(), ": [", report_.reason(),
                                 "] ", report_.message()));
    }
    if (report_.pending_hosts_size() > 0) {
      ctx_.out.Line(
          absl::StrCat("  no answer from: ", absl::StrJoin(report_.pending_hosts(), ", ")));
    }
  }
  switch (outcome) {
    case fv1::RolloutReport::SUCCEEDED:
      return kExitOk;
    case fv1::RolloutReport::CONFLICT:
      return kExitConflict;
    case fv1::RolloutReport::TIMED_OUT:
      return kExitTimeout;
    default:
      return kExitFailed;
  }
}

int Rollout::Rollback(int64_t revision, const fv1::BundleVersion& previous, absl::Time deadline) {
  const std::string failed_host = report_.failed_host();
  if (previous.bundle_digest().empty()) {
    // A first rollout: there is no version to go back to.
    auto deleted = etcd_.DeleteIfModRevision(keys_.Desired(bundle_), revision);
    if (!deleted.ok()) return Failed(ctx_, "rollout: removing the desired state", deleted.status());
    return Finish(fv1::RolloutReport::FAILED,
                  "no earlier version to roll back to: the desired state is removed, and hosts "
                  "that applied this version keep it");
  }
  fv1::DesiredBundle record;
  record.set_bundle_name(bundle_);
  *record.mutable_target() = previous;
  record.set_rollout_id(absl::StrCat(report_.rollout_id(), "-rollback"));
  record.set_rolled_back(report_.rollout_id());
  auto written = WriteDesired(record, revision);
  if (!written.ok()) return Failed(ctx_, "rollout: writing the rollback", written.status());
  if (*written == 0) {
    return Finish(fv1::RolloutReport::CONFLICT,
                  "another writer changed the desired state before the rollback");
  }
  if (!ctx_.out.json()) {
    ctx_.out.Line(absl::StrCat("rolling back to ", previous.version(), " (",
                               Short(previous.bundle_digest()), ") at revision ", *written));
  }
  applied_.clear();
  const StageEnd end = WaitStage("rollback", {}, *written, previous, deadline);
  report_.set_failed_host(failed_host);
  switch (end) {
    case StageEnd::kDone:
      return Finish(fv1::RolloutReport::ROLLED_BACK,
                    absl::StrCat("rolled back to ", previous.version()));
    case StageEnd::kTimedOut:
      return Finish(fv1::RolloutReport::TIMED_OUT, "the rollback did not complete in time");
    case StageEnd::kSuperseded:
      return Finish(fv1::RolloutReport::CONFLICT, "the desired state changed during the rollback");
    case StageEnd::kFailed:
      break;
  }
  return Finish(fv1::RolloutReport::FAILED, "the rollback failed too");
}

int Rollout::Run(const fs::path& dir, std::optional<std::pair<double, bool>> canary,
                 absl::Duration timeout, std::string rollout_id) {
  const absl::Time deadline = start_ + timeout;
  // 1. What is rolled out: name, version, digest, signer.
  core::BundleFiles files = core::Runtime::ReadBundleFiles(dir);
  if (!files.manifest.ok()) return Failed(ctx_, "rollout", files.manifest.status());
  bundle_ = files.manifest->name;
  auto digest = core::DigestBundle(dir);
  if (!digest.ok()) return Failed(ctx_, "rollout", digest.status());
  fv1::BundleVersion target;
  target.set_version(files.manifest->version_text);
  target.set_bundle_digest(core::DigestToHex(digest->digest));
  std::error_code ec;
  if (fs::exists(dir / "bundle.sig", ec)) {
    auto verified = core::VerifyBundleSignature(dir, core::SignaturePolicy::kRequired);
    if (!verified.ok()) return Failed(ctx_, "rollout", verified.status());
    target.set_signing_key(core::PublicKeyToHex(verified->key));
  }
  report_.set_bundle_name(bundle_);
  report_.set_rollout_id(rollout_id);
  *report_.mutable_version() = target;

  // 2. The claim: one rollout of a bundle at a time.
  auto lease = etcd_.GrantLease(absl::Seconds(10));
  if (!lease.ok()) return Failed(ctx_, "rollout", lease.status());
  fv1::RolloutClaim claim;
  claim.set_rollout_id(rollout_id);
  *claim.mutable_version() = target;
  char hostname[256] = {};
  gethostname(hostname, sizeof(hostname) - 1);
  claim.set_owner(absl::StrCat("polyplugctl pid ", getpid(), " on ", hostname));
  auto claimed =
      etcd_.PutIfModRevision(keys_.Rollout(bundle_), fleet::RecordToJson(claim), 0, (*lease)->id());
  if (!claimed.ok()) return Failed(ctx_, "rollout", claimed.status());
  if (!claimed->succeeded) {
    fv1::RolloutClaim other;
    auto current = etcd_.Get(keys_.Rollout(bundle_));
    if (current.ok() && !current->kvs.empty()) {
      (void)fleet::RecordFromJson(current->kvs[0].key, current->kvs[0].value, &other);
    }
    return Finish(
        fv1::RolloutReport::CONFLICT,
        absl::StrCat("another rollout of ", bundle_, " is in progress: ", other.rollout_id(), " (",
                     other.version().version(), ", ", other.owner(), "); nothing was changed"));
  }
  if (absl::Status s = follower_.Start(); !s.ok()) return Failed(ctx_, "rollout", s);
  first_revision_ = claimed->revision - 1;

  // 3. The hosts, the current desired state, the canaries, the first host.
  std::vector<fv1::HostRecord> hosts;
  std::optional<FleetState::Desired> current;
  follower_.Read([&](const FleetState& state) {
    for (const auto& [id, record] : state.hosts()) hosts.push_back(record);
    auto it = state.desired().find(bundle_);
    if (it != state.desired().end()) current = it->second;
  });
  if (hosts.empty()) {
    return Finish(fv1::RolloutReport::FAILED,
                  absl::StrCat("fleet ", report_.fleet(), " has no live host (no key under ",
                               keys_.HostsPrefix(), ")"));
  }
  // What runs before: the desired version, else what most hosts run.
  fv1::BundleVersion previous;
  if (current) {
    previous = current->record.target().bundle_digest() == target.bundle_digest()
                   ? current->record.previous()
                   : current->record.target();
  } else {
    std::map<std::pair<std::string, std::string>, int> running;
    for (const fv1::HostRecord& host : hosts) {
      for (const fv1::HostBundle& b : host.bundles()) {
        if (b.bundle_name() == bundle_ && b.bundle_digest() != target.bundle_digest()) {
          ++running[{b.bundle_digest(), b.version()}];
        }
      }
    }
    int most = 0;
    for (const auto& [version, count] : running) {
      if (count > most) {
        most = count;
        previous.set_bundle_digest(version.first);
        previous.set_version(version.second);
      }
    }
  }
  std::set<std::string> canaries;
  if (canary) {
    const size_t n = canary->second
                         ? static_cast<size_t>(std::ceil(canary->first * hosts.size() / 100.0))
                         : static_cast<size_t>(canary->first);
    if (n < hosts.size()) {
      for (size_t i = 0; i < std::max<size_t>(1, n); ++i) canaries.insert(hosts[i].host_id());
    }
  }
  const fv1::HostRecord* first = &hosts.front();
  for (const fv1::HostRecord& host : hosts) {
    for (const fv1::HostBundle& b : host.bundles()) {
      if (b.bundle_name() == bundle_ && b.bundle_digest() == target.bundle_digest() &&
          (canaries.empty() || canaries.count(host.host_id()))) {
        first = &host;
      }
    }
  }
  if (!ctx_.out.json()) {
    ctx_.out.Line(absl::StrCat(
        "rollout ", rollout_id, ": ", bundle_, " ", target.version(), " (",
        Short(target.bundle_digest()), target.signing_key().empty() ? ", unsigned" : ", signed",
        ") to fleet ", report_.fleet(), ": ", hosts.size(), " live host",
        hosts.size() == 1 ? "" : "s",
        canaries.empty() ? "" : absl::StrCat(", canaries ", absl::StrJoin(canaries, ", "))));
  }

  // 4. The first host gets the bytes, so that the others can fetch them from it.
  bool has_it = false;
  for (const fv1::HostBundle& b : first->bundles()) {
    has_it |= b.bundle_name() == bundle_ && b.bundle_digest() == target.bundle_digest();
  }
  if (!has_it) {
    auto client = ConnectTo(ctx_.args, first->address(), timeout);
    if (!client.ok()) return Usage(client.status().message(), ctx_.help);
    Progress("push", first->host_id(), "APPLYING");
    auto pushed = (*client)->PushBundle(dir);
    if (!pushed.ok()) {
      return Failed(
          ctx_, absl::StrCat("rollout: push to ", first->host_id(), " (", first->address(), ")"),
          pushed.status());
    }
    if (pushed->outcome() != host::v1::PUSH_OUTCOME_LOADED &&
        pushed->outcome() != host::v1::PUSH_OUTCOME_RELOADED) {
      const std::string reason(pushed->outcome() == host::v1::PUSH_OUTCOME_DEPENDENTS_FAILED
                                   ? "DEPENDENTS_FAILED"
                                   : client::ReasonToken(pushed->reason()));
      Progress("push", first->host_id(), "FAILED", reason, pushed->message());
      report_.set_failed_host(first->host_id());
      report_.set_reason(reason);
      report_.set_message(pushed->message());
      return Finish(fv1::RolloutReport::FAILED,
                    "the first host refused it; the fleet's desired state is unchanged");
    }
    Progress("push", first->host_id(), "APPLIED");
  }

  // 5. The desired state, guarded by the revision read.
  fv1::DesiredBundle record;
  record.set_bundle_name(bundle_);
  *record.mutable_target() = target;
  *record.mutable_previous() = previous;
  record.set_rollout_id(rollout_id);
  record.add_sources(first->host_id());
  for (const std::string& host : canaries) record.add_canary_hosts(host);
  int64_t revision = 0;
  if (current && current->record.target().bundle_digest() == target.bundle_digest() &&
      current->record.canary_hosts().empty() && canaries.empty()) {
    revision = current->mod_revision;  // already desired (a rerun): wait for the hosts only
    report_.set_rollout_id(current->record.rollout_id());
  } else {
    auto written = WriteDesired(record, current ? current->mod_revision : 0);
    if (!written.ok()) return Failed(ctx_, "rollout: writing the desired state", written.status());
    if (*written == 0) {
      return Finish(fv1::RolloutReport::CONFLICT,
                    "the desired state changed since it was read (another rollout won)");
    }
    revision = *written;
  }
  desired_written_ = absl::Now();
  report_.set_desired_revision(revision);
  if (!ctx_.out.json()) {
    ctx_.out.Line(absl::StrCat("desired state written at revision ", revision));
  }

  // 6. Canaries first, then the fleet.
  if (!canaries.empty()) {
    switch (WaitStage("canary", canaries, revision, target, deadline)) {
      case StageEnd::kDone:
        break;
      case StageEnd::kFailed:
        return Rollback(revision, previous, deadline);
      case StageEnd::kTimedOut:
        return Finish(fv1::RolloutReport::TIMED_OUT,
                      "canaries had not answered by the deadline; the desired state stays");
      case StageEnd::kSuperseded:
        return Finish(fv1::RolloutReport::CONFLICT, "the desired state changed meanwhile");
    }
    record.clear_canary_hosts();
    auto written = WriteDesired(record, revision);
    if (!written.ok()) return Failed(ctx_, "rollout: writing the desired state", written.status());
    if (*written == 0) {
      return Finish(fv1::RolloutReport::CONFLICT, "the desired state changed meanwhile");
    }
    revision = *written;
    report_.set_desired_revision(revision);
    if (!ctx_.out.json()) {
      ctx_.out.Line(absl::StrCat("canaries applied it; whole fleet at revision ", revision));
    }
  }
  switch (WaitStage("fleet", {}, revision, target, deadline)) {
    case StageEnd::kDone:
      return Finish(
          fv1::RolloutReport::SUCCEEDED,
          absl::StrCat(applied_.size(), " host", applied_.size() == 1 ? "" : "s", " run it"));
    case StageEnd::kFailed:
      return Rollback(revision, previous, deadline);
    case StageEnd::kTimedOut:
      return Finish(fv1::RolloutReport::TIMED_OUT,
                    "hosts had not answered by the deadline; the desired state stays");
    case StageEnd::kSuperseded:
      break;
  }
  return Finish(fv1::RolloutReport::CONFLICT, "the desired state changed meanwhile");
}

int Run(const Invocation& ctx) {
  auto target = FleetTargetOf(ctx);
  if (!target.ok()) return Misuse(ctx, target.status().message());
  auto canary = ParseCanary(ctx.args);
  if (!canary.ok()) return Misuse(ctx, canary.status().message());
  auto timeout = ParseTimeout(ctx.args);
  if (!timeout.ok()) return Misuse(ctx, timeout.status().message());
  std::string rollout_id = ctx.args.Get("rollout-id");
  if (rollout_id.empty()) {
    rollout_id = absl::StrFormat("r-%s-%06x",
                                 absl::FormatTime("%Y%m%d%H%M%S", absl::Now(), absl::UTCTimeZone()),
                                 absl::Uniform<uint32_t>(absl::BitGen(), 0, 1 << 24));
  }
  const fs::path dir = ctx.args.operands()[0];
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return Misuse(ctx, absl::StrCat(dir.string(), " is not a bundle directory"));
  }
  Rollout rollout(ctx, *target->etcd, target->keys, target->fleet);
  return rollout.Run(dir, *canary, timeout->value_or(absl::Minutes(5)), std::move(rollout_id));
}

}  // namespace

const Command& RolloutCommand() {
  static constexpr Command kCommand = {
      .name = "rollout",
      .help =
          "usage: polyplugctl rollout DIR --fleet NAME --etcd HOST:PORT[,...] [--canary N|P%]\n"
          "                           [--rollout-id ID] [--timeout DURATION] [--json]\n"
          "\n"
          "Rolls the bundle directory DIR out to every live host of the fleet (docs/FLEET.md):\n"
          "claims the bundle (one rollout of a bundle at a time), pushes DIR to a first host,\n"
          "writes the fleet's desired state in one etcd transaction guarded by the revision\n"
          "it read, and waits until every live host acknowledged it, printing a line per host.\n"
          "Hosts fetch the bytes from peers that have them and check digest and signature.\n"
          "A host whose lease ends drops out of the rollout instead of holding it up.\n"
          "--canary N or P%: that many hosts first; the rest only once they all applied it.\n"
          "When a host fails, the previous desired state is restored and the fleet rolls back.\n"
          "--timeout (default 5m) bounds the whole rollout. --etcd defaults to $POLYPLUG_ETCD.\n"
          "\n"
          "Exit code 0 when every live host runs it; 1 when a host failed (rolled back, the\n"
          "host and reason printed) or nothing could start; 3 when etcd or the first host is\n"
          "unreachable; 4 when hosts had not answered in time (the desired state stays); 5\n"
          "when another rollout of the bundle is in progress or won the write.\n",
      .flags = kFlags,
      .min_operands = 1,
      .max_operands = 1,
      .run_offline = Run,
  };
  return kCommand;
}

}  // namespace polyplug::ctl
