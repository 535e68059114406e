#include "host/src/status_mapping.h"

#include "absl/strings/str_cat.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "polyplug/core/error.h"
#include "wire/wire.h"

namespace polyplug::host {

std::string ReasonTokenIn(const grpc::Status& status) {
  const std::string& message = status.error_message();
  const size_t end = message.find(']');
  if (message.empty() || message[0] != '[' || end == std::string::npos) return "";
  return message.substr(1, end - 1);
}

grpc::Status ToGrpcStatus(const absl::Status& status, grpc::CallbackServerContext* context,
                          const std::map<std::string, std::string>& metadata) {
  if (status.ok()) return grpc::Status::OK;
  const core::ErrorReason reason = core::ReasonOf(status);
  const std::string token(core::ReasonToken(
      reason == core::ErrorReason::kUnspecified ? core::ErrorReason::kInternal : reason));
  if (context != nullptr) context->AddTrailingMetadata(wire::kReasonTrailer, token);
  std::string message = absl::StrCat("[", token, "] ", std::string(status.message()));
  // The same reason as a google.rpc.ErrorInfo detail, for clients that read details.
  google::rpc::ErrorInfo info;
  info.set_reason(token);
  info.set_domain("polyplug.host");
  for (const auto& [key, value] : metadata) (*info.mutable_metadata())[key] = value;
  google::rpc::Status details;
  details.set_code(static_cast<int32_t>(status.code()));  // absl and gRPC share the codes
  details.set_message(message);
  details.add_details()->PackFrom(info);
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), message,
                      details.SerializeAsString());
}

