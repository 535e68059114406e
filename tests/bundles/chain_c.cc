// chain_c: depends on chain.b@1 and sets needs_reinit_on_dep_reload, so reloading chain_b
// cascades into it. fn0 writes int32 1 if chain.b@1 was visible during init, else 0;
// invoke "whoami" -> "chain_c".
#include <cstdint>
#include <string>
#include <string_view>

#include "polyplug/guest.hpp"

namespace {

namespace guest = polyplug::guest;

// Set by init, read by fn0. Each load starts from a fresh image, so this always tells
// what the latest init saw. Init finishes before any function can be called, so no
// synchronisation is needed.
bool found_chain_b_during_init = false;

void Init(guest::Registrar& registrar) {
  found_chain_b_during_init = !guest::Host::IsNull(registrar.host().Find("chain.b", 1));
  registrar.Contract("chain.c", {1, 0, 0})
      .Function(
          0,
          [](const guest::NativeCall<void>&) { return int32_t{found_chain_b_during_init ? 1 : 0}; })
      .Method("whoami", [](std::string_view) { return std::string("chain_c"); });
}

}  // namespace

POLYPLUG_BUNDLE(Init);
