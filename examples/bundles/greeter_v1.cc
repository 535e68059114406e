// greeter_v1: the first version of the example.greeter@1 contract (contract version 1.0.0).
//
// fn0 (get_version): writes int32_t 1 to *out.
// invoke "greet": the request is a name (empty means "world"); the response is
//   "Hello, <name>! (greeter v1)".
//
// greeter_v2.cc is the same bundle (same NAME and LIBRARY_NAME) one version later. Copy
// its build output over this one and reload to watch a hot swap.
#include <cstdint>
#include <string>
#include <string_view>

#include "polyplug/guest.hpp"

namespace {

namespace guest = polyplug::guest;

std::string Greet(std::string_view name) {
  if (name.empty()) name = "world";
  return "Hello, " + std::string(name) + "! (greeter v1)";
}

void Init(guest::Registrar& registrar) {
  // Contract<void>: instances are stateless (data == NULL), greeting needs no state.
  registrar.Contract("example.greeter", {1, 0, 0})
      .Function(0, [](const guest::NativeCall<void>&) { return int32_t{1}; })
      .Method("greet", [](std::string_view request) { return Greet(request); });
}

}  // namespace

POLYPLUG_BUNDLE(Init);
