// absl_flag: test.absl_flag@1 defines the Abseil flag --bundle_knob, which is registered in
// the process-wide flag registry at load and never removed, so the loader refuses the
// bundle before dlopen; loaded anyway, its second load exits the process.
//
// fn0: writes the flag's value (1).
// invoke "knob" -> the flag's value in decimal.
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/flags/flag.h"
#include "polyplug/guest.hpp"

// At namespace scope, as Abseil requires.
ABSL_FLAG(int, bundle_knob, 1, "a knob only the absl_flag test bundle reads");

namespace {

namespace guest = polyplug::guest;

void Init(guest::Registrar& registrar) {
  registrar.Contract("test.absl_flag", {1, 0, 0})
      .Function(
          0,
          [](const guest::NativeCall<void>&) { return int32_t{absl::GetFlag(FLAGS_bundle_knob)}; })
      .Method("knob",
              [](std::string_view) { return std::to_string(absl::GetFlag(FLAGS_bundle_knob)); });
}

}  // namespace

POLYPLUG_BUNDLE(Init);
