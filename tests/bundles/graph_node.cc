// graph_node: one library for any dependency graph a test writes. Its init registers every
// contract the bundle's manifest lists in `provides` (it reads <bundle dir>/manifest.toml),
// so a test shapes a graph by writing manifests around copies of this one library: names,
// provided contracts, [[dependency]] tables and needs_reinit_on_dep_reload.
//
// Every contract is stateful (its instances are counted by the runtime).
// fn0: writes int32 1. invoke "whoami" -> the bundle name.
#include <cstdint>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "polyplug/guest.hpp"

namespace {

namespace guest = polyplug::guest;

struct State {
  int32_t calls = 0;
};

// The quoted entries of the manifest's `provides = [...]` line, e.g. "node.a@1".
std::vector<std::string> ProvidedContracts(std::string_view bundle_dir) {
  std::ifstream manifest(std::string(bundle_dir) + "/manifest.toml");
  std::vector<std::string> contracts;
  for (std::string line; std::getline(manifest, line);) {
    if (line.rfind("provides", 0) != 0) continue;
    for (size_t open = line.find('"'); open != std::string::npos; open = line.find('"', open)) {
      const size_t close = line.find('"', open + 1);
      if (close == std::string::npos) break;
      contracts.push_back(line.substr(open + 1, close - open - 1));
      open = close + 1;
    }
    break;
  }
  return contracts;
}

std::string bundle_name;  // set by init, read by "whoami"

void Init(guest::Registrar& registrar) {
  bundle_name = std::string(registrar.bundle_name());
  for (const std::string& contract : ProvidedContracts(registrar.bundle_path())) {
    const size_t at = contract.find('@');
    if (at == std::string::npos) {
      throw guest::Error(POLYPLUG_ABI_INVALID_ARGUMENT, "graph_node: provides wants name@major");
    }
    const uint32_t major = static_cast<uint32_t>(std::stoul(contract.substr(at + 1)));
    registrar.Contract<State>(contract.substr(0, at), {major, 0, 0})
        .Function(0, [](const guest::NativeCall<State>&) { return int32_t{1}; })
        .Method("whoami", [](std::string_view) { return bundle_name; });
  }
}

}  // namespace

POLYPLUG_BUNDLE(Init);
