// polyplugctl unload BUNDLE [--cascade]: unloads a bundle (and its dependents first).
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

constexpr FlagSpec kFlags[] = {{.name = "cascade"}, kRequestIdFlag, kRecoverTimeoutFlag};

int Run(Context& ctx) {
  const std::string& name = ctx.args.operands()[0];
  const std::string what = absl::StrCat("unload ", name);
  auto response = ctx.client.UnloadBundle(name, ctx.args.Has("cascade"), ctx.call);
  return ReportOutcome(ctx, what, std::move(response), &v1::Operation::unload);
}

}  // namespace

void PrintHuman(const Output& out, const v1::UnloadBundleResponse& response) {
  out.Line(absl::StrCat("unloaded ", absl::StrJoin(response.unloaded(), ", ")));
}

const Command& UnloadCommand() {
  static constexpr Command kCommand = {
      .name = "unload",
      .help =
          "usage: polyplugctl unload BUNDLE [--cascade] [--request-id ID]\n"
          "                                 [--recover-timeout DURATION]\n"
          "\n"
          "Unloads a bundle. Refused (DEPENDENCY_IN_USE) while other bundles depend on it,\n"
          "unless --cascade, which unloads those dependents first. --request-id and\n"
          "--recover-timeout: as for reload (polyplugctl help reload).\n"
          "\n"
          "Exit code 0 when it was unloaded; 1 when the host refused (reason printed); 4\n"
          "when it was still running when polyplugctl stopped waiting.\n",
      .flags = kFlags,
      .min_operands = 1,
      .max_operands = 1,
      .run = Run,
      .sends_request_id = true,
  };
  return kCommand;
}

}  // namespace polyplug::ctl
