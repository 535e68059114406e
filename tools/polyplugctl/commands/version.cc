// polyplugctl version (and the global --version): polyplugctl's version, and the host's
// when --host names one.
#include <memory>
#include <string>

#include <google/protobuf/struct.pb.h>

#include "absl/strings/str_cat.h"
#include "polyplugctl/commands/commands.h"
#include "polyplugctl/commands/support.h"
#include "polyplugctl/connect.h"

#ifndef POLYPLUGCTL_VERSION
#error "POLYPLUGCTL_VERSION (the project version) is set by tools/CMakeLists.txt"
#endif

namespace polyplug::ctl {
namespace {

int RunOffline(const Invocation& ctx) {
  google::protobuf::Struct root;
  auto& fields = *root.mutable_fields();
  fields["polyplugctl"].set_string_value(POLYPLUGCTL_VERSION);
  if (!ctx.out.json()) ctx.out.Line(absl::StrCat("polyplugctl ", POLYPLUGCTL_VERSION));
  // The host's version only when asked for by --host: without it, `version` works offline.
  if (!ctx.args.Has("host")) {
    if (ctx.out.json()) ctx.out.Json("polyplugctl.Version", root);
    return kExitOk;
  }
  auto timeout = ParseTimeout(ctx.args);
  if (!timeout.ok()) return Misuse(ctx, timeout.status().message());
  auto client = ConnectFromFlags(ctx.args, *timeout);
  if (!client.ok()) return Misuse(ctx, client.status().message());
  auto info = (*client)->GetHostInfo();
  if (!info.ok()) {
    if (ctx.out.json()) ctx.out.Json("polyplugctl.Version", root);
    return Failed(ctx, "version", info.status());
  }
  fields["host"].set_string_value(info->version());
  fields["target"].set_string_value((*client)->target());
  fields["host_epoch"].set_string_value(absl::StrCat(info->host_epoch()));
  if (ctx.out.json()) {
    ctx.out.Json("polyplugctl.Version", root);
  } else {
    ctx.out.Line(absl::StrCat("polyplug-host ", info->version(), " at ", (*client)->target(),
                              " (host epoch ", info->host_epoch(), ")"));
  }
  return kExitOk;
}

}  // namespace

const Command& VersionCommand() {
  static constexpr Command kCommand = {
      .name = "version",
      .help =
          "usage: polyplugctl version\n"
          "       polyplugctl --version\n"
          "\n"
          "Prints polyplugctl's version. With --host TARGET also the version of the\n"
          "polyplug-host there (exit code 3 when it cannot be reached); without --host it\n"
          "connects to nothing.\n",
      .run_offline = RunOffline,
  };
  return kCommand;
}

}  // namespace polyplug::ctl
