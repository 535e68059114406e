// chain_a: the root of the chain_a <- chain_b <- chain_c cascade. fn0 writes int32 1;
// invoke "whoami" -> "chain_a".
#include <cstdint>
#include <string>
#include <string_view>

#include "polyplug/guest.hpp"

namespace {

namespace guest = polyplug::guest;

void Init(guest::Registrar& registrar) {
  registrar.Contract("chain.a", {1, 0, 0})
      .Function(0, [](const guest::NativeCall<void>&) { return int32_t{1}; })
      .Method("whoami", [](std::string_view) { return std::string("chain_a"); });
}

}  // namespace

POLYPLUG_BUNDLE(Init);
