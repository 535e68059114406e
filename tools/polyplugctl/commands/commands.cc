#include "polyplugctl/commands/commands.h"

namespace polyplug::ctl {
namespace {

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
    {.name = "version"},
};

}  // namespace

absl::Span<const FlagSpec> GlobalFlags() { return kGlobalFlags; }

bool IsGlobalFlag(absl::string_view name) {
  for (const FlagSpec& flag : kGlobalFlags) {
    if (flag.name == name) return true;
  }
  return false;
}

std::vector<const Command*> Commands() {
  return {&ReloadCommand(),    &LoadCommand(),    &PushCommand(),       &UnloadCommand(),
          &OperationCommand(), &FindCommand(),    &ListCommand(),       &WatchCommand(),
          &WaitCommand(),      &CallCommand(),    &InfoCommand(),       &HealthCommand(),
          &IdCommand(),        &KeygenCommand(),  &SignCommand(),       &VerifyCommand(),
          &DigestCommand(),    &VersionCommand(), &CompletionCommand(), &RolloutCommand(),
          &FleetCommand()};
}

}  // namespace polyplug::ctl
