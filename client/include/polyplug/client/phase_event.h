// PhaseEvent: one reload/load/unload phase as a remote subscriber receives it. Carries the
// same fields as the in-process runtime's PhaseEvent (core/phase_event.h), so a handler
// written for on_reload reads the same values from a remote host.
#ifndef POLYPLUG_CLIENT_PHASE_EVENT_H_
#define POLYPLUG_CLIENT_PHASE_EVENT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "polyplug/host/v1/host.pb.h"

namespace polyplug::client {

// Same order and values as the runtime's core::Phase.
enum class Phase : int {
  // A reload of the bundle began. In process this is the moment to drop its instances; a
  // remote subscriber learns of it after the fact: the host does not wait for remote
  // handlers, and had already destroyed the bundle's remote instances (after draining the
  // calls in flight) when it sent the event. A remote handler cannot hold the swap back; it
  // stops calling the old instances and forgets them (see PhaseHandlers::on_preparing).
  kPreparing = 0,
  kReloaded = 1,   // the new version is live (the cascade of dependents included)
  kFailed = 2,     // the reload failed; the previous version is still live
  kUnloading = 3,  // the bundle is about to be unloaded; its handles go stale
  kLoaded = 4,     // the bundle was loaded and its contracts are published
};

// "PREPARING", "RELOADED", "FAILED", "UNLOADING", "LOADED".
absl::string_view PhaseName(Phase phase);

struct Version {
  uint32_t major = 0;
  uint32_t minor = 0;
  uint32_t patch = 0;

  std::string ToString() const;  // "1.2.3"
  friend bool operator==(const Version&, const Version&) = default;
};

struct PhaseEvent {
  uint64_t host_epoch = 0;  // random per host process start
  uint64_t seq = 0;         // monotonic within an epoch, starting at 1
  Phase phase = Phase::kPreparing;
  uint64_t bundle_id = 0;
  std::string bundle_name;
  Version bundle_version;  // the new version on kReloaded
  // Each bundle operation has its own reload_id; a cascaded reload names the reload that
  // triggered it (parent) and the primary of the cascade (root, == reload_id for a primary).
  uint64_t reload_id = 0;
  uint64_t parent_reload_id = 0;
  uint64_t root_reload_id = 0;
  int64_t timestamp_unix_nanos = 0;
  host::v1::FailureReason reason = host::v1::FAILURE_REASON_UNSPECIFIED;  // set for kFailed
  std::string message;  // the failure, or a warning for other phases
  uint64_t registry_revision = 0;
  uint64_t live_instances = 0;  // kPreparing/kUnloading: counted instances still alive
  // SHA-256 (lowercase hex) of the artifact now live (kLoaded, kReloaded) or that failed.
  std::string artifact_sha256;
  // Not an event of the host's journal: the client made it up after a resync, for a
  // transition its handlers missed (the way a client-go informer replays a relist), by
  // comparing the bundles it last reported (snapshots and events delivered) with the new
  // snapshot. kLoaded: a bundle now loaded that was not; kReloaded: one now at another
  // version (or, when the host hashes artifacts, another artifact); kUnloading: one gone,
  // with the version it had. host_epoch, seq and registry_revision are the new snapshot's;
  // reload ids are 0 and timestamp_unix_nanos is when the client made it. An unload and
  // load, or a reload to the same version and artifact, while the subscription was behind
  // leaves no trace in a snapshot and makes no synthetic event. Never set by
  // PhaseEventFromProto; PhaseEventToProto drops it (the wire has no such field).
  bool synthetic = false;

  bool IsTerminal() const { return phase == Phase::kReloaded || phase == Phase::kFailed; }
  friend bool operator==(const PhaseEvent&, const PhaseEvent&) = default;
};

// A position in a host's event stream: events after `seq` of epoch `host_epoch`.
struct Cursor {
  uint64_t host_epoch = 0;
  uint64_t seq = 0;
  friend bool operator==(const Cursor&, const Cursor&) = default;
};

// The subscription saw a new host epoch: the host process restarted, its seq numbers
// started over, and every handle of the old epoch is void. A Resynced follows.
struct HostRestarted {
  uint64_t previous_epoch = 0;
  uint64_t epoch = 0;
};

enum class ResyncCause : int {
  kInitial = 0,        // the first connection
  kHostRestarted = 1,  // after HostRestarted
  kFellBehind = 2,     // events were lost to the host's bounded journal (reconnect too late)
};

absl::string_view ResyncCauseName(ResyncCause cause);  // "INITIAL", ...

// One loaded bundle as of a snapshot.
struct BundleState {
  uint64_t id = 0;
  std::string name;
  Version version;
  std::string artifact_sha256;  // of the artifact loaded
  friend bool operator==(const BundleState&, const BundleState&) = default;
};

// The full state the subscription is now in sync with: every loaded bundle (those matching
// the subscription's bundle filter) as of `seq`. Events after `seq` follow.
struct Resynced {
  ResyncCause cause = ResyncCause::kInitial;
  uint64_t host_epoch = 0;
  uint64_t seq = 0;
  uint64_t registry_revision = 0;
  std::vector<BundleState> bundles;  // sorted by name
  // Under polyplug-host --supervise, the failures that are part of the host's state, each
  // as its FAILED event: the bundle versions that crashed the host and are refused (reason
  // CRASHED), oldest first; then the bundles the last restart could not bring back (e.g.
  // UNSATISFIED_DEPENDENCY when their provider is quarantined), until they load again.
  std::vector<PhaseEvent> quarantined;
};

// The token of a reason without its prefix: FAILURE_REASON_MANIFEST_INVALID ->
// "MANIFEST_INVALID"; "UNSPECIFIED" for none.
std::string ReasonToken(host::v1::FailureReason reason);

// Conversions between the wire form and this one.
PhaseEvent PhaseEventFromProto(const host::v1::ReloadPhaseEvent& event);
host::v1::ReloadPhaseEvent PhaseEventToProto(const PhaseEvent& event);

}  // namespace polyplug::client

#endif  // POLYPLUG_CLIENT_PHASE_EVENT_H_
