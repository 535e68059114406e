// polyplugctl find CONTRACT[@MAJOR] [--min-version N]: looks a contract up.
#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "polyplugctl/commands/commands.h"
#include "polyplugctl/commands/support.h"

namespace polyplug::ctl {
namespace {

namespace v1 = host::v1;

constexpr FlagSpec kFlags[] = {{.name = "min-version", .takes_value = true}};

// "example.greeter@1 -> greeter 2.0.0  (slot 0, generation 3, plugin "...", contract 1.0.0)".
std::string HandleText(const Output& out, const v1::ContractHandle& h) {
  return absl::StrCat(h.contract_name(), "@", h.contract_version().major(), " -> ",
                      out.Paint(h.provider_bundle_name(), Color::kBold), " ",
                      Output::VersionText(h.provider_version()), "  (slot ", h.index(),
                      ", generation ", h.generation(), ", plugin \"", h.plugin_name(),
                      "\", contract ", Output::VersionText(h.contract_version()),
                      h.invocable() ? ", invocable" : "", ")");
}

int Run(Context& ctx) {
  const std::string& contract = ctx.args.operands()[0];
  uint32_t min_version = 0;
  if (ctx.args.Has("min-version")) {
    auto parsed = ParseUint("min-version", ctx.args.Get("min-version"));
    if (!parsed.ok()) return Misuse(ctx, parsed.status().message());
    min_version = *parsed;
  }
  auto handle = ctx.client.FindContract(contract, min_version, ctx.call);
  if (!handle.ok()) return Failed(ctx, absl::StrCat("find ", contract), handle.status());
  if (ctx.out.json()) {
    ctx.out.Json(*handle);
  } else {
    ctx.out.Line(HandleText(ctx.out, *handle));
  }
  return kExitOk;
}

}  // namespace

const Command& FindCommand() {
  static constexpr Command kCommand = {
      .name = "find",
      .help =
          "usage: polyplugctl find CONTRACT[@MAJOR] [--min-version N]\n"
          "\n"
          "Looks a contract up, e.g. 'example.greeter@1', and prints the provider's handle.\n"
          "--min-version N: only providers of major version N or later. Exit code 1 when\n"
          "nothing provides it.\n",
      .flags = kFlags,
      .min_operands = 1,
      .max_operands = 1,
      .run = Run,
  };
  return kCommand;
}

}  // namespace polyplug::ctl
