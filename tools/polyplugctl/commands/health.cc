// polyplugctl health [--bundle NAME]: the host's (or a bundle's) serving status.
#include <string>

#include <google/protobuf/struct.pb.h>

#include "absl/strings/str_cat.h"
#include "polyplugctl/commands/commands.h"
#include "polyplugctl/commands/support.h"

namespace polyplug::ctl {
namespace {

constexpr FlagSpec kFlags[] = {{.name = "bundle", .takes_value = true}};

int Run(Context& ctx) {
  const std::string service = ctx.args.Get("bundle");
  auto status = ctx.client.CheckHealth(service, ctx.call);
  if (!status.ok()) return Failed(ctx, "health", status.status());
  const std::string name(client::ServingStatusName(*status));
  if (ctx.out.json()) {
    google::protobuf::Struct root;
    (*root.mutable_fields())["service"].set_string_value(service);
    (*root.mutable_fields())["status"].set_string_value(name);
    ctx.out.Json("polyplugctl.Health", root);
  } else {
    ctx.out.Line(
        absl::StrCat(ctx.out.Paint(name, *status == client::ServingStatus::kServing ? Color::kGreen
                                                                                    : Color::kRed),
                     service.empty() ? "" : "  " + service));
  }
  return *status == client::ServingStatus::kServing ? kExitOk : kExitFailed;
}

}  // namespace

const Command& HealthCommand() {
  static constexpr Command kCommand = {
      .name = "health",
      .help =
          "usage: polyplugctl health [--bundle NAME]\n"
          "\n"
          "The grpc.health.v1 status of the host, or of one loaded bundle (--bundle NAME,\n"
          "the health service named after the bundle). Exit code 0 when SERVING, 1 otherwise\n"
          "(NOT_SERVING, or SERVICE_UNKNOWN for a bundle that is not loaded).\n",
      .flags = kFlags,
      .run = Run,
  };
  return kCommand;
}

}  // namespace polyplug::ctl
