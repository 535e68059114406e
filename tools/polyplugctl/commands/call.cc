// polyplugctl call CONTRACT[@MAJOR] METHOD [--data TEXT|@FILE] [--min-version N]: runs a
// method of a contract inside the host and prints its answer.
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "polyplugctl/commands/commands.h"
#include "polyplugctl/commands/support.h"

namespace polyplug::ctl {
namespace {

namespace v1 = host::v1;

constexpr FlagSpec kFlags[] = {{.name = "data", .takes_value = true},
                               {.name = "min-version", .takes_value = true}};

int Run(Context& ctx) {
  const std::string& contract = ctx.args.operands()[0];
  const std::string& method = ctx.args.operands()[1];
  uint32_t min_version = 0;
  if (ctx.args.Has("min-version")) {
    auto parsed = ParseUint("min-version", ctx.args.Get("min-version"));
    if (!parsed.ok()) return Misuse(ctx, parsed.status().message());
    min_version = *parsed;
  }
  std::string request = ctx.args.Get("data");
  if (!request.empty() && request[0] == '@') {
    std::ifstream in(request.substr(1), std::ios::binary);
    if (!in) return Misuse(ctx, absl::StrCat("--data ", request, ": cannot read the file"));
    std::stringstream buffer;
    buffer << in.rdbuf();
    request = buffer.str();
  }
  auto before = ctx.client.GetHostInfo(ctx.call);
  auto response = ctx.client.InvokeOnce(contract, method, request, min_version, ctx.call);
  if (!response.ok() && ConnectionBroke(response.status()) && before.ok() && before->supervised()) {
    if (auto crashed = CrashedDuring(ctx, *before); !crashed.empty()) {
      // As the host words its errors: "[REASON] message".
      response = absl::FailedPreconditionError(absl::StrCat(
          "[", client::ReasonToken(v1::FAILURE_REASON_CRASHED), "] ", crashed.front().message()));
    }
  }
  if (!response.ok()) {
    return Failed(ctx, absl::StrCat("call ", contract, " ", method), response.status());
  }
  if (ctx.out.json()) {
    ctx.out.Json(*response);
  } else {
    const std::string& bytes = response->response();
    std::fwrite(bytes.data(), 1, bytes.size(), stdout);
    if (bytes.empty() || bytes.back() != '\n') std::fputc('\n', stdout);
    std::fflush(stdout);
  }
  return kExitOk;
}

}  // namespace

const Command& CallCommand() {
  static constexpr Command kCommand = {
      .name = "call",
      .help =
          "usage: polyplugctl call CONTRACT[@MAJOR] METHOD [--data TEXT|@FILE] [--min-version N]\n"
          "\n"
          "Runs METHOD of the contract's provider inside the host, on an instance made for\n"
          "this call, and prints the answer (a newline is added when it has none; --json prints\n"
          "an InvokeResponse, the bytes in base64). --data: the request bytes, or @FILE to read\n"
          "them from a file. Exit code 1 when the contract is not loaded or not invocable, the\n"
          "method does not exist, or the bundle's method failed (reason printed).\n",
      .flags = kFlags,
      .min_operands = 2,
      .max_operands = 2,
      .run = Run,
  };
  return kCommand;
}

}  // namespace polyplug::ctl
