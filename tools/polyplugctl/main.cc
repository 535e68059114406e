// polyplugctl: drives a running polyplug-host from a terminal or a CI job.
//
// This file parses the command line, reads the global options, connects to the host and
// runs the command (commands/<name>.cc, listed in commands/commands.cc). Exit codes are in
// command.h.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "polyplug/client/host_client.h"
#include "polyplugctl/command.h"
#include "polyplugctl/command_line.h"
#include "polyplugctl/commands/commands.h"
#include "polyplugctl/commands/support.h"
#include "polyplugctl/connect.h"
#include "polyplugctl/output.h"
#include "polyplugctl/watch_end.h"

namespace polyplug::ctl {
namespace {

constexpr char kGlobalHelp[] =
    R"(polyplugctl: drive a running polyplug-host (reload, load, look up, watch, wait), and
compute bundle and contract ids.

usage: polyplugctl [global options] COMMAND [arguments] [options]

commands:
  reload BUNDLE                 hot-reload a bundle (a name, or a path inside a bundle root)
  load PATH                     load the bundle directory at PATH
  push DIR                      upload the bundle directory DIR (here) into the host's
                                deploy root and load or reload it there
  unload BUNDLE [--cascade]     unload a bundle (--cascade: its dependents first)
  rollout DIR --fleet NAME --etcd ENDPOINTS [--canary N|P%]
                                roll DIR out to every host of a fleet through etcd,
                                with acknowledgements and automatic rollback
  fleet status --fleet NAME --etcd ENDPOINTS
                                a fleet's hosts, versions, revision lag and last error
  operation ID [--wait]         the outcome of the reload, load, unload or push that
                                carried request id ID
  find CONTRACT[@MAJOR] [--min-version N]
                                look a contract up
  list bundles|contracts        the loaded bundles, or the published contract providers
  watch [--from EPOCH:SEQ] [--until-terminal] [--count N] [--bundle NAME]...
                                print phase events as they happen
  wait [--bundle NAME [--version X.Y.Z] [--sha256 HEX]]
                                wait until the host serves (and the bundle is loaded)
  info                          the host's version, epoch, revision, roots and counters
  health [--bundle NAME]        the host's (or a bundle's) serving status
  call CONTRACT METHOD [--data TEXT|@FILE]
                                run a method of a contract inside the host
  id NAME|CONTRACT@MAJOR...     a bundle's or a guest contract's id, in decimal and hex
                                (needs no host)
  keygen --out DIR              a new key pair for signing bundles (needs no host)
  sign DIR --key FILE           write DIR/bundle.sig (needs no host)
  verify DIR [--trusted-key FILE]...
                                check DIR/bundle.sig (needs no host)
  digest DIR                    the canonical digest a bundle.sig signs (needs no host)
  version                       polyplugctl's version (and the host's, with --host)
  completion bash               a bash completion script for polyplugctl
  help [COMMAND]                this text, or a command's

global options (before or after the command):
  --host TARGET        unix:PATH or HOST:PORT (default: $POLYPLUG_HOST, else the host's
                       default socket, unix:$XDG_RUNTIME_DIR/polyplug-host.sock)
  --token-file FILE    send the bearer token in FILE (default: the token in
                       $POLYPLUG_TOKEN, if set and not empty; no secret on disk in CI)
  --timeout DURATION   deadline of each call, e.g. 30s, 2m, 500ms (default 60s); for
                       watch, how long to watch (default: until it ends or is
                       interrupted); for wait, how long to wait (default 60s)
  --json               one JSON object per line on stdout:
                       {"type": ..., ["request_id": ...,] "object": {...}}
  --color WHEN         auto (default: only on a terminal), always or never
  --tls                use TLS (system roots unless --tls-ca)
  --tls-ca FILE        trust the CA certificates in FILE (implies --tls)
  --tls-cert FILE      client certificate for mTLS (with --tls-key; implies --tls)
  --tls-key FILE       client key for --tls-cert
  --tls-server-name N  the name to check the server certificate against
  --version            polyplugctl's version (as `polyplugctl version`)

reload, load, unload and push send a request id (--request-id ID, else a random one,
printed on stderr): when their response is lost (the deadline passed, the connection
broke), polyplugctl asks the host for the operation's outcome and reports it.

exit codes: 0 success; 1 the reload or operation failed (reason printed);
            2 usage error; 3 host unreachable or authentication failed;
            4 timeout: --timeout ended the command before the outcome was known;
            5 rollout: another rollout of the bundle is in progress or won.
)";

// Every flag the command line may hold: the global ones, then each command's. They are
// parsed before the command is known; a flag that several commands take accumulates its
// values when any of them repeats it (CommandLine::Get reads the last one either way). A
// command's own spec of a flag the global flags also have (wait's --version) applies after
// the command word (CommandLine::Parse).
std::vector<FlagSpec> AllFlags(const std::vector<const Command*>& commands) {
  std::vector<FlagSpec> flags(GlobalFlags().begin(), GlobalFlags().end());
  for (const Command* command : commands) {
    for (const FlagSpec& flag : command->flags) {
      auto known = std::find_if(flags.begin(), flags.end(),
                                [&](const FlagSpec& f) { return f.name == flag.name; });
      if (known == flags.end()) {
        flags.push_back(flag);
      } else {
        known->repeatable = known->repeatable || flag.repeatable;
      }
    }
  }
  return flags;
}

const Command* FindCommand(const std::vector<const Command*>& commands, absl::string_view name) {
  for (const Command* command : commands) {
    if (command->name == name) return command;
  }
  return nullptr;
}

