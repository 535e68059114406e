// shouter: example.shouter@1, a bundle that calls another bundle.
//
// invoke "shout": finds example.greeter@1 through the host, creates an instance, invokes
// "greet" with the request and returns the response upper-cased.
//
// The manifest declares example.greeter@1 as a dependency (DEPENDS) and sets
// needs_reinit_on_dep_reload, so reloading greeter reloads shouter too. shouter keeps
// nothing of greeter's between calls: each call looks greeter up, uses one instance and
// destroys it before returning. A greeter reload can therefore never leave shouter with
// a dangling interface pointer or an instance of code that is gone.
#include <algorithm>
#include <cctype>
#include <string>
#include <string_view>

#include "polyplug/guest.hpp"

namespace {

namespace guest = polyplug::guest;

std::string Shout(std::string_view request) {
  const guest::Host host = guest::host();
  const PolyplugGuestContractInterface* greeter = host.Lookup("example.greeter", 1);
  if (greeter == nullptr) {
    throw guest::Error(POLYPLUG_ABI_NOT_FOUND, "shouter: example.greeter@1 is not loaded");
  }
  const guest::Instance instance = host.Create(*greeter);
  std::string text = instance.Invoke("greet", request);
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return text;
}

void Init(guest::Registrar& registrar) {
  registrar.Contract("example.shouter", {1, 0, 0}).Method("shout", [](std::string_view request) {
    return Shout(request);
  });
}

}  // namespace

POLYPLUG_BUNDLE(Init);
