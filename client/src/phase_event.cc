#include "polyplug/client/phase_event.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "wire/wire.h"

namespace polyplug::client {
namespace v1 = host::v1;

absl::string_view ResyncCauseName(ResyncCause cause) {
  switch (cause) {
    case ResyncCause::kInitial:
      return "INITIAL";
    case ResyncCause::kHostRestarted:
      return "HOST_RESTARTED";
    case ResyncCause::kFellBehind:
      return "FELL_BEHIND";
  }
  return "UNKNOWN";
}

std::string Version::ToString() const { return absl::StrCat(major, ".", minor, ".", patch); }

std::string ReasonToken(v1::FailureReason reason) { return wire::ReasonToken(reason); }

namespace {

Phase PhaseFromProto(v1::Phase phase) {
  switch (phase) {
    case v1::PHASE_PREPARING:
      return Phase::kPreparing;
    case v1::PHASE_RELOADED:
      return Phase::kReloaded;
    case v1::PHASE_FAILED:
      return Phase::kFailed;
    case v1::PHASE_UNLOADING:
      return Phase::kUnloading;
    default:
      return Phase::kLoaded;
  }
}

v1::Phase PhaseToProto(Phase phase) {
  switch (phase) {
    case Phase::kPreparing:
      return v1::PHASE_PREPARING;
    case Phase::kReloaded:
      return v1::PHASE_RELOADED;
    case Phase::kFailed:
      return v1::PHASE_FAILED;
    case Phase::kUnloading:
      return v1::PHASE_UNLOADING;
    case Phase::kLoaded:
      return v1::PHASE_LOADED;
  }
  return v1::PHASE_UNSPECIFIED;
}

}  // namespace

absl::string_view PhaseName(Phase phase) {
  // The proto's names without their prefix: PHASE_RELOADED -> "RELOADED".
  return absl::StripPrefix(v1::Phase_Name(PhaseToProto(phase)), "PHASE_");
}

PhaseEvent PhaseEventFromProto(const v1::ReloadPhaseEvent& in) {
  PhaseEvent out;
  out.host_epoch = in.host_epoch();
  out.seq = in.seq();
  out.phase = PhaseFromProto(in.phase());
  out.bundle_id = in.bundle_id();
  out.bundle_name = in.bundle_name();
  out.bundle_version = {in.bundle_version().major(), in.bundle_version().minor(),
                        in.bundle_version().patch()};
  out.reload_id = in.reload_id();
  out.parent_reload_id = in.parent_reload_id();
  out.root_reload_id = in.root_reload_id();
  out.timestamp_unix_nanos = absl::ToUnixNanos(wire::FromProto(in.time()));
  out.reason = in.reason();
  out.message = in.message();
  out.registry_revision = in.registry_revision();
  out.live_instances = in.live_instances();
  out.artifact_sha256 = in.artifact_sha256();
  return out;
}

v1::ReloadPhaseEvent PhaseEventToProto(const PhaseEvent& in) {
  v1::ReloadPhaseEvent out;
  out.set_host_epoch(in.host_epoch);
  out.set_seq(in.seq);
  out.set_kind(v1::EVENT_KIND_PHASE);
  out.set_phase(PhaseToProto(in.phase));
  out.set_bundle_id(in.bundle_id);
  out.set_bundle_name(in.bundle_name);
  out.mutable_bundle_version()->set_major(in.bundle_version.major);
  out.mutable_bundle_version()->set_minor(in.bundle_version.minor);
  out.mutable_bundle_version()->set_patch(in.bundle_version.patch);
  out.set_reload_id(in.reload_id);
  out.set_parent_reload_id(in.parent_reload_id);
  out.set_root_reload_id(in.root_reload_id);
  *out.mutable_time() = wire::ToProto(absl::FromUnixNanos(in.timestamp_unix_nanos));
  out.set_reason(in.reason);
  out.set_message(in.message);
  out.set_registry_revision(in.registry_revision);
  out.set_live_instances(in.live_instances);
  out.set_artifact_sha256(in.artifact_sha256);
  return out;
}

}  // namespace polyplug::client
