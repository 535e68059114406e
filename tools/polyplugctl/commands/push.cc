// polyplugctl push DIR: uploads a bundle directory into the host's deploy root and loads or
// reloads it there.
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "polyplugctl/commands/commands.h"
#include "polyplugctl/commands/operations.h"
#include "polyplugctl/commands/support.h"

namespace polyplug::ctl {
namespace {

namespace v1 = host::v1;

constexpr FlagSpec kFlags[] = {kRequestIdFlag, kRecoverTimeoutFlag};

int Run(Context& ctx) {
  const std::string& dir = ctx.args.operands()[0];
  const std::string what = absl::StrCat("push ", dir);
  auto response = ctx.client.PushBundle(dir, ctx.call);
  return ReportOutcome(ctx, what, std::move(response), &v1::Operation::push);
}

}  // namespace

bool Succeeded(const v1::PushBundleResponse& response) {
  return response.outcome() == v1::PUSH_OUTCOME_LOADED ||
         response.outcome() == v1::PUSH_OUTCOME_RELOADED;
}

void PrintHuman(const Output& out, const v1::PushBundleResponse& response) {
  std::string previous_version;
  for (const v1::ReloadPhaseEvent& e : response.events()) {
    if (e.phase() == v1::PHASE_PREPARING && e.reload_id() == response.reload_id()) {
      previous_version = Output::VersionText(e.bundle_version());
    }
  }
  const std::string version =
      response.has_bundle() ? Output::VersionText(response.bundle().version()) : "";
  switch (response.outcome()) {
    case v1::PUSH_OUTCOME_LOADED:
      out.Line(absl::StrCat(out.PhaseWord(v1::PHASE_LOADED), " ", response.bundle_name(), " ",
                            version, "  into ", response.dir()));
      break;
    case v1::PUSH_OUTCOME_RELOADED:
    case v1::PUSH_OUTCOME_DEPENDENTS_FAILED:
      out.Line(absl::StrCat(out.PhaseWord(v1::PHASE_RELOADED), " ", response.bundle_name(), " ",
                            version,
                            previous_version.empty() ? "" : " (was " + previous_version + ")",
                            "  in ", response.dir()));
      break;
    default:
      out.Line(absl::StrCat(out.PhaseWord(v1::PHASE_FAILED), " ", response.bundle_name(), ": [",
                            client::ReasonToken(response.reason()), "] ", response.message()));
      out.Line("  nothing changed: the bundle's files and running version are as before");
      break;
  }
  out.Line(absl::StrCat("  pushed ", response.bytes_received(), " bytes, digest ",
                        response.bundle_digest()));
  for (const v1::ReloadPhaseEvent& e : response.events()) {
    out.Line(absl::StrCat("  ", out.EventText(e)));
  }
  if (response.failed_dependents_size() > 0) {
    out.Note(absl::StrCat("dependents failed to follow the reload: ",
                          absl::StrJoin(response.failed_dependents(), ", ")));
  }
}

const Command& PushCommand() {
  static constexpr Command kCommand = {
      .name = "push",
      .help =
          "usage: polyplugctl push DIR [--request-id ID] [--recover-timeout DURATION]\n"
          "\n"
          "Uploads the bundle directory DIR (on this machine) into the host's deploy root\n"
          "(polyplug-host --deploy-root) and loads it there, or reloads it when it is loaded\n"
          "from there: one operation, whose outcome is printed. The host checks every byte\n"
          "against its SHA-256 and, under its signature policy, bundle.sig\n"
          "(polyplugctl sign). An upload that fails leaves nothing behind. --request-id and\n"
          "--recover-timeout: as for reload (polyplugctl help reload); a retry with the same\n"
          "ID and the same files gets the first outcome.\n"
          "\n"
          "Exit code 0 when the bundle LOADED or RELOADED (every dependent following); 1 when\n"
          "it FAILED (the previous version, if any, stays live; the reason is printed), a\n"
          "dependent failed, or the host refused the upload; 4 when it was still running\n"
          "when polyplugctl stopped waiting.\n",
      .flags = kFlags,
      .min_operands = 1,
      .max_operands = 1,
      .run = Run,
      .sends_request_id = true,
  };
  return kCommand;
}

}  // namespace polyplug::ctl
