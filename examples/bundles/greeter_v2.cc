// greeter_v2: example.greeter@1 one version later (bundle 2.0.0, contract version 1.1.0).
//
// The contract major stays 1, so the contract id, the registry slot and every handle
// callers hold stay the same across the reload. Only the behaviour changes:
// fn0 writes int32_t 2, and "greet" answers "Hi there, <name>! (greeter v2)".
#include <cstdint>
#include <string>
#include <string_view>

#include "polyplug/guest.hpp"

namespace {

namespace guest = polyplug::guest;

std::string Greet(std::string_view name) {
  if (name.empty()) name = "world";
  return "Hi there, " + std::string(name) + "! (greeter v2)";
}

void Init(guest::Registrar& registrar) {
  registrar.Contract("example.greeter", {1, 1, 0})
      .Function(0, [](const guest::NativeCall<void>&) { return int32_t{2}; })
      .Method("greet", [](std::string_view request) { return Greet(request); });
}

}  // namespace

POLYPLUG_BUNDLE(Init);
