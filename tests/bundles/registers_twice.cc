// registers_twice: init declares test.twice@1 twice (versions 1.0.0 and 1.1.0), so the second
// register_guest_contract must be refused with DUPLICATE_PROVIDER and the load must fail
// publishing nothing. fn0 writes int32 1.
#include <cstdint>

#include "polyplug/guest.hpp"

namespace {

namespace guest = polyplug::guest;

void Init(guest::Registrar& registrar) {
  registrar.Contract("test.twice", {1, 0, 0}).Function(0, [](const guest::NativeCall<void>&) {
    return int32_t{1};
  });
  registrar.Contract("test.twice", {1, 1, 0}).Function(0, [](const guest::NativeCall<void>&) {
    return int32_t{1};
  });
}

}  // namespace

POLYPLUG_BUNDLE(Init);
