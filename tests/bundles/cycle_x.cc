// cycle_x: provides cycle.x@1 and depends on cycle.y@1 (and cycle_y the other way
// round), so discovery must report a dependency cycle. fn0 writes int32 1.
#include <cstdint>

#include "polyplug/guest.hpp"

namespace {

namespace guest = polyplug::guest;

void Init(guest::Registrar& registrar) {
  registrar.Contract("cycle.x", {1, 0, 0}).Function(0, [](const guest::NativeCall<void>&) {
    return int32_t{1};
  });
}

}  // namespace

POLYPLUG_BUNDLE(Init);
