// provides_extra: the manifest provides test.declared@1 but init also registers
// test.undeclared@1, so the load must fail with PROVIDES_MISMATCH.
#include <cstdint>

#include "polyplug/guest.hpp"

namespace {

namespace guest = polyplug::guest;

void Init(guest::Registrar& registrar) {
  registrar.Contract("test.declared", {1, 0, 0}).Function(0, [](const guest::NativeCall<void>&) {
    return int32_t{1};
  });
  registrar.Contract("test.undeclared", {1, 0, 0}).Function(0, [](const guest::NativeCall<void>&) {
    return int32_t{1};
  });
}

}  // namespace

POLYPLUG_BUNDLE(Init);
