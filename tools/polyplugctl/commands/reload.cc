// polyplugctl reload BUNDLE: hot-reloads a bundle and waits for its terminal phase.
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "polyplugctl/commands/commands.h"
#include "polyplugctl/commands/operations.h"
#include "polyplugctl/commands/support.h"

namespace polyplug::ctl {
namespace {

namespace v1 = host::v1;

// A reload that crashed the host, as the host would have answered it had it lived.
v1::ReloadResponse CrashedReload(const std::vector<v1::QuarantinedVersion>& crashed) {
  v1::ReloadResponse response;
  response.set_outcome(v1::RELOAD_OUTCOME_FAILED);
  response.set_reason(v1::FAILURE_REASON_CRASHED);
  response.set_message(crashed.front().message());
  response.set_bundle_name(crashed.front().bundle_name());
  for (const v1::QuarantinedVersion& q : crashed) {
    v1::ReloadPhaseEvent* e = response.add_events();
    e->set_kind(v1::EVENT_KIND_PHASE);
    e->set_phase(v1::PHASE_FAILED);
    e->set_bundle_name(q.bundle_name());
    *e->mutable_bundle_version() = q.version();
    *e->mutable_time() = q.crashed_at();
    e->set_reason(v1::FAILURE_REASON_CRASHED);
    e->set_message(q.message());
    e->set_artifact_sha256(q.artifact_sha256());
  }
  return response;
}

constexpr FlagSpec kFlags[] = {
    kRequestIdFlag, kRecoverTimeoutFlag, {.name = "expected-sha256", .takes_value = true}};

int Run(Context& ctx) {
  const std::string& bundle = ctx.args.operands()[0];
  const std::string what = absl::StrCat("reload ", bundle);
  const std::string target = bundle.find('/') != std::string::npos ? HostPath(bundle) : bundle;
  // A bundle that crashes the host kills the connection before any answer; a supervised
  // host comes back and says what crashed. Its epoch before tells the restart apart.
  auto before = ctx.client.GetHostInfo(ctx.call);
  auto response = ctx.client.Reload(target, ctx.args.Get("expected-sha256"), ctx.call);
  if (!response.ok() && ConnectionBroke(response.status()) && before.ok() && before->supervised()) {
    if (auto crashed = CrashedDuring(ctx, *before); !crashed.empty()) {
      response = CrashedReload(crashed);
    }
  }
  return ReportOutcome(ctx, what, std::move(response), &v1::Operation::reload);
}

}  // namespace

bool Succeeded(const v1::ReloadResponse& response) {
  return response.outcome() == v1::RELOAD_OUTCOME_RELOADED &&
         response.failed_dependents().empty() &&
         std::none_of(response.events().begin(), response.events().end(),
                      [](const v1::ReloadPhaseEvent& e) {
                        return e.phase() == v1::PHASE_FAILED && e.parent_reload_id() != 0;
                      });
}

void PrintHuman(const Output& out, const v1::ReloadResponse& response) {
  std::vector<std::string> failed_dependents;
  std::string previous_version;
  for (const v1::ReloadPhaseEvent& e : response.events()) {
    if (e.phase() == v1::PHASE_FAILED && e.parent_reload_id() != 0) {
      failed_dependents.push_back(e.bundle_name());
    }
    if (e.phase() == v1::PHASE_PREPARING && e.reload_id() == response.reload_id()) {
      previous_version = Output::VersionText(e.bundle_version());
    }
  }
  // The bundle's new version is live (DEPENDENTS_FAILED too: then some dependent is not).
  const bool reloaded = response.outcome() == v1::RELOAD_OUTCOME_RELOADED ||
                        response.outcome() == v1::RELOAD_OUTCOME_DEPENDENTS_FAILED;
  if (reloaded) {
    std::string version;
    for (const v1::ReloadPhaseEvent& e : response.events()) {
      if (e.phase() == v1::PHASE_RELOADED && e.reload_id() == response.reload_id()) {
        version = Output::VersionText(e.bundle_version());
      }
    }
    out.Line(
        absl::StrCat(out.PhaseWord(v1::PHASE_RELOADED), " ", response.bundle_name(), " ", version,
                     previous_version.empty() ? "" : " (was " + previous_version + ")", "  reload ",
                     response.reload_id(), ", revision ", response.registry_revision()));
  } else {
    out.Line(absl::StrCat(out.PhaseWord(v1::PHASE_FAILED), " ", response.bundle_name(), ": [",
                          client::ReasonToken(response.reason()), "] ", response.message()));
    if (response.reason() == v1::FAILURE_REASON_CRASHED && previous_version.empty()) {
      out.Line("  the host restarted with the last healthy version of each bundle");
    } else {
      out.Line(absl::StrCat("  the previous version ", previous_version,
                            previous_version.empty() ? "" : " ", "is still live"));
    }
  }
  for (const v1::ReloadPhaseEvent& e : response.events()) {
    out.Line(absl::StrCat("  ", out.EventText(e)));
  }
  if (!failed_dependents.empty()) {
    out.Note(absl::StrCat("dependents failed to follow the reload: ",
                          absl::StrJoin(failed_dependents, ", ")));
  }
}

const Command& ReloadCommand() {
  static constexpr Command kCommand = {
      .name = "reload",
      .help =
          "usage: polyplugctl reload BUNDLE [--expected-sha256 HEX] [--request-id ID]\n"
          "                             [--recover-timeout DURATION]\n"
          "\n"
          "Hot-reloads a loaded bundle and waits for its terminal phase, the cascade to\n"
          "dependents included. BUNDLE is a bundle name, or a path (it contains '/') to the\n"
          "bundle's directory inside one of the host's bundle roots.\n"
          "\n"
          "--expected-sha256 HEX: reload only if the artifact on the host has this SHA-256\n"
          "(sha256sum of the build you mean); otherwise exit code 1 with\n"
          "EXPECTED_SHA256_MISMATCH, and nothing happens.\n"
          "\n"
          "--request-id ID: the host runs the reload once per ID; a retry with the same ID\n"
          "gets the first outcome and reloads nothing again (default: a random ID, printed\n"
          "on stderr). When the answer is lost (--timeout passed, the connection broke),\n"
          "polyplugctl asks the host for the outcome of ID, waiting for it up to\n"
          "--recover-timeout (default: as long as --timeout).\n"
          "\n"
          "Exit code 0 when it RELOADED and every dependent followed; 1 when it FAILED\n"
          "(the previous version stays live; the reason is printed) or a dependent failed;\n"
          "4 when it was still running when polyplugctl stopped waiting.\n",
      .flags = kFlags,
      .min_operands = 1,
      .max_operands = 1,
      .run = Run,
      .sends_request_id = true,
  };
  return kCommand;
}

}  // namespace polyplug::ctl
