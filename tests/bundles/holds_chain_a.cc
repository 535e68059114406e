// holds_chain_a: depends on chain.a@1 with needs_reinit_on_dep_reload, and keeps what its
// init looked up: chain.a's function 0, a pointer into chain_a's image. That is what the
// opt-in is for: when chain_a reloads, this bundle's init runs again and looks it up anew.
// Until then (its own PREPARING, in the cascade) its old code may still call the old
// chain_a, so the runtime must keep that image mapped until the cascade has ended.
//
// fn0: calls the kept chain.a function 0 and writes the int32 it wrote; -1 when init found
//      no chain.a.
// fn1: writes the address of the kept function (uint64; 0 when none), so that a test can
//      check that the image holding it is still mapped before calling it.
#include <cstdint>

#include "polyplug/guest.hpp"

namespace {

namespace guest = polyplug::guest;

PolyplugNativeFunction kept_chain_a_fn0 = nullptr;  // set by init

void Init(guest::Registrar& registrar) {
  const PolyplugGuestContractInterface* chain_a = registrar.host().Lookup("chain.a", 1);
  kept_chain_a_fn0 =
      chain_a != nullptr && chain_a->function_count > 0 ? chain_a->functions[0] : nullptr;
  registrar.Contract("holds.chain_a", {1, 0, 0})
      .Function(0,
                [](const guest::NativeCall<void>&) {
                  if (kept_chain_a_fn0 == nullptr) return int32_t{-1};
                  int32_t out = -1;
                  PolyplugAbiError err{POLYPLUG_ABI_OK, {nullptr, 0}};
                  kept_chain_a_fn0(PolyplugGuestContractInstance{nullptr, 0}, nullptr, &out, &err);
                  return err.code == POLYPLUG_ABI_OK ? out : int32_t{-2};
                })
      .Function(1, [](const guest::NativeCall<void>&) {
        return static_cast<uint64_t>(reinterpret_cast<uintptr_t>(kept_chain_a_fn0));
      });
}

}  // namespace

POLYPLUG_BUNDLE(Init);
