// polyplugctl load PATH: loads the bundle directory at PATH.
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "polyplugctl/commands/commands.h"
#include "polyplugctl/commands/support.h"

namespace polyplug::ctl {
namespace {

namespace v1 = host::v1;

int Run(Context& ctx) {
  const std::string& path = ctx.args.operands()[0];
  auto response = ctx.client.LoadBundle(HostPath(path), ctx.call);
  if (!response.ok()) return Failed(ctx, absl::StrCat("load ", path), response.status());
  if (ctx.out.json()) {
    ctx.out.Json(*response);
  } else {
    const v1::Bundle& b = response->bundle();
    ctx.out.Line(absl::StrCat(ctx.out.PhaseWord(v1::PHASE_LOADED), " ", b.name(), " ",
                              Output::VersionText(b.version()), " from ", b.dir()));
    ctx.out.Line(absl::StrCat(
        "  provides ", b.provides().empty() ? "nothing" : absl::StrJoin(b.provides(), ", ")));
  }
  return kExitOk;
}

}  // namespace

const Command& LoadCommand() {
  static constexpr Command kCommand = {
      .name = "load",
      .help =
          "usage: polyplugctl load PATH\n"
          "\n"
          "Loads the bundle directory (or its manifest.toml) at PATH, which must lie inside\n"
          "one of the host's bundle roots. A relative PATH that exists here is made absolute.\n",
      .min_operands = 1,
      .max_operands = 1,
      .run = Run,
  };
  return kCommand;
}

}  // namespace polyplug::ctl
