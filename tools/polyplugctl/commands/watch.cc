// polyplugctl watch: prints phase events as they happen, until the watch ends (WatchEnd).
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <google/protobuf/struct.pb.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "polyplug/client/subscription.h"
#include "polyplugctl/commands/commands.h"
#include "polyplugctl/commands/support.h"
#include "polyplugctl/watch_end.h"

namespace polyplug::ctl {
namespace {

namespace v1 = host::v1;

// The envelope types of what watch prints besides ReloadPhaseEvents.
constexpr char kResyncedType[] = "polyplugctl.Resynced";
constexpr char kHostRestartedType[] = "polyplugctl.HostRestarted";

constexpr FlagSpec kFlags[] = {{.name = "from", .takes_value = true},
                               {.name = "until-terminal"},
                               {.name = "count", .takes_value = true},
                               {.name = "bundle", .takes_value = true, .repeatable = true}};

int Run(Context& ctx) {
  client::SubscribeOptions options;
  options.bundle_names = ctx.args.GetAll("bundle");
  // watch prints what the host sent; transitions the client would make up after a resync
  // are for handlers that keep a model of the host, and would read as events here.
  options.synthesize_transitions = false;
  std::optional<uint32_t> count;
  if (ctx.args.Has("count")) {
    auto parsed = ParseUint("count", ctx.args.Get("count"));
    if (!parsed.ok()) return Misuse(ctx, parsed.status().message());
    if (*parsed == 0) return Misuse(ctx, "--count must be at least 1");
    count = *parsed;
  }
  const bool until_terminal = ctx.args.Has("until-terminal");
  if (ctx.args.Has("from")) {
    // SEQ (of the host's current epoch) or EPOCH:SEQ; events from SEQ on.
    const std::string from = ctx.args.Get("from");
    std::vector<std::string> parts = absl::StrSplit(from, ':');
    uint64_t epoch = 0, seq = 0;
    bool ok = parts.size() <= 2 && absl::SimpleAtoi(parts.back(), &seq) && seq >= 1;
    if (ok && parts.size() == 2) ok = absl::SimpleAtoi(parts[0], &epoch);
    if (!ok) {
      return Misuse(ctx,
                    absl::StrCat("--from wants SEQ or EPOCH:SEQ with SEQ >= 1, not '", from, "'"));
    }
    if (parts.size() == 1) {
      auto info = ctx.client.GetHostInfo(ctx.call);
      if (!info.ok()) return Failed(ctx, "watch", info.status());
      epoch = info->host_epoch();
      ctx.out.Note(absl::StrCat(
          "warning: --from ", seq, " names no epoch: it is taken as seq ", seq,
          " of the epoch the host is in now (", epoch,
          "), which may not be the epoch you saw it in (a restarted host numbers its events "
          "from 1 again); give --from EPOCH:SEQ (watch prints EPOCH:SEQ for each event)"));
    }
    options.resume_after = client::Cursor{epoch, seq - 1};
    options.strict_resume = true;
  }

  WatchEnd& end = ctx.watch_end;
  end.Start();
  std::mutex print_mu;  // handlers run on the subscription thread; notes come from it too
  uint32_t seen = 0;
  bool ever_connected = false;
  client::PhaseHandlers handlers;
  auto on_event = [&](const client::PhaseEvent& event) {
    const v1::ReloadPhaseEvent proto = client::PhaseEventToProto(event);
    {
      std::lock_guard<std::mutex> lock(print_mu);
      // The subscription runs on until it is destroyed; nothing prints after the end.
      if (end.finished()) return;
      if (ctx.out.json()) {
        ctx.out.Json(proto);
      } else {
        ctx.out.Line(ctx.out.EventText(proto, /*cursor=*/true));
      }
    }
    ++seen;
    if (until_terminal && event.IsTerminal() && event.parent_reload_id == 0) {
      end.Finish(event.phase == client::Phase::kReloaded ? kExitOk : kExitFailed);
    } else if (count && seen >= *count) {
      end.Finish(kExitOk);
    }
  };
  handlers.on_preparing = handlers.on_reloaded = handlers.on_failed = handlers.on_unloading =
      handlers.on_loaded = on_event;
  handlers.on_host_restarted = [&](const client::HostRestarted& restarted) {
    std::lock_guard<std::mutex> lock(print_mu);
    if (end.finished()) return;
    if (ctx.out.json()) {
      google::protobuf::Struct root;
      (*root.mutable_fields())["previous_epoch"].set_string_value(
          absl::StrCat(restarted.previous_epoch));
      (*root.mutable_fields())["host_epoch"].set_string_value(absl::StrCat(restarted.epoch));
      ctx.out.Json(kHostRestartedType, root);
    } else {
      ctx.out.Line(
          ctx.out.Paint(absl::StrCat("-- the host restarted (epoch ", restarted.previous_epoch,
                                     " -> ", restarted.epoch, "); seq numbers start over"),
                        Color::kYellow));
    }
  };
  handlers.on_resynced = [&](const client::Resynced& resynced) {
    std::lock_guard<std::mutex> lock(print_mu);
    if (end.finished()) return;
    std::vector<std::string> bundles;
    for (const client::BundleState& b : resynced.bundles) {
      bundles.push_back(absl::StrCat(b.name, " ", b.version.ToString()));
    }
    if (ctx.out.json()) {
      google::protobuf::Struct root;
      auto& fields = *root.mutable_fields();
      fields["cause"].set_string_value(std::string(client::ResyncCauseName(resynced.cause)));
      fields["host_epoch"].set_string_value(absl::StrCat(resynced.host_epoch));
      fields["seq"].set_string_value(absl::StrCat(resynced.seq));
      fields["registry_revision"].set_string_value(absl::StrCat(resynced.registry_revision));
      auto* list = fields["bundles"].mutable_list_value();
      for (const client::BundleState& b : resynced.bundles) {
        auto& entry = *list->add_values()->mutable_struct_value()->mutable_fields();
        entry["id"].set_string_value(absl::StrCat(b.id));
        entry["name"].set_string_value(b.name);
        entry["version"].set_string_value(b.version.ToString());
        entry["artifact_sha256"].set_string_value(b.artifact_sha256);
      }
      ctx.out.Json(kResyncedType, root);
    } else if (resynced.cause == client::ResyncCause::kInitial) {
      ctx.out.Note(
          absl::StrCat("watching ", ctx.client.target(), " (host epoch ", resynced.host_epoch,
                       ") from ", resynced.host_epoch, ":", resynced.seq + 1,
                       "; loaded: ", bundles.empty() ? "none" : absl::StrJoin(bundles, ", ")));
    } else {
      ctx.out.Line(ctx.out.Paint(
          absl::StrCat("-- resynced (", client::ResyncCauseName(resynced.cause), ") at ",
                       resynced.host_epoch, ":", resynced.seq,
                       "; loaded: ", bundles.empty() ? "none" : absl::StrJoin(bundles, ", ")),
          Color::kYellow));
    }
  };
  handlers.on_connection_changed = [&](const absl::Status& status) {
    std::lock_guard<std::mutex> lock(print_mu);
    if (end.finished()) return;
    if (status.ok()) {
      if (ever_connected) ctx.out.Note("connected again; resuming");
      ever_connected = true;
      return;
    }
    if (!ever_connected) {
      ctx.out.Error("watch", status);
      end.Finish(ExitCodeOf(status));
      return;
    }
    ctx.out.Note(absl::StrCat("connection lost (", status.message(), "); reconnecting"));
  };
  handlers.on_stopped = [&](const absl::Status& status) {
    std::lock_guard<std::mutex> lock(print_mu);
    if (end.finished()) return;
    ctx.out.Error("watch", status);
    end.Finish(ExitCodeOf(status));
  };
  std::optional<int> code;
  {
    std::unique_ptr<client::Subscription> subscription =
        ctx.client.Subscribe(std::move(handlers), options);
    code = end.Wait(ctx.timeout);
    if (!code) {
      std::lock_guard<std::mutex> lock(print_mu);
      end.Finish(kExitTimeout);  // no handler prints after this
      ctx.out.Error("watch", absl::DeadlineExceededError(
                                 absl::StrCat("--timeout ", absl::FormatDuration(*ctx.timeout),
                                              " passed before the watch ended")));
      code = kExitTimeout;
    }
  }  // stops the subscription: no handler runs after this
  end.Stop();
  return *code;
}

}  // namespace

const Command& WatchCommand() {
  static constexpr Command kCommand = {
      .name = "watch",
      .help =
          "usage: polyplugctl watch [--from EPOCH:SEQ] [--until-terminal] [--count N]\n"
          "                         [--bundle NAME]...\n"
          "\n"
          "Prints phase events as they happen, each with its position EPOCH:SEQ (JSON:\n"
          "host_epoch and seq), reconnecting and resuming after a dropped connection without\n"
          "losing any; a host restart is announced and followed by a resync.\n"
          "--from EPOCH:SEQ: start with event SEQ of host epoch EPOCH (exit code 1 if the\n"
          "host no longer has it, or is in another epoch: it restarted). --from SEQ still\n"
          "works, with a warning: SEQ is taken in whatever epoch the host is in now.\n"
          "--until-terminal: stop after the next reload's terminal phase (exit code 0\n"
          "RELOADED, 1 FAILED). --count N: stop after N events. --bundle: only these\n"
          "bundles' events. --timeout: give up (exit code 4) after that long. Runs until\n"
          "interrupted otherwise (exit code 130).\n",
      .flags = kFlags,
      .run = Run,
  };
  return kCommand;
}

}  // namespace polyplug::ctl
