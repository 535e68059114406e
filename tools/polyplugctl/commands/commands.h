// polyplugctl's commands, one file each, and the list main.cc dispatches on.
#ifndef POLYPLUG_TOOLS_POLYPLUGCTL_COMMANDS_COMMANDS_H_
#define POLYPLUG_TOOLS_POLYPLUGCTL_COMMANDS_COMMANDS_H_

#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "polyplugctl/command.h"

namespace polyplug::ctl {

const Command& ReloadCommand();      // commands/reload.cc
const Command& LoadCommand();        // commands/load.cc
const Command& PushCommand();        // commands/push.cc
const Command& UnloadCommand();      // commands/unload.cc
const Command& OperationCommand();   // commands/operation.cc
const Command& FindCommand();        // commands/find.cc
const Command& ListCommand();        // commands/list.cc
const Command& WatchCommand();       // commands/watch.cc
const Command& WaitCommand();        // commands/wait.cc
const Command& CallCommand();        // commands/call.cc
const Command& InfoCommand();        // commands/info.cc
const Command& HealthCommand();      // commands/health.cc
const Command& IdCommand();          // commands/id.cc
const Command& KeygenCommand();      // commands/signing.cc
const Command& SignCommand();        // commands/signing.cc
const Command& VerifyCommand();      // commands/signing.cc
const Command& DigestCommand();      // commands/signing.cc
const Command& VersionCommand();     // commands/version.cc
const Command& CompletionCommand();  // commands/completion.cc
const Command& RolloutCommand();     // commands/rollout.cc
const Command& FleetCommand();       // commands/fleet.cc

// The flags every command takes, given before or after the command.
absl::Span<const FlagSpec> GlobalFlags();
bool IsGlobalFlag(absl::string_view name);

// Every command, each name once. A new command is added here and to the global help text
// in main.cc; `polyplugctl completion bash` completes it from this list.
std::vector<const Command*> Commands();

}  // namespace polyplug::ctl

#endif  // POLYPLUG_TOOLS_POLYPLUGCTL_COMMANDS_COMMANDS_H_
