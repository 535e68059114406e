// Command: one polyplugctl command (reload, watch, id, ...), and what it runs with.
//
// Each command lives in commands/<name>.cc and is listed in Commands()
// (commands/commands.h). main.cc parses the command line, checks it against the command's
// Command (flags, operand count), then runs it: `run` with a connected client, or
// `run_offline` before any client is made.
#ifndef POLYPLUG_TOOLS_POLYPLUGCTL_COMMAND_H_
#define POLYPLUG_TOOLS_POLYPLUGCTL_COMMAND_H_

#include <cstddef>
#include <optional>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "polyplug/client/host_client.h"
#include "polyplugctl/command_line.h"
#include "polyplugctl/output.h"

namespace polyplug::ctl {

class WatchEnd;

// polyplugctl's exit codes, which scripts rely on. A command returns one of them; `watch`
// also returns 128 + a signal's number when SIGINT or SIGTERM ends it.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;       // the reload or operation failed (reason printed)
inline constexpr int kExitUsage = 2;        // a usage error
inline constexpr int kExitUnreachable = 3;  // the host is unreachable or refused the credentials
// polyplugctl's own deadline (--timeout) ended the command before it knew the outcome: a
// call's deadline passed without an answer, `watch` or `wait` ran out of time, or an
// operation whose response was lost was still running when polyplugctl stopped waiting.
inline constexpr int kExitTimeout = 4;
// `rollout`: another rollout of the bundle is in progress, or changed the fleet's desired
// state since this one read it; this one changed nothing of the fleet.
inline constexpr int kExitConflict = 5;

// What every command runs with.
struct Invocation {
  const CommandLine& args;  // the command's operands, and the flags given
  const Output& out;
  absl::string_view help;  // the command's help text, which usage errors print
};

// What a command that talks to the host runs with.
struct Context : Invocation {
  client::HostClient& client;
  // The options of each call to the host. For a command that sends a request id (reload,
  // load, unload, push), call.request_id is that id (the same as out.request_id()).
  client::CallOptions call;
  std::optional<absl::Duration> timeout;  // --timeout, when given
  // How `watch` ends. Owned by main(), shared with the thread that takes SIGINT and
  // SIGTERM; only `watch` uses it.
  WatchEnd& watch_end;
  // For a command that sends a request id: how long to wait for the outcome of an
  // operation whose response was lost (--recover-timeout, else --timeout, else 60s).
  absl::Duration recover_timeout = absl::Seconds(60);
};

// A command: what it is called, what it accepts, and how it runs. A literal type, so that
// each command is a constexpr constant of its file.
struct Command {
  // The word that selects it, e.g. "reload".
  absl::string_view name;
  // What `polyplugctl help NAME` and `polyplugctl NAME --help` print, and what follows a
  // usage error of the command. Starts with "usage: polyplugctl NAME" and ends with '\n'.
  absl::string_view help;
  // The flags it accepts beyond the global ones. Commands that share a flag agree on
  // whether it takes a value (all flags are parsed before the command is known).
  absl::Span<const FlagSpec> flags = {};
  // How many operands it takes; main.cc refuses other counts as a usage error.
  size_t min_operands = 0;
  size_t max_operands = 0;
  // Exactly one of the two is set. `run` is for a command that talks to the host: it runs
  // with a connected client. `run_offline` is for one that needs no host (id): it runs
  // before any client is made, so the host, token, TLS and timeout flags are neither read
  // nor checked. Either returns the process's exit code.
  int (*run)(Context& ctx) = nullptr;
  int (*run_offline)(const Invocation& ctx) = nullptr;
  // Whether it runs an operation the host remembers by request id (reload, load, unload,
  // push): it takes --request-id ID and --recover-timeout DURATION, and main.cc makes a
  // random id when none is given.
  bool sends_request_id = false;

  bool needs_host() const { return run != nullptr; }
  // Whether `flag` (without dashes) is one of `flags`.
  bool TakesFlag(absl::string_view flag) const {
    for (const FlagSpec& own : flags) {
      if (own.name == flag) return true;
    }
    return false;
  }
};

}  // namespace polyplug::ctl

#endif  // POLYPLUG_TOOLS_POLYPLUGCTL_COMMAND_H_
