// polyplugctl: drives a running polyplug-host from a terminal or a CI job.
//
// This file parses the command line, reads the global options, connects to the host and
// runs the command (commands/<name>.cc, listed in commands/commands.cc). Exit codes are in
// command.h.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "polyplug/client/host_client.h"
#include "polyplugctl/command.h"
#include "polyplugctl/command_line.h"
#include "polyplugctl/commands/commands.h"
#include "polyplugctl/commands/support.h"
#include "polyplugctl/output.h"
#include "polyplugctl/watch_end.h"

namespace polyplug::ctl {
namespace {

constexpr char kGlobalHelp[] =
    R"(polyplugctl: drive a running polyplug-host (reload, load, look up, watch), and
compute bundle and contract ids.

usage: polyplugctl [global options] COMMAND [arguments] [options]

commands:
  reload BUNDLE                 hot-reload a bundle (a name, or a path inside a bundle root)
  load PATH                     load the bundle directory at PATH
  push DIR                      upload the bundle directory DIR (here) into the host's
                                deploy root and load or reload it there
  unload BUNDLE [--cascade]     unload a bundle (--cascade: its dependents first)
  find CONTRACT[@MAJOR] [--min-version N]
                                look a contract up
  list bundles|contracts        the loaded bundles, or the published contract providers
  watch [--from SEQ] [--until-terminal] [--count N] [--bundle NAME]...
                                print phase events as they happen
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
  help [COMMAND]                this text, or a command's

global options (before or after the command):
  --host TARGET        unix:PATH or HOST:PORT (default: $POLYPLUG_HOST, else the host's
                       default socket, unix:$XDG_RUNTIME_DIR/polyplug-host.sock)
  --token-file FILE    send the bearer token in FILE
  --timeout DURATION   deadline of each call, e.g. 30s, 2m, 500ms (default 60s); for watch,
                       how long to watch (default: until it ends or is interrupted)
  --json               one JSON object per line on stdout, with host.proto's field names
  --color WHEN         auto (default: only on a terminal), always or never
  --tls                use TLS (system roots unless --tls-ca)
  --tls-ca FILE        trust the CA certificates in FILE (implies --tls)
  --tls-cert FILE      client certificate for mTLS (with --tls-key; implies --tls)
  --tls-key FILE       client key for --tls-cert
  --tls-server-name N  the name to check the server certificate against

exit codes: 0 success; 1 the reload or operation failed (reason printed);
            2 usage error; 3 host unreachable or authentication failed.
)";

// The flags every command takes, given before or after the command.
constexpr FlagSpec kGlobalFlags[] = {
    {.name = "host", .takes_value = true},
    {.name = "token-file", .takes_value = true},
    {.name = "timeout", .takes_value = true},
    {.name = "json"},
    {.name = "color", .takes_value = true},
    {.name = "tls"},
    {.name = "tls-ca", .takes_value = true},
    {.name = "tls-cert", .takes_value = true},
    {.name = "tls-key", .takes_value = true},
    {.name = "tls-server-name", .takes_value = true},
    {.name = "help"},
};

bool IsGlobalFlag(absl::string_view name) {
  for (const FlagSpec& flag : kGlobalFlags) {
    if (flag.name == name) return true;
  }
  return false;
}

// Every flag the command line may hold: the global ones, then each command's. They are
// parsed before the command is known; a flag that several commands take accumulates its
// values when any of them repeats it (CommandLine::Get reads the last one either way).
std::vector<FlagSpec> AllFlags(const std::vector<const Command*>& commands) {
  std::vector<FlagSpec> flags(std::begin(kGlobalFlags), std::end(kGlobalFlags));
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

absl::StatusOr<std::string> ReadFileFlag(const CommandLine& args, absl::string_view flag) {
  const std::string path = args.Get(flag);
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("--", flag, " ", path, ": cannot read"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// --timeout, when given: a positive duration (30s, 2m, 500ms) or a number of seconds.
absl::StatusOr<std::optional<absl::Duration>> ParseTimeout(const CommandLine& args) {
  if (!args.Has("timeout")) return std::nullopt;
  absl::Duration d;
  int64_t seconds = 0;
  const std::string text = args.Get("timeout");
  if (absl::SimpleAtoi(text, &seconds)) {
    d = absl::Seconds(seconds);
  } else if (!absl::ParseDuration(text, &d)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--timeout wants a duration such as 30s, 2m or 500ms, not '", text, "'"));
  }
  if (d <= absl::ZeroDuration()) return absl::InvalidArgumentError("--timeout must be positive");
  return d;
}

// The connection options the global flags ask for: timeout, token and TLS.
absl::StatusOr<client::ConnectOptions> ConnectOptionsOf(const CommandLine& args,
                                                        std::optional<absl::Duration> timeout) {
  client::ConnectOptions options;
  if (timeout) options.call_timeout = *timeout;
  if (args.Has("token-file")) {
    auto token = ReadFileFlag(args, "token-file");
    if (!token.ok()) return token.status();
    options.auth_token = std::string(absl::StripAsciiWhitespace(*token));
    if (options.auth_token.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--token-file ", args.Get("token-file"), " is empty"));
    }
  }
  options.tls = args.Has("tls") || args.Has("tls-ca") || args.Has("tls-cert");
  for (auto [flag, into] : {std::pair{"tls-ca", &options.tls_root_certs_pem},
                            std::pair{"tls-cert", &options.tls_client_cert_pem},
                            std::pair{"tls-key", &options.tls_client_key_pem}}) {
    if (!args.Has(flag)) continue;
    auto pem = ReadFileFlag(args, flag);
    if (!pem.ok()) return pem.status();
    *into = *pem;
  }
  options.tls_server_name = args.Get("tls-server-name");
  if (!options.tls_server_name.empty()) options.tls = true;
  return options;
}

// --host, else $POLYPLUG_HOST, else the host's default socket.
std::string HostTarget(const CommandLine& args) {
  std::string target = args.Get("host");
  if (target.empty()) {
    const char* env = std::getenv("POLYPLUG_HOST");
    target = env != nullptr && env[0] != '\0' ? env : client::DefaultHostTarget();
  }
  return target;
}

int Main(int argc, char** argv, WatchEnd& watch_end) {
  const std::vector<const Command*> commands = Commands();
  auto parsed = CommandLine::Parse(argc, argv, AllFlags(commands));
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
    if (args.command().empty() && !args.Has("help")) return Usage("no command given", kGlobalHelp);
    Print(kGlobalHelp);
    return kExitOk;
  }
  const Command* command = FindCommand(commands, args.command());
  if (command == nullptr) {
    return Usage(absl::StrCat("no command '", args.command(), "'"), kGlobalHelp);
  }
  if (args.Has("help")) {
    Print(command->help);
    return kExitOk;
  }
  for (const std::string& flag : args.given()) {
    if (!IsGlobalFlag(flag) && !command->TakesFlag(flag)) {
      return Usage(absl::StrCat(command->name, " takes no --", flag), command->help);
    }
  }
  if (args.operands().size() < command->min_operands ||
      args.operands().size() > command->max_operands) {
    return Usage(absl::StrCat(command->name, ": wrong number of arguments"), command->help);
  }

  const std::string color = args.Get("color", "auto");
  if (color != "auto" && color != "always" && color != "never") {
    return Usage(absl::StrCat("--color wants auto, always or never, not '", color, "'"),
                 kGlobalHelp);
  }
  const Output out(
      args.Has("json"),
      !args.Has("json") && (color == "always" || (color == "auto" && StdoutWantsColor())));
  if (!command->needs_host()) return command->run_offline({args, out, command->help});

  auto timeout = ParseTimeout(args);
  if (!timeout.ok()) return Usage(timeout.status().message(), kGlobalHelp);
  auto options = ConnectOptionsOf(args, *timeout);
  if (!options.ok()) return Usage(options.status().message(), kGlobalHelp);
  auto connected = client::HostClient::Connect(HostTarget(args), *options);
  if (!connected.ok()) return Usage(connected.status().message(), kGlobalHelp);

  Context ctx{{args, out, command->help}, **connected, {}, *timeout, watch_end};
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
