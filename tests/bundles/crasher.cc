// crasher_v1 / crasher_v2 / crasher_init_segv / crasher_init_abort: a bundle that kills the
// process it runs in, for polyplug-host --supervise. One source, four builds sharing the
// bundle name "crasher", the library name and the contract test.crasher@1, so a test can
// copy one build's files over another's.
//
// POLYPLUG_CRASHER_BUILD: 1 or 2, healthy builds that answer "version" with "v1"/"v2"
// (different bytes, so a rebuild is a new version to the host); 3, polyplug_init dies of
// SIGSEGV; 4, polyplug_init calls abort().
// invoke: "version" -> "v1"/"v2"; "segv" -> SIGSEGV on the calling thread; "abort" ->
//         abort(); "segv_on_thread" -> a thread of the bundle's own dies of SIGSEGV while
//         the call waits for it.
#include <cstdlib>
#include <string>
#include <string_view>
#include <thread>

#include "polyplug/guest.hpp"

#if !defined(POLYPLUG_CRASHER_BUILD) || POLYPLUG_CRASHER_BUILD < 1 || POLYPLUG_CRASHER_BUILD > 4
#error "compile with -DPOLYPLUG_CRASHER_BUILD=1, 2, 3 or 4"
#endif

namespace {

namespace guest = polyplug::guest;

// A volatile store through a null pointer the compiler cannot see (a volatile pointer),
// left out of the sanitizers, which would otherwise report it and exit instead of letting
// it fault.
__attribute__((noinline, no_sanitize("address", "undefined"))) void Segfault() {
  volatile int* volatile nowhere = nullptr;
  *nowhere = 1;
}

std::string Version() { return POLYPLUG_CRASHER_BUILD == 2 ? "v2" : "v1"; }

void Init(guest::Registrar& registrar) {
  if (POLYPLUG_CRASHER_BUILD == 3) Segfault();
  if (POLYPLUG_CRASHER_BUILD == 4) std::abort();
  registrar.Contract("test.crasher", {1, 0, 0})
      .Method("version", [](std::string_view) { return Version(); })
      .Method("segv",
              [](std::string_view) {
                Segfault();
                return Version();
              })
      .Method("abort", [](std::string_view) -> std::string { std::abort(); })
      .Method("segv_on_thread", [](std::string_view) {
        std::thread(Segfault).join();
        return Version();
      });
}

}  // namespace

POLYPLUG_BUNDLE(Init);