void Print(absl::string_view text) { std::fwrite(text.data(), 1, text.size(), stdout); }

// A request id polyplugctl makes: 16 hex digits from the system's random source.
std::string NewRequestId() {
  std::random_device random;  // /dev/urandom
  const uint64_t bits = (static_cast<uint64_t>(random()) << 32) ^ random();
  return absl::StrCat(absl::Hex(bits, absl::kZeroPad16));
}

// --request-id, or a new one. INVALID_ARGUMENT for an id the host would refuse.
absl::StatusOr<std::string> RequestIdOf(const CommandLine& args) {
  if (!args.Has("request-id")) return NewRequestId();
  const std::string id = args.Get("request-id");
  bool printable = true;
  for (char c : id) printable = printable && c > ' ' && c < 0x7f;
  if (id.empty() || id.size() > 128 || !printable) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--request-id wants 1 to 128 printable ASCII characters without spaces, not '", id, "'"));
  }
  return id;
}

int Main(int argc, char** argv, WatchEnd& watch_end) {
  const std::vector<const Command*> commands = Commands();
  auto parsed = CommandLine::Parse(
      argc, argv, AllFlags(commands), [&](absl::string_view name) -> absl::Span<const FlagSpec> {
        const Command* command = FindCommand(commands, name);
        return command == nullptr ? absl::Span<const FlagSpec>() : command->flags;
      });
  if (!parsed.ok()) return Usage(parsed.status().message(), kGlobalHelp);
  const CommandLine& args = *parsed;

  if (args.command().empty() || args.command() == "help") {
    if (args.command() == "help" && !args.operands().empty()) {
      const Command* command = FindCommand(commands, args.operands()[0]);
      if (command == nullptr) {
        return Usage(absl::StrCat("no command '", args.operands()[0], "'"), kGlobalHelp);
      }
      Print(command->help);
      return kExitOk;
    }
    if (args.command().empty() && !args.Has("help") && !args.Has("version")) {
      return Usage("no command given", kGlobalHelp);
    }
    if (args.Has("help") || args.command() == "help") {
      Print(kGlobalHelp);
      return kExitOk;
    }
  }
  const Command* command =
      args.command().empty() ? &VersionCommand() : FindCommand(commands, args.command());
  if (command == nullptr) {
    return Usage(absl::StrCat("no command '", args.command(), "'"), kGlobalHelp);
  }
  if (args.Has("help")) {
    Print(command->help);
    return kExitOk;
  }
  // The global --version: anywhere for a command without a --version of its own, before
  // the command word for one with it (wait).
  const bool version =
      args.Has("version") && (!command->TakesFlag("version") || args.GivenBeforeCommand("version"));
  if (version) command = &VersionCommand();
  for (const std::string& flag : args.given()) {
    if (!IsGlobalFlag(flag) && !command->TakesFlag(flag) && !version) {
      return Usage(absl::StrCat(command->name, " takes no --", flag), command->help);
    }
  }
  if (!version && (args.operands().size() < command->min_operands ||
                   args.operands().size() > command->max_operands)) {
    return Usage(absl::StrCat(command->name, ": wrong number of arguments"), command->help);
  }

  const std::string color = args.Get("color", "auto");
  if (color != "auto" && color != "always" && color != "never") {
    return Usage(absl::StrCat("--color wants auto, always or never, not '", color, "'"),
                 kGlobalHelp);
  }
  std::string request_id;
  if (command->sends_request_id) {
    auto id = RequestIdOf(args);
    if (!id.ok()) return Usage(id.status().message(), command->help);
    request_id = *std::move(id);
  }
  const Output out(
      args.Has("json"),
      !args.Has("json") && (color == "always" || (color == "auto" && StdoutWantsColor())),
      request_id);
  if (!command->needs_host()) return command->run_offline({args, out, command->help});

  auto timeout = ParseTimeout(args);
  if (!timeout.ok()) return Usage(timeout.status().message(), kGlobalHelp);
  auto connected = ConnectFromFlags(args, *timeout);
  if (!connected.ok()) return Usage(connected.status().message(), kGlobalHelp);

  Context ctx{{args, out, command->help}, **connected, {}, *timeout, watch_end};
  if (command->sends_request_id) {
    ctx.call.request_id = request_id;
    ctx.recover_timeout = timeout->value_or(client::ConnectOptions().call_timeout);
    if (args.Has("recover-timeout")) {
      auto recover = ParseDuration("recover-timeout", args.Get("recover-timeout"));
      if (!recover.ok()) return Usage(recover.status().message(), command->help);
      ctx.recover_timeout = *recover;
    }
    // Before the call, so that a CI log has it even when the job is killed meanwhile.
    if (!out.json()) out.Note(absl::StrCat("request id: ", request_id));
  }
  return command->run(ctx);
}

}  // namespace
}  // namespace polyplug::ctl

int main(int argc, char** argv) {
  // Debian builds Abseil without NDEBUG, which leaves absl::Mutex's deadlock detection on:
  // a lock-order graph update on every lock gRPC takes (about 6% of a busy host's CPU).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // SIGINT/SIGTERM end a watch cleanly (the stream is cancelled, the exit code is 130/143);
  // a second one, or one during any other command, ends the process at once. Set up before
  // any thread starts.
  auto watch_end = std::make_shared<polyplug::ctl::WatchEnd>();
  polyplug::ctl::HandleStopSignals(watch_end);
  return polyplug::ctl::Main(argc, argv, *watch_end);
}
