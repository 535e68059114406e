// What more than one polyplugctl command (or main.cc) uses: usage errors, exit codes of
// failed calls, host paths, tables, number flags, and the check for a host that crashed
// under a call.
#ifndef POLYPLUG_TOOLS_POLYPLUGCTL_COMMANDS_SUPPORT_H_
#define POLYPLUG_TOOLS_POLYPLUGCTL_COMMANDS_SUPPORT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "polyplug/host/v1/host.pb.h"
#include "polyplugctl/command.h"
#include "polyplugctl/output.h"

namespace polyplug::ctl {

// A usage error: "polyplugctl: <message>", a blank line and `help` on stderr. Returns
// kExitUsage.
int Usage(absl::string_view message, absl::string_view help);

// A usage error of the running command: Usage(message, ctx.help).
int Misuse(const Invocation& ctx, absl::string_view message);

// The exit code of a call that failed with `status`: kExitUnreachable when the host could
// not be reached (or the connection broke mid-call) or refused the credentials,
// kExitTimeout when the call's deadline passed without a host's reason (polyplugctl's
// --timeout), kExitFailed otherwise.
int ExitCodeOf(const absl::Status& status);

// A call of `what` (e.g. "reload greeter") that failed with `status`: prints the error
// (Output::Error) and returns ExitCodeOf(status).
int Failed(const Invocation& ctx, absl::string_view what, const absl::Status& status);

// A path for the host: made absolute when it names something here, since the host resolves
// relative paths against its own working directory. Other paths are returned as given.
std::string HostPath(const std::string& path);

// Prints `rows` with each column padded to its widest cell plus two spaces (the last
// column is not padded). The first row is a header, printed bold, unless !header.
void PrintTable(const Output& out, const std::vector<std::vector<std::string>>& rows,
                bool header = true);

// The value of number flag --<flag>: INVALID_ARGUMENT, with a message for Misuse, when
// `text` is not a decimal number that fits a uint32_t.
absl::StatusOr<uint32_t> ParseUint(absl::string_view flag, const std::string& text);

// Whether `status` says the connection to the host broke (which a crash of it does).
bool ConnectionBroke(const absl::Status& status);

// After a call broke the connection to a host under --supervise (`before`: its GetHostInfo
// from before the call): waits for the restarted host and returns the versions it
// quarantined because of this crash. Empty when it did not restart or blamed no bundle.
std::vector<host::v1::QuarantinedVersion> CrashedDuring(Context& ctx,
                                                        const host::v1::HostInfo& before);

// The flags of a command that sends a request id (Command::sends_request_id).
inline constexpr FlagSpec kRequestIdFlag = {.name = "request-id", .takes_value = true};
inline constexpr FlagSpec kRecoverTimeoutFlag = {.name = "recover-timeout", .takes_value = true};

// Whether a call that failed with `status` may have run on the host with its answer lost on
// the way: its deadline passed without a host's reason, or the connection broke mid-call.
bool ResponseLost(const absl::Status& status);

// What became of an operation (reload, load, unload, push) whose call failed with `status`.
struct Recovered {
  // The host has it done: its outcome stands for the call's.
  std::optional<host::v1::Operation> operation;
  // Or the command ends with this exit code; the reason is printed. kExitTimeout when the
  // operation was still running when polyplugctl stopped waiting for it.
  std::optional<int> exit_code;
};

// After the call of `what` (e.g. "reload greeter") failed with `status`: when
// ResponseLost(status), asks the host for the outcome of ctx.call.request_id
// (GetOperation, waiting up to ctx.recover_timeout). Neither field is set when the
// response was not lost, or the host does not know the operation (it did not run, or the
// host restarted) or cannot be asked: then report `status` itself.
Recovered RecoverLostResponse(Context& ctx, absl::string_view what, const absl::Status& status);

// A done operation's error ("[REASON] ..." with its code) when it failed; OK when it did not.
absl::Status OperationStatus(const host::v1::Operation& operation);

// The call's result as a done `operation` has it: its response (`field`), or its error.
template <typename Response>
absl::StatusOr<Response> ResponseOf(const host::v1::Operation& operation,
                                    const Response& (host::v1::Operation::*field)() const) {
  if (absl::Status status = OperationStatus(operation); !status.ok()) return status;
  return (operation.*field)();
}

}  // namespace polyplug::ctl

#endif  // POLYPLUG_TOOLS_POLYPLUGCTL_COMMANDS_SUPPORT_H_
