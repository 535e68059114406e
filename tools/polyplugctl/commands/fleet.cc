// polyplugctl fleet status --fleet NAME --etcd ENDPOINTS: the hosts of a fleet, what they
// run, how far each is behind the desired state, and its last error (docs/FLEET.md).
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "fleet/src/fleet_state.h"
#include "polyplugctl/commands/commands.h"
#include "polyplugctl/commands/fleet_support.h"
#include "polyplugctl/commands/support.h"

namespace polyplug::ctl {
namespace {

namespace fv1 = ::polyplug::fleet::v1;

constexpr FlagSpec kFlags[] = {kFleetFlag, kEtcdFlag};

std::string StateWord(fv1::ApplyState state) {
  switch (state) {
    case fv1::APPLY_STATE_APPLIED:
      return "APPLIED";
    case fv1::APPLY_STATE_FAILED:
      return "FAILED";
    case fv1::APPLY_STATE_APPLYING:
      return "APPLYING";
    default:
      return "-";
  }
}

int Run(const Invocation& ctx) {
  if (ctx.args.operands()[0] != "status") {
    return Misuse(ctx, absl::StrCat("fleet: unknown subcommand '", ctx.args.operands()[0],
                                    "' (there is: status)"));
  }
  auto target = FleetTargetOf(ctx);
  if (!target.ok()) return Misuse(ctx, target.status().message());
  auto read = target->etcd->GetPrefix(target->keys.root());
  if (!read.ok()) return Failed(ctx, "fleet status", read.status());
  fleet::FleetState state(target->keys);
  state.Reset(*read);

  fv1::FleetStatusReport report;
  report.set_fleet(target->fleet);
  report.set_revision(state.revision());
  for (const auto& [bundle, desired] : state.desired()) {
    auto* entry = report.add_desired();
    *entry->mutable_record() = desired.record;
    entry->set_revision(desired.mod_revision);
  }
  for (const auto& [id, host] : state.hosts()) {
    auto* entry = report.add_hosts();
    *entry->mutable_host() = host;
    std::set<std::string> bundles;
    for (const fv1::HostBundle& b : host.bundles()) bundles.insert(b.bundle_name());
    for (const auto& [bundle, desired] : state.desired()) bundles.insert(bundle);
    for (const std::string& bundle : bundles) {
      auto* row = entry->add_bundles();
      row->set_bundle_name(bundle);
      for (const fv1::HostBundle& b : host.bundles()) {
        if (b.bundle_name() != bundle) continue;
        row->set_running_version(b.version());
        row->set_running_digest(b.bundle_digest());
      }
      const fv1::BundleStatus* status = state.StatusOf(id, bundle);
      if (status != nullptr) *row->mutable_status() = *status;
      auto desired = state.desired().find(bundle);
      if (desired != state.desired().end()) {
        row->set_revision_lag(desired->second.mod_revision -
                              (status != nullptr ? status->desired_revision() : 0));
      }
    }
  }
  if (ctx.out.json()) {
    ctx.out.Json(report);
    return kExitOk;
  }
  ctx.out.Line(absl::StrCat("fleet ", report.fleet(), " (etcd revision ", report.revision(),
                            "): ", report.hosts_size(), " live host",
                            report.hosts_size() == 1 ? "" : "s"));
  for (const auto& desired : report.desired()) {
    const fv1::DesiredBundle& r = desired.record();
    ctx.out.Line(absl::StrCat(
        "desired ", r.bundle_name(), " ", r.target().version(), " (",
        r.target().bundle_digest().substr(0, 12), ") at revision ", desired.revision(),
        ", rollout ", r.rollout_id(),
        r.canary_hosts().empty()
            ? ""
            : absl::StrCat(", canaries ", absl::StrJoin(r.canary_hosts(), ",")),
        r.rolled_back().empty() ? "" : absl::StrCat(", rolled back from ", r.rolled_back())));
  }
  std::vector<std::vector<std::string>> rows = {
      {"HOST", "ADDRESS", "BUNDLE", "RUNS", "STATE", "LAG", "LAST ERROR"}};
  for (const auto& host : report.hosts()) {
    for (const auto& b : host.bundles()) {
      const bool has_status = b.has_status();
      rows.push_back({host.host().host_id(), host.host().address(), b.bundle_name(),
                      b.running_version().empty() ? "-" : b.running_version(),
                      has_status ? StateWord(b.status().state()) : "-",
                      absl::StrCat(b.revision_lag()),
                      has_status && b.status().state() == fv1::APPLY_STATE_FAILED
                          ? absl::StrCat("[", b.status().reason(), "] ", b.status().message())
                          : ""});
    }
  }
  PrintTable(ctx.out, rows);
  for (const std::string& bad : state.malformed()) ctx.out.Note(bad);
  return kExitOk;
}

}  // namespace

const Command& FleetCommand() {
  static constexpr Command kCommand = {
      .name = "fleet",
      .help =
          "usage: polyplugctl fleet status --fleet NAME --etcd HOST:PORT[,...] [--json]\n"
          "\n"
          "Lists the live hosts of the fleet (docs/FLEET.md) with, per bundle, the version\n"
          "each runs, its answer to the desired state (APPLIED, APPLYING, FAILED), how many\n"
          "revisions it is behind the desired record (LAG; 0 when in step) and its last error.\n"
          "--etcd defaults to $POLYPLUG_ETCD.\n"
          "\n"
          "Exit code 0 when etcd answered; 3 when it is unreachable.\n",
      .flags = kFlags,
      .min_operands = 1,
      .max_operands = 1,
      .run_offline = Run,
  };
  return kCommand;
}

}  // namespace polyplug::ctl