v1::FailureReason ToProtoReason(core::ErrorReason reason) {
  // One case per reason and no default: a reason added to the core and not here does not
  // compile (-Wswitch), and reason_mapping_test walks the proto enum for the other way.
  switch (reason) {
    case core::ErrorReason::kUnspecified:
      return v1::FAILURE_REASON_UNSPECIFIED;
    case core::ErrorReason::kManifestInvalid:
      return v1::FAILURE_REASON_MANIFEST_INVALID;
    case core::ErrorReason::kBundleTampered:
      return v1::FAILURE_REASON_BUNDLE_TAMPERED;
    case core::ErrorReason::kArtifactMissing:
      return v1::FAILURE_REASON_ARTIFACT_MISSING;
    case core::ErrorReason::kArtifactNotLoadable:
      return v1::FAILURE_REASON_ARTIFACT_NOT_LOADABLE;
    case core::ErrorReason::kArtifactPathEscape:
      return v1::FAILURE_REASON_ARTIFACT_PATH_ESCAPE;
    case core::ErrorReason::kAbiMismatch:
      return v1::FAILURE_REASON_ABI_MISMATCH;
    case core::ErrorReason::kInitSymbolMissing:
      return v1::FAILURE_REASON_INIT_SYMBOL_MISSING;
    case core::ErrorReason::kInitFailed:
      return v1::FAILURE_REASON_INIT_FAILED;
    case core::ErrorReason::kProvidesMismatch:
      return v1::FAILURE_REASON_PROVIDES_MISMATCH;
    case core::ErrorReason::kSwapFailed:
      return v1::FAILURE_REASON_SWAP_FAILED;
    case core::ErrorReason::kHotReloadDisabled:
      return v1::FAILURE_REASON_HOT_RELOAD_DISABLED;
    case core::ErrorReason::kDuplicateProvider:
      return v1::FAILURE_REASON_DUPLICATE_PROVIDER;
    case core::ErrorReason::kContractIdCollision:
      return v1::FAILURE_REASON_CONTRACT_ID_COLLISION;
    case core::ErrorReason::kBundleNotFound:
      return v1::FAILURE_REASON_BUNDLE_NOT_FOUND;
    case core::ErrorReason::kBundleAlreadyLoaded:
      return v1::FAILURE_REASON_BUNDLE_ALREADY_LOADED;
    case core::ErrorReason::kDependencyInUse:
      return v1::FAILURE_REASON_DEPENDENCY_IN_USE;
    case core::ErrorReason::kDependencyCycle:
      return v1::FAILURE_REASON_DEPENDENCY_CYCLE;
    case core::ErrorReason::kUnsatisfiedDependency:
      return v1::FAILURE_REASON_UNSATISFIED_DEPENDENCY;
    case core::ErrorReason::kContractNotFound:
      return v1::FAILURE_REASON_CONTRACT_NOT_FOUND;
    case core::ErrorReason::kInvalidHandle:
      return v1::FAILURE_REASON_INVALID_HANDLE;
    case core::ErrorReason::kStaleHandle:
      return v1::FAILURE_REASON_STALE_HANDLE;
    case core::ErrorReason::kNoLoader:
      return v1::FAILURE_REASON_NO_LOADER;
    case core::ErrorReason::kInvalidArgument:
      return v1::FAILURE_REASON_INVALID_ARGUMENT;
    case core::ErrorReason::kPermissionDenied:
      return v1::FAILURE_REASON_PERMISSION_DENIED;
    case core::ErrorReason::kReentrantCall:
      return v1::FAILURE_REASON_REENTRANT_CALL;
    case core::ErrorReason::kInternal:
      return v1::FAILURE_REASON_INTERNAL;
    case core::ErrorReason::kCursorOutOfRange:
      return v1::FAILURE_REASON_CURSOR_OUT_OF_RANGE;
    case core::ErrorReason::kInstanceInvalidatedByReload:
      return v1::FAILURE_REASON_INSTANCE_INVALIDATED_BY_RELOAD;
    case core::ErrorReason::kInstanceNotFound:
      return v1::FAILURE_REASON_INSTANCE_NOT_FOUND;
    case core::ErrorReason::kNotInvocable:
      return v1::FAILURE_REASON_NOT_INVOCABLE;
    case core::ErrorReason::kMethodNotFound:
      return v1::FAILURE_REASON_METHOD_NOT_FOUND;
    case core::ErrorReason::kCallFailed:
      return v1::FAILURE_REASON_CALL_FAILED;
    case core::ErrorReason::kLeaseExpired:
      return v1::FAILURE_REASON_LEASE_EXPIRED;
    case core::ErrorReason::kSubscriberFellBehind:
      return v1::FAILURE_REASON_SUBSCRIBER_FELL_BEHIND;
    case core::ErrorReason::kCrashed:
      return v1::FAILURE_REASON_CRASHED;
    case core::ErrorReason::kShuttingDown:
      return v1::FAILURE_REASON_SHUTTING_DOWN;
    case core::ErrorReason::kUnsignedBundle:
      return v1::FAILURE_REASON_UNSIGNED_BUNDLE;
    case core::ErrorReason::kSignatureInvalid:
      return v1::FAILURE_REASON_SIGNATURE_INVALID;
    case core::ErrorReason::kUntrustedSigningKey:
      return v1::FAILURE_REASON_UNTRUSTED_SIGNING_KEY;
    case core::ErrorReason::kDigestMismatch:
      return v1::FAILURE_REASON_DIGEST_MISMATCH;
    case core::ErrorReason::kBundleTooLarge:
      return v1::FAILURE_REASON_BUNDLE_TOO_LARGE;
    case core::ErrorReason::kUploadIncomplete:
      return v1::FAILURE_REASON_UPLOAD_INCOMPLETE;
    case core::ErrorReason::kUploadPathInvalid:
      return v1::FAILURE_REASON_UPLOAD_PATH_INVALID;
    case core::ErrorReason::kNoSpace:
      return v1::FAILURE_REASON_NO_SPACE;
    case core::ErrorReason::kNoDeployRoot:
      return v1::FAILURE_REASON_NO_DEPLOY_ROOT;
    case core::ErrorReason::kRequestIdReused:
      return v1::FAILURE_REASON_REQUEST_ID_REUSED;
    case core::ErrorReason::kOperationNotFound:
      return v1::FAILURE_REASON_OPERATION_NOT_FOUND;
    case core::ErrorReason::kExpectedSha256Mismatch:
      return v1::FAILURE_REASON_EXPECTED_SHA256_MISMATCH;
  }
  return v1::FAILURE_REASON_INTERNAL;
}

