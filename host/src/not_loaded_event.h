// NotLoadedEvent: the FAILED event the host journals for a bundle it could not load where no
// RPC asked for the load (a directory --watch found, a bundle a supervised restart left
// out), so that subscribers learn of it and not only the log.
#ifndef POLYPLUG_HOST_SRC_NOT_LOADED_EVENT_H_
#define POLYPLUG_HOST_SRC_NOT_LOADED_EVENT_H_

#include <string>

#include "absl/status/status.h"
#include "polyplug/core/phase_event.h"

namespace polyplug::host {

// FAILED for bundle `name` with the reason `status` carries (INTERNAL when none), and
// `message`. No reload made it: its reload ids are 0.
core::PhaseEvent NotLoadedEvent(std::string name, const absl::Status& status, std::string message);

}  // namespace polyplug::host

#endif  // POLYPLUG_HOST_SRC_NOT_LOADED_EVENT_H_
