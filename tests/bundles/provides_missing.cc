// provides_missing: the manifest provides test.declared_a@1 and test.declared_b@1 but init
// registers only declared_a, so the load must fail with PROVIDES_MISMATCH.
#include <cstdint>

#include "polyplug/guest.hpp"

namespace {

namespace guest = polyplug::guest;

void Init(guest::Registrar& registrar) {
  registrar.Contract("test.declared_a", {1, 0, 0}).Function(0, [](const guest::NativeCall<void>&) {
    return int32_t{1};
  });
}

}  // namespace

POLYPLUG_BUNDLE(Init);