v1::Phase ToProtoPhase(core::Phase phase) {
  switch (phase) {
    case core::Phase::kPreparing:
      return v1::PHASE_PREPARING;
    case core::Phase::kReloaded:
      return v1::PHASE_RELOADED;
    case core::Phase::kFailed:
      return v1::PHASE_FAILED;
    case core::Phase::kUnloading:
      return v1::PHASE_UNLOADING;
    case core::Phase::kLoaded:
      return v1::PHASE_LOADED;
  }
  return v1::PHASE_UNSPECIFIED;
}

void ToProto(const core::Version& version, v1::Version* out) {
  out->set_major(version.major);
  out->set_minor(version.minor);
  out->set_patch(version.patch);
}

void ToProto(const core::PhaseEvent& event, v1::ReloadPhaseEvent* out) {
  out->set_host_epoch(event.host_epoch);
  out->set_seq(event.seq);
  out->set_kind(v1::EVENT_KIND_PHASE);
  out->set_phase(ToProtoPhase(event.phase));
  out->set_bundle_id(event.bundle_id);
  out->set_bundle_name(event.bundle_name);
  ToProto(event.bundle_version, out->mutable_bundle_version());
  out->set_reload_id(event.reload_id);
  out->set_parent_reload_id(event.parent_reload_id);
  out->set_root_reload_id(event.root_reload_id);
  *out->mutable_time() = wire::ToProto(absl::FromUnixNanos(event.timestamp_unix_nanos));
  out->set_reason(ToProtoReason(event.reason));
  out->set_message(event.message);
  out->set_registry_revision(event.registry_revision);
  out->set_live_instances(event.live_instances);
  out->set_artifact_sha256(event.artifact_sha256);
  out->set_signing_key(event.signing_key);
}

void ToProto(const core::ContractEntry& entry, const core::Runtime& runtime,
             v1::ContractHandle* out) {
  out->set_contract_id(entry.contract_id);
  out->set_contract_name(entry.contract_name);
  out->set_index(entry.handle.index);
  out->set_generation(entry.handle.generation);
  out->set_provider_bundle_id(entry.bundle_id);
  ToProto(entry.version, out->mutable_contract_version());
  out->set_plugin_name(entry.plugin_name);
  out->set_host_epoch(runtime.host_epoch());
  out->set_registry_revision(runtime.registry().revision());
  out->set_invocable(entry.has_invoke);
  if (auto bundle = runtime.BundleNameAndVersion(entry.bundle_id); bundle.ok()) {
    out->set_provider_bundle_name(bundle->first);
    ToProto(bundle->second, out->mutable_provider_version());
  }
}

void ToProto(const core::BundleInfo& bundle, const core::Runtime& runtime, v1::Bundle* out) {
  out->set_id(bundle.id);
  out->set_name(bundle.name);
  ToProto(bundle.version, out->mutable_version());
  out->set_dir(bundle.dir.string());
  out->set_artifact(bundle.artifact.string());
  out->set_loader(bundle.loader);
  out->set_needs_reinit_on_dep_reload(bundle.needs_reinit_on_dep_reload);
  for (const std::string& p : bundle.provides) out->add_provides(p);
  for (uint64_t d : bundle.declared_dependencies) out->add_declared_dependencies(d);
  out->set_reload_count(bundle.reload_count);
  out->set_artifact_sha256(bundle.artifact_sha256);
  out->set_signing_key(bundle.signing_key);
  for (const core::ContractEntry& e : runtime.registry().ListBundle(bundle.id)) {
    v1::ContractHandle* h = out->add_contracts();
    h->set_contract_id(e.contract_id);
    h->set_contract_name(e.contract_name);
    h->set_index(e.handle.index);
    h->set_generation(e.handle.generation);
    h->set_provider_bundle_id(bundle.id);
    h->set_provider_bundle_name(bundle.name);
    ToProto(bundle.version, h->mutable_provider_version());
    ToProto(e.version, h->mutable_contract_version());
    h->set_plugin_name(e.plugin_name);
    h->set_host_epoch(runtime.host_epoch());
    h->set_registry_revision(runtime.registry().revision());
    h->set_invocable(e.has_invoke);
  }
}

}  // namespace polyplug::host
