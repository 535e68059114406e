// The operations the host remembers by request id (reload, load, unload, push): how each
// command prints its outcome, shared with `polyplugctl operation`, which prints the same
// outcome as remembered by the host.
#ifndef POLYPLUG_TOOLS_POLYPLUGCTL_COMMANDS_OPERATIONS_H_
#define POLYPLUG_TOOLS_POLYPLUGCTL_COMMANDS_OPERATIONS_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "polyplug/host/v1/host.pb.h"
#include "polyplugctl/command.h"
#include "polyplugctl/commands/support.h"

namespace polyplug::ctl {

// Whether the outcome is a success a CI job may rely on: RELOADED with every dependent
// following; a push LOADED or RELOADED.
bool Succeeded(const host::v1::ReloadResponse& response);
bool Succeeded(const host::v1::PushBundleResponse& response);
// A load or unload that answered at all succeeded.
inline bool Succeeded(const host::v1::LoadBundleResponse&) { return true; }
inline bool Succeeded(const host::v1::UnloadBundleResponse&) { return true; }

// The human lines of each outcome (commands/reload.cc, load.cc, unload.cc, push.cc).
void PrintHuman(const Output& out, const host::v1::ReloadResponse& response);
void PrintHuman(const Output& out, const host::v1::LoadBundleResponse& response);
void PrintHuman(const Output& out, const host::v1::UnloadBundleResponse& response);
void PrintHuman(const Output& out, const host::v1::PushBundleResponse& response);

// How reload, load, unload and push end: a response lost to a deadline or a dropped
// connection is asked of the host by request id (RecoverLostResponse, `field` of the
// Operation holding it); then the outcome is printed (JSON or human) and gives the exit
// code. `what` ("reload greeter") names the call in errors.
template <typename Response>
int ReportOutcome(Context& ctx, absl::string_view what, absl::StatusOr<Response> response,
                  const Response& (host::v1::Operation::*field)() const) {
  if (!response.ok()) {
    Recovered recovered = RecoverLostResponse(ctx, what, response.status());
    if (recovered.exit_code) return *recovered.exit_code;
    if (recovered.operation) response = ResponseOf(*recovered.operation, field);
  }
  if (!response.ok()) return Failed(ctx, what, response.status());
  if (ctx.out.json()) {
    ctx.out.Json(*response);
  } else {
    PrintHuman(ctx.out, *response);
  }
  return Succeeded(*response) ? kExitOk : kExitFailed;
}

}  // namespace polyplug::ctl

#endif  // POLYPLUG_TOOLS_POLYPLUGCTL_COMMANDS_OPERATIONS_H_
