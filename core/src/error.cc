#include "polyplug/core/error.h"

#include <optional>

#include "absl/strings/cord.h"

namespace polyplug::core {
namespace {

constexpr absl::string_view kReasonPayloadUrl = "type.polyplug.dev/polyplug.reason";

struct ReasonInfo {
  ErrorReason reason;
  absl::string_view token;
  absl::StatusCode code;
};

constexpr ReasonInfo kReasons[] = {
    {ErrorReason::kUnspecified, "UNSPECIFIED", absl::StatusCode::kUnknown},
    {ErrorReason::kManifestInvalid, "MANIFEST_INVALID", absl::StatusCode::kInvalidArgument},
    {ErrorReason::kBundleTampered, "BUNDLE_TAMPERED", absl::StatusCode::kInvalidArgument},
    {ErrorReason::kArtifactMissing, "ARTIFACT_MISSING", absl::StatusCode::kFailedPrecondition},
    {ErrorReason::kArtifactNotLoadable, "ARTIFACT_NOT_LOADABLE",
     absl::StatusCode::kFailedPrecondition},
    {ErrorReason::kArtifactPathEscape, "ARTIFACT_PATH_ESCAPE", absl::StatusCode::kPermissionDenied},
    {ErrorReason::kAbiMismatch, "ABI_MISMATCH", absl::StatusCode::kFailedPrecondition},
    {ErrorReason::kInitSymbolMissing, "INIT_SYMBOL_MISSING", absl::StatusCode::kFailedPrecondition},
    {ErrorReason::kInitFailed, "INIT_FAILED", absl::StatusCode::kAborted},
    {ErrorReason::kProvidesMismatch, "PROVIDES_MISMATCH", absl::StatusCode::kFailedPrecondition},
    {ErrorReason::kSwapFailed, "SWAP_FAILED", absl::StatusCode::kAborted},
    {ErrorReason::kHotReloadDisabled, "HOT_RELOAD_DISABLED", absl::StatusCode::kFailedPrecondition},
    {ErrorReason::kDuplicateProvider, "DUPLICATE_PROVIDER", absl::StatusCode::kAlreadyExists},
    {ErrorReason::kContractIdCollision, "CONTRACT_ID_COLLISION", absl::StatusCode::kAlreadyExists},
    {ErrorReason::kBundleNotFound, "BUNDLE_NOT_FOUND", absl::StatusCode::kNotFound},
    {ErrorReason::kBundleAlreadyLoaded, "BUNDLE_ALREADY_LOADED", absl::StatusCode::kAlreadyExists},
    {ErrorReason::kDependencyInUse, "DEPENDENCY_IN_USE", absl::StatusCode::kFailedPrecondition},
    {ErrorReason::kDependencyCycle, "DEPENDENCY_CYCLE", absl::StatusCode::kFailedPrecondition},
    {ErrorReason::kUnsatisfiedDependency, "UNSATISFIED_DEPENDENCY",
     absl::StatusCode::kFailedPrecondition},
    {ErrorReason::kContractNotFound, "CONTRACT_NOT_FOUND", absl::StatusCode::kNotFound},
    {ErrorReason::kInvalidHandle, "INVALID_HANDLE", absl::StatusCode::kInvalidArgument},
    {ErrorReason::kStaleHandle, "STALE_HANDLE", absl::StatusCode::kFailedPrecondition},
    {ErrorReason::kNoLoader, "NO_LOADER", absl::StatusCode::kFailedPrecondition},
    {ErrorReason::kInvalidArgument, "INVALID_ARGUMENT", absl::StatusCode::kInvalidArgument},
    {ErrorReason::kPermissionDenied, "PERMISSION_DENIED", absl::StatusCode::kPermissionDenied},
    {ErrorReason::kReentrantCall, "REENTRANT_CALL", absl::StatusCode::kFailedPrecondition},
    {ErrorReason::kInternal, "INTERNAL", absl::StatusCode::kInternal},
    {ErrorReason::kCursorOutOfRange, "CURSOR_OUT_OF_RANGE", absl::StatusCode::kOutOfRange},
};

const ReasonInfo& InfoOf(ErrorReason reason) {
  for (const ReasonInfo& info : kReasons) {
    if (info.reason == reason) return info;
  }
  return kReasons[0];
}

}  // namespace

absl::string_view ReasonToken(ErrorReason reason) { return InfoOf(reason).token; }

absl::StatusCode CodeOf(ErrorReason reason) { return InfoOf(reason).code; }

absl::Status MakeError(ErrorReason reason, absl::string_view message) {
  absl::Status status(CodeOf(reason), message);
  status.SetPayload(kReasonPayloadUrl, absl::Cord(ReasonToken(reason)));
  return status;
}

ErrorReason ReasonOf(const absl::Status& status) {
  if (status.ok()) return ErrorReason::kUnspecified;
  absl::optional<absl::Cord> payload = status.GetPayload(kReasonPayloadUrl);
  if (!payload) return ErrorReason::kUnspecified;
  std::string token(*payload);
  for (const ReasonInfo& info : kReasons) {
    if (info.token == token) return info.reason;
  }
  return ErrorReason::kUnspecified;
}

}  // namespace polyplug::core
