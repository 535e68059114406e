// How polyplugctl reaches the host: the global flags --host, --token-file (or
// $POLYPLUG_TOKEN), --timeout and the TLS flags, turned into a connected HostClient.
#ifndef POLYPLUG_TOOLS_POLYPLUGCTL_CONNECT_H_
#define POLYPLUG_TOOLS_POLYPLUGCTL_CONNECT_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "polyplug/client/host_client.h"
#include "polyplugctl/command_line.h"

namespace polyplug::ctl {

// The environment variable that holds the bearer token itself (--token-file wins over it;
// an empty value counts as unset).
inline constexpr char kTokenEnv[] = "POLYPLUG_TOKEN";

// A duration flag's value: a positive duration (30s, 2m, 500ms) or a number of seconds.
// INVALID_ARGUMENT, with a message for a usage error, otherwise.
absl::StatusOr<absl::Duration> ParseDuration(absl::string_view flag, const std::string& text);

// --timeout, when given.
absl::StatusOr<std::optional<absl::Duration>> ParseTimeout(const CommandLine& args);

// --host, else $POLYPLUG_HOST, else the host's default socket.
std::string HostTarget(const CommandLine& args);

// A client of HostTarget(args) with the token, TLS and timeout the flags ask for.
// INVALID_ARGUMENT (a usage error) for an unreadable or empty token file, unreadable TLS
// files or a malformed target; connects to nothing yet.
absl::StatusOr<std::unique_ptr<client::HostClient>> ConnectFromFlags(
    const CommandLine& args, std::optional<absl::Duration> timeout);
// The same for `target` (a fleet host's advertised address, say) instead of --host.
absl::StatusOr<std::unique_ptr<client::HostClient>> ConnectTo(
    const CommandLine& args, const std::string& target, std::optional<absl::Duration> timeout);

}  // namespace polyplug::ctl

#endif  // POLYPLUG_TOOLS_POLYPLUGCTL_CONNECT_H_
