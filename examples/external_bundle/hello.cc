// The smallest useful bundle: one contract with one remotely callable method.
#include <string>
#include <string_view>

#include "polyplug/guest.hpp"

namespace {

void Init(polyplug::guest::Registrar& registrar) {
  registrar.Contract("example.hello", {1, 0, 0}).Method("hello", [](std::string_view who) {
    return "hello, " + std::string(who.empty() ? "world" : who);
  });
}

}  // namespace

POLYPLUG_BUNDLE(Init);
