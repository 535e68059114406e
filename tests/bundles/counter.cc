// counter_v1 / counter_v2: the reload workhorse, contract test.counter@1.
//
// One source, two builds. POLYPLUG_COUNTER_VERSION (1 or 2) sets what get_version and
// "version" report and the contract version (1.0.0 / 1.1.0). Both builds share the
// bundle name and library name, so a test can copy v2's files over a loaded v1.
//
// fn0 get_version: writes int32_t POLYPLUG_COUNTER_VERSION to *out.
// fn1 increment:   increments the instance's int64_t counter and writes the new value
//                  (int64_t) to *out; INVALID_ARGUMENT on a stateless instance.
// invoke: "version" -> "v1"/"v2", "echo" -> the request, "count" -> increments and returns
//         the counter in decimal, "fail" -> code 257 "fail: failed on purpose",
//         "sleep" -> sleeps the request's milliseconds, then answers "v1"/"v2",
//         "block" -> the request names a directory holding the FIFOs `started` and
//         `release`: writes one byte to `started` (so a test knows the call runs), waits
//         for end of file on `release`, then answers "v1"/"v2".
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <thread>

#include "polyplug/guest.hpp"

#if !defined(POLYPLUG_COUNTER_VERSION) || \
    (POLYPLUG_COUNTER_VERSION != 1 && POLYPLUG_COUNTER_VERSION != 2)
#error "compile with -DPOLYPLUG_COUNTER_VERSION=1 or 2"
#endif

namespace {

namespace guest = polyplug::guest;
using CounterCall = guest::NativeCall<int64_t>;

constexpr int32_t kVersion = POLYPLUG_COUNTER_VERSION;
constexpr PolyplugVersion kContractVersion{1, kVersion == 1 ? 0u : 1u, 0};
constexpr PolyplugAbiErrorCode kFailedOnPurpose = POLYPLUG_ABI_FIRST_BUNDLE_DEFINED + 1;

// The host may call one instance from several threads. atomic_ref keeps the instance data
// a plain int64_t (as the catalogue specifies) while making the increment atomic.
int64_t Increment(int64_t& counter) { return std::atomic_ref<int64_t>(counter).fetch_add(1) + 1; }

int64_t& RequireCounter(int64_t* counter) {
  if (counter == nullptr) {
    throw guest::Error(POLYPLUG_ABI_INVALID_ARGUMENT,
                       "test.counter@1: a stateless instance has no counter");
  }
  return *counter;
}

void Init(guest::Registrar& registrar) {
  registrar.Contract<int64_t>("test.counter", kContractVersion)
      .Function(0, [](const CounterCall&) { return kVersion; })
      .Function(1, [](const CounterCall& call) { return Increment(RequireCounter(call.state())); })
      .Method("version", [](std::string_view) { return std::string(kVersion == 1 ? "v1" : "v2"); })
      .Method("echo", [](std::string_view request) { return std::string(request); })
      .Method("count",
              [](int64_t* counter, std::string_view) {
                return std::to_string(Increment(RequireCounter(counter)));
              })
      .Method("fail",
              [](std::string_view) -> std::string {
                throw guest::Error(kFailedOnPurpose, "fail: failed on purpose");
              })
      .Method("sleep",
              [](std::string_view request) {
                std::this_thread::sleep_for(
                    std::chrono::milliseconds(std::stoll(std::string(request))));
                return std::string(kVersion == 1 ? "v1" : "v2");
              })
      .Method("block", [](std::string_view request) {
        const std::string dir(request);
        // Opening a FIFO blocks until the other end opens it: the test's open of
        // `started` returns once this call runs, and this call goes on once the test
        // opened and closed `release`.
        if (FILE* started = std::fopen((dir + "/started").c_str(), "w")) {
          std::fputc('1', started);
          std::fclose(started);
        }
        if (FILE* release = std::fopen((dir + "/release").c_str(), "r")) {
          while (std::fgetc(release) != EOF) {
          }
          std::fclose(release);
        }
        return std::string(kVersion == 1 ? "v1" : "v2");
      });
}

}  // namespace

POLYPLUG_BUNDLE(Init);
