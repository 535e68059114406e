// gnu_unique: reproduces the STB_GNU_UNIQUE trap. It is built with KEEP_GNU_UNIQUE (no
// -fno-gnu-unique), so the static local below becomes a GNU unique symbol. That makes
// dlclose a no-op: the image stays mapped, and the runtime must warn about it.
//
// fn0 increments a call counter held in that static and writes it (int32). Because the
// image is never unmapped, a reload binds to the same counter and keeps counting.
#include <atomic>
#include <cstdint>

#include "polyplug/guest.hpp"

namespace gnu_unique_bundle {

// Inline with external linkage and default visibility. GCC gives the static local of
// such a function vague linkage and marks it STB_GNU_UNIQUE. A hidden or internal one
// would not get the mark.
__attribute__((visibility("default"))) inline std::atomic<int32_t>& CallCount() {
  static std::atomic<int32_t> count{0};
  return count;
}

}  // namespace gnu_unique_bundle

namespace {

namespace guest = polyplug::guest;

void Init(guest::Registrar& registrar) {
  registrar.Contract("test.gnu_unique", {1, 0, 0}).Function(0, [](const guest::NativeCall<void>&) {
    return int32_t{gnu_unique_bundle::CallCount().fetch_add(1) + 1};
  });
}

}  // namespace

POLYPLUG_BUNDLE(Init);
