// polyplugctl info: the host's version, epoch, revision, roots and counters.
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "polyplugctl/commands/commands.h"
#include "polyplugctl/commands/support.h"
#include "wire/wire.h"

namespace polyplug::ctl {
namespace {

namespace v1 = host::v1;

int Run(Context& ctx) {
  auto info = ctx.client.GetHostInfo(ctx.call);
  if (!info.ok()) return Failed(ctx, "info", info.status());
  if (ctx.out.json()) {
    ctx.out.Json(*info);
    return kExitOk;
  }
  const absl::Duration uptime = wire::FromProto(info->uptime());
  PrintTable(ctx.out,
             {{"polyplug-host", info->version()},
              {"target", ctx.client.target()},
              {"listening on", absl::StrJoin(info->listen_addresses(), ", ")},
              {"host epoch", absl::StrCat(info->host_epoch())},
              {"uptime", absl::FormatDuration(absl::Trunc(uptime, absl::Seconds(1)))},
              {"bundle roots", absl::StrJoin(info->bundle_roots(), ", ")},
              {"hot reload", info->hot_reload_enabled() ? "enabled" : "disabled"},
              {"bundles", absl::StrCat(info->bundle_count())},
              {"contracts", absl::StrCat(info->contract_count())},
              {"registry revision", absl::StrCat(info->registry_revision())},
              {"events", absl::StrCat("seq ", info->earliest_seq(), "..", info->last_seq(),
                                      " kept (capacity ", info->journal_capacity(), ")")},
              {"next event", absl::StrCat(info->host_epoch(), ":", info->last_seq() + 1,
                                          "  (watch --from this: what happens next)")},
              {"subscribers", absl::StrCat(info->subscriber_count())},
              {"remote instances",
               absl::StrCat(info->instance_count(), " in ", info->session_count(), " session(s)")},
              {"supervised", info->supervised()
                                 ? absl::StrCat("yes, restarted ", info->restarts(), " time(s)")
                                 : "no"}});
  for (const v1::QuarantinedVersion& q : info->quarantined()) {
    ctx.out.Line(absl::StrCat("quarantined: ", q.bundle_name(), " ",
                              Output::VersionText(q.version()), " (artifact sha256 ",
                              q.artifact_sha256().substr(0, 12), "): ", q.signal(), " in ",
                              q.during()));
  }
  return kExitOk;
}

}  // namespace

const Command& InfoCommand() {
  static constexpr Command kCommand = {
      .name = "info",
      .help =
          "usage: polyplugctl info\n"
          "\n"
          "The host's version, epoch, revision, roots and counters, and the position of the\n"
          "next event as EPOCH:SEQ, which `polyplugctl watch --from` takes.\n",
      .run = Run,
  };
  return kCommand;
}

}  // namespace polyplug::ctl
