// init_throws: init throws a plain C++ exception. guest.hpp must turn it into
// POLYPLUG_ABI_PANIC carrying the exception's text instead of letting it unwind into the
// host.
#include <cstdint>
#include <stdexcept>

#include "polyplug/guest.hpp"

namespace {

namespace guest = polyplug::guest;

void Init(guest::Registrar& registrar) {
  registrar.Contract("test.init_throws", {1, 0, 0}).Function(0, [](const guest::NativeCall<void>&) {
    return int32_t{1};
  });
  throw std::runtime_error("init_throws: thrown on purpose");
}

}  // namespace

POLYPLUG_BUNDLE(Init);
