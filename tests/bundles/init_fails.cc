// init_fails: registers test.init_fails@1, then fails init with GENERIC, so the load must
// fail with INIT_FAILED and publish nothing of what was staged.
#include <cstdint>

#include "polyplug/guest.hpp"

namespace {

namespace guest = polyplug::guest;

void Init(guest::Registrar& registrar) {
  // Register() stages the contract with the host right away, before the failure.
  registrar.Contract("test.init_fails", {1, 0, 0})
      .Function(0, [](const guest::NativeCall<void>&) { return int32_t{1}; })
      .Register();
  throw guest::Error(POLYPLUG_ABI_GENERIC, "init_fails: refused on purpose");
}

}  // namespace

POLYPLUG_BUNDLE(Init);
