// stateless: test.stateless@1 keeps no per-instance state (create_instance yields
// data == NULL). fn0 writes int32 42.
#include <cstdint>

#include "polyplug/guest.hpp"

namespace {

namespace guest = polyplug::guest;

void Init(guest::Registrar& registrar) {
  registrar.Contract("test.stateless", {1, 0, 0}).Function(0, [](const guest::NativeCall<void>&) {
    return int32_t{42};
  });
}

}  // namespace

POLYPLUG_BUNDLE(Init);
