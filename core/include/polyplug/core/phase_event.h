// PhaseEvent: one reload/load/unload phase, as journaled and as delivered to listeners.
#ifndef POLYPLUG_CORE_PHASE_EVENT_H_
#define POLYPLUG_CORE_PHASE_EVENT_H_

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "polyplug/core/error.h"
#include "polyplug/core/version.h"

namespace polyplug::core {

enum class Phase : int {
  kPreparing = 0,  // a reload is about to swap: destroy instances of this bundle now
  kReloaded = 1,   // the new version is live (cascade of dependents included)
  kFailed = 2,     // the reload failed; the previous version is still live
  kUnloading = 3,  // the bundle is about to be unloaded
  kLoaded = 4,     // the bundle was loaded and its contracts are published
};

absl::string_view PhaseName(Phase phase);  // "PREPARING", ...

struct PhaseEvent {
  uint64_t host_epoch = 0;  // random per runtime start
  uint64_t seq = 0;         // monotonic within an epoch, starting at 1
  Phase phase = Phase::kPreparing;
  uint64_t bundle_id = 0;
  std::string bundle_name;
  Version bundle_version;
  // Ties the phases of one bundle operation together. A cascaded reload has its own
  // reload_id; parent_reload_id names the reload that triggered it (0 for a primary) and
  // root_reload_id the primary of the whole cascade (== reload_id for a primary).
  uint64_t reload_id = 0;
  uint64_t parent_reload_id = 0;
  uint64_t root_reload_id = 0;
  int64_t timestamp_unix_nanos = 0;
  ErrorReason reason = ErrorReason::kUnspecified;  // set for kFailed
  std::string message;                             // failure message, or a warning for other phases
  uint64_t registry_revision = 0;  // the registry revision when the event was recorded
  // kPreparing/kUnloading: counted instances alive when the phase was announced.
  uint64_t live_instances = 0;
  // SHA-256 (lowercase hex) of the artifact: the one now live on kLoaded/kReloaded, the
  // one that failed on kFailed. Empty when the runtime does not hash artifacts
  // (RuntimeOptions::hash_artifacts) or did not get as far as reading it.
  std::string artifact_sha256;
  // kLoaded/kReloaded: BundleInfo::signing_key of the version now live (lowercase hex);
  // empty when no signature was verified, and on the other phases.
  std::string signing_key;

  bool IsTerminal() const { return phase == Phase::kReloaded || phase == Phase::kFailed; }
};

}  // namespace polyplug::core

#endif  // POLYPLUG_CORE_PHASE_EVENT_H_
