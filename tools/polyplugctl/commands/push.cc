// polyplugctl push DIR: uploads a bundle directory into the host's deploy root and loads or
// reloads it there.
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "polyplugctl/commands/commands.h"
#include "polyplugctl/commands/support.h"

namespace polyplug::ctl {
namespace {

namespace v1 = host::v1;

int Run(Context& ctx) {
  const std::string& dir = ctx.args.operands()[0];
  auto response = ctx.client.PushBundle(dir, ctx.call);
  if (!response.ok()) return Failed(ctx, absl::StrCat("push ", dir), response.status());
  const bool ok = response->outcome() == v1::PUSH_OUTCOME_LOADED ||
                  response->outcome() == v1::PUSH_OUTCOME_RELOADED;
  if (ctx.out.json()) {
    ctx.out.Json(*response);
    return ok ? kExitOk : kExitFailed;
  }
  std::string previous_version;
  for (const v1::ReloadPhaseEvent& e : response->events()) {
    if (e.phase() == v1::PHASE_PREPARING && e.reload_id() == response->reload_id()) {
      previous_version = Output::VersionText(e.bundle_version());
    }
  }
  const std::string version =
      response->has_bundle() ? Output::VersionText(response->bundle().version()) : "";
  switch (response->outcome()) {
    case v1::PUSH_OUTCOME_LOADED:
      ctx.out.Line(absl::StrCat(ctx.out.PhaseWord(v1::PHASE_LOADED), " ", response->bundle_name(),
                                " ", version, "  into ", response->dir()));
      break;
    case v1::PUSH_OUTCOME_RELOADED:
    case v1::PUSH_OUTCOME_DEPENDENTS_FAILED:
      ctx.out.Line(absl::StrCat(ctx.out.PhaseWord(v1::PHASE_RELOADED), " ", response->bundle_name(),
                                " ", version,
                                previous_version.empty() ? "" : " (was " + previous_version + ")",
                                "  in ", response->dir()));
      break;
    default:
      ctx.out.Line(absl::StrCat(ctx.out.PhaseWord(v1::PHASE_FAILED), " ", response->bundle_name(),
                                ": [", client::ReasonToken(response->reason()), "] ",
                                response->message()));
      ctx.out.Line("  nothing changed: the bundle's files and running version are as before");
      break;
  }
  ctx.out.Line(absl::StrCat("  pushed ", response->bytes_received(), " bytes, digest ",
                            response->bundle_digest()));
  for (const v1::ReloadPhaseEvent& e : response->events()) {
    ctx.out.Line(absl::StrCat("  ", ctx.out.EventText(e)));
  }
  if (response->failed_dependents_size() > 0) {
    ctx.out.Note(absl::StrCat("dependents failed to follow the reload: ",
                              absl::StrJoin(response->failed_dependents(), ", ")));
  }
  return ok ? kExitOk : kExitFailed;
}

}  // namespace

const Command& PushCommand() {
  static constexpr Command kCommand = {
      .name = "push",
      .help =
          "usage: polyplugctl push DIR\n"
          "\n"
          "Uploads the bundle directory DIR (on this machine) into the host's deploy root\n"
          "(polyplug-host --deploy-root) and loads it there, or reloads it when it is loaded\n"
          "from there: one operation, whose outcome is printed. The host checks every byte\n"
          "against its SHA-256 and, under its signature policy, bundle.sig\n"
          "(polyplugctl sign). An upload that fails leaves nothing behind.\n"
          "\n"
          "Exit code 0 when the bundle LOADED or RELOADED (every dependent following); 1 when\n"
          "it FAILED (the previous version, if any, stays live; the reason is printed), a\n"
          "dependent failed, or the host refused the upload.\n",
      .min_operands = 1,
      .max_operands = 1,
      .run = Run,
  };
  return kCommand;
}

}  // namespace polyplug::ctl
