// polyplugctl load PATH: loads the bundle directory at PATH.
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
  const std::string& path = ctx.args.operands()[0];
  const std::string what = absl::StrCat("load ", path);
  auto response = ctx.client.LoadBundle(HostPath(path), ctx.call);
  return ReportOutcome(ctx, what, std::move(response), &v1::Operation::load);
}

}  // namespace

void PrintHuman(const Output& out, const v1::LoadBundleResponse& response) {
  const v1::Bundle& b = response.bundle();
  out.Line(absl::StrCat(out.PhaseWord(v1::PHASE_LOADED), " ", b.name(), " ",
                        Output::VersionText(b.version()), " from ", b.dir()));
  out.Line(absl::StrCat("  provides ",
                        b.provides().empty() ? "nothing" : absl::StrJoin(b.provides(), ", ")));
}

const Command& LoadCommand() {
  static constexpr Command kCommand = {
      .name = "load",
      .help =
          "usage: polyplugctl load PATH [--request-id ID] [--recover-timeout DURATION]\n"
          "\n"
          "Loads the bundle directory (or its manifest.toml) at PATH, which must lie inside\n"
          "one of the host's bundle roots. A relative PATH that exists here is made absolute.\n"
          "--request-id and --recover-timeout: as for reload (polyplugctl help reload).\n"
          "\n"
          "Exit code 0 when it LOADED; 1 when the host refused (reason printed); 4 when it\n"
          "was still running when polyplugctl stopped waiting.\n",
      .flags = kFlags,
      .min_operands = 1,
      .max_operands = 1,
      .run = Run,
      .sends_request_id = true,
  };
  return kCommand;
}

}  // namespace polyplug::ctl
