#include "polyplugctl/commands/commands.h"

namespace polyplug::ctl {

std::vector<const Command*> Commands() {
  return {&ReloadCommand(), &LoadCommand(),   &PushCommand(), &UnloadCommand(), &FindCommand(),
          &ListCommand(),   &WatchCommand(),  &CallCommand(), &InfoCommand(),   &HealthCommand(),
          &IdCommand(),     &KeygenCommand(), &SignCommand(), &VerifyCommand(), &DigestCommand()};
}

}  // namespace polyplug::ctl
