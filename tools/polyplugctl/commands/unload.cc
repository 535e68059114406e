// polyplugctl unload BUNDLE [--cascade]: unloads a bundle (and its dependents first).
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "polyplugctl/commands/commands.h"
#include "polyplugctl/commands/support.h"

namespace polyplug::ctl {
namespace {

constexpr FlagSpec kFlags[] = {{.name = "cascade"}};

int Run(Context& ctx) {
  const std::string& name = ctx.args.operands()[0];
  auto response = ctx.client.UnloadBundle(name, ctx.args.Has("cascade"), ctx.call);
  if (!response.ok()) return Failed(ctx, absl::StrCat("unload ", name), response.status());
  if (ctx.out.json()) {
    ctx.out.Json(*response);
  } else {
    ctx.out.Line(absl::StrCat("unloaded ", absl::StrJoin(response->unloaded(), ", ")));
  }
  return kExitOk;
}

}  // namespace

const Command& UnloadCommand() {
  static constexpr Command kCommand = {
      .name = "unload",
      .help =
          "usage: polyplugctl unload BUNDLE [--cascade]\n"
          "\n"
          "Unloads a bundle. Refused (DEPENDENCY_IN_USE) while other bundles depend on it,\n"
          "unless --cascade, which unloads those dependents first.\n",
      .flags = kFlags,
      .min_operands = 1,
      .max_operands = 1,
      .run = Run,
  };
  return kCommand;
}

}  // namespace polyplug::ctl
