#include "polyplugctl/commands/commands.h"

namespace polyplug::ctl {

std::vector<const Command*> Commands() {
  return {&ReloadCommand(), &LoadCommand(), &UnloadCommand(), &FindCommand(),   &ListCommand(),
          &WatchCommand(),  &CallCommand(), &InfoCommand(),   &HealthCommand(), &IdCommand()};
}

}  // namespace polyplug::ctl
