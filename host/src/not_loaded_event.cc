#include "host/src/not_loaded_event.h"

#include <utility>

#include "polyplug/core/error.h"
#include "polyplug/core/ids.h"

namespace polyplug::host {

core::PhaseEvent NotLoadedEvent(std::string name, const absl::Status& status, std::string message) {
  core::PhaseEvent event;
  event.phase = core::Phase::kFailed;
  event.bundle_id = core::BundleId(name);
  event.bundle_name = std::move(name);
  event.reason = core::ReasonOf(status);
  if (event.reason == core::ErrorReason::kUnspecified) event.reason = core::ErrorReason::kInternal;
  event.message = std::move(message);
  return event;
}

}  // namespace polyplug::host
