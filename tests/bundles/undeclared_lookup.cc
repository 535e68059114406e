// undeclared_lookup: looks up test.counter@1 during init without declaring it as a
// dependency, so the runtime must hand back a null handle even when counter is loaded.
// fn0 writes int32 1 if the lookup found it (a leak through the enforcement window),
// else 0.
#include <cstdint>

#include "polyplug/guest.hpp"

namespace {

namespace guest = polyplug::guest;

// Set by init, read by fn0; init finishes before any function can be called.
bool found_counter_during_init = false;

void Init(guest::Registrar& registrar) {
  found_counter_during_init = !guest::Host::IsNull(registrar.host().Find("test.counter", 1));
  registrar.Contract("test.undeclared_lookup", {1, 0, 0})
      .Function(0, [](const guest::NativeCall<void>&) {
        return int32_t{found_counter_during_init ? 1 : 0};
      });
}

}  // namespace

POLYPLUG_BUNDLE(Init);
