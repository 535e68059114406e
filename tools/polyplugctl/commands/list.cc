// polyplugctl list bundles|contracts [--bundle NAME]: the loaded bundles, or the published
// contract providers.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "polyplugctl/commands/commands.h"
#include "polyplugctl/commands/support.h"

namespace polyplug::ctl {
namespace {

namespace v1 = host::v1;

constexpr FlagSpec kFlags[] = {{.name = "bundle", .takes_value = true}};

// Where the listing is current: `watch --from` it misses nothing that came after.
void NoteCursor(Context& ctx, const v1::Cursor& cursor) {
  ctx.out.Note(absl::StrCat("current at ", cursor.host_epoch(), ":", cursor.seq(),
                            " (watch --from ", cursor.host_epoch(), ":", cursor.seq(),
                            " follows on from this listing)"));
}

int ListBundles(Context& ctx) {
  if (ctx.args.Has("bundle")) return Misuse(ctx, "--bundle is for 'list contracts'");
  auto response = ctx.client.ListBundles(ctx.call);
  if (!response.ok()) return Failed(ctx, "list bundles", response.status());
  if (ctx.out.json()) {
    for (const v1::Bundle& b : response->bundles()) ctx.out.Json(b);
    ctx.out.Json(response->cursor());
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {{"NAME", "VERSION", "RELOADS", "PROVIDES", "DIR"}};
  for (const v1::Bundle& b : response->bundles()) {
    rows.push_back({b.name(), Output::VersionText(b.version()), absl::StrCat(b.reload_count()),
                    absl::StrJoin(b.provides(), ","), b.dir()});
  }
  PrintTable(ctx.out, rows);
  NoteCursor(ctx, response->cursor());
  return kExitOk;
}

int ListContracts(Context& ctx) {
  const std::string bundle = ctx.args.Get("bundle");
  auto response = ctx.client.ListContracts(bundle, ctx.call);
  if (!response.ok()) return Failed(ctx, "list contracts", response.status());
  if (ctx.out.json()) {
    for (const v1::ContractHandle& h : response->contracts()) ctx.out.Json(h);
    ctx.out.Json(response->cursor());
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {
      {"CONTRACT", "PROVIDER", "VERSION", "SLOT", "GENERATION", "PLUGIN"}};
  for (const v1::ContractHandle& h : response->contracts()) {
    rows.push_back({absl::StrCat(h.contract_name(), "@", h.contract_version().major()),
                    h.provider_bundle_name(), Output::VersionText(h.provider_version()),
                    absl::StrCat(h.index()), absl::StrCat(h.generation()), h.plugin_name()});
  }
  PrintTable(ctx.out, rows);
  NoteCursor(ctx, response->cursor());
  return kExitOk;
}

int Run(Context& ctx) {
  const std::string& what = ctx.args.operands()[0];
  if (what == "bundles") return ListBundles(ctx);
  if (what == "contracts") return ListContracts(ctx);
  return Misuse(ctx, absl::StrCat("list what? 'bundles' or 'contracts', not '", what, "'"));
}

}  // namespace

const Command& ListCommand() {
  static constexpr Command kCommand = {
      .name = "list",
      .help =
          "usage: polyplugctl list bundles\n"
          "       polyplugctl list contracts [--bundle NAME]\n"
          "\n"
          "The loaded bundles (sorted by name), or the published contract providers\n"
          "(in registry slot order; --bundle: only that bundle's).\n",
      .flags = kFlags,
      .min_operands = 1,
      .max_operands = 1,
      .run = Run,
  };
  return kCommand;
}

}  // namespace polyplug::ctl
