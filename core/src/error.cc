#include "polyplug/core/error.h"

#include <optional>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

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
    {ErrorReason::kInstanceInvalidatedByReload, "INSTANCE_INVALIDATED_BY_RELOAD",
     absl::StatusCode::kFailedPrecondition},
    {ErrorReason::kInstanceNotFound, "INSTANCE_NOT_FOUND", absl::StatusCode::kNotFound},
    {ErrorReason::kNotInvocable, "NOT_INVOCABLE", absl::StatusCode::kUnimplemented},
    {ErrorReason::kMethodNotFound, "METHOD_NOT_FOUND", absl::StatusCode::kUnimplemented},
    {ErrorReason::kCallFailed, "CALL_FAILED", absl::StatusCode::kAborted},
    {ErrorReason::kLeaseExpired, "LEASE_EXPIRED", absl::StatusCode::kFailedPrecondition},
    {ErrorReason::kSubscriberFellBehind, "SUBSCRIBER_FELL_BEHIND", absl::StatusCode::kOutOfRange},
    {ErrorReason::kCrashed, "CRASHED", absl::StatusCode::kFailedPrecondition},
    {ErrorReason::kShuttingDown, "SHUTTING_DOWN", absl::StatusCode::kUnavailable},
    {ErrorReason::kUnsignedBundle, "UNSIGNED_BUNDLE", absl::StatusCode::kPermissionDenied},
    {ErrorReason::kSignatureInvalid, "SIGNATURE_INVALID", absl::StatusCode::kPermissionDenied},
    {ErrorReason::kUntrustedSigningKey, "UNTRUSTED_SIGNING_KEY",
     absl::StatusCode::kPermissionDenied},
    {ErrorReason::kDigestMismatch, "DIGEST_MISMATCH", absl::StatusCode::kInvalidArgument},
    {ErrorReason::kBundleTooLarge, "BUNDLE_TOO_LARGE", absl::StatusCode::kResourceExhausted},
    {ErrorReason::kUploadIncomplete, "UPLOAD_INCOMPLETE", absl::StatusCode::kInvalidArgument},
    {ErrorReason::kUploadPathInvalid, "UPLOAD_PATH_INVALID", absl::StatusCode::kInvalidArgument},
    {ErrorReason::kNoSpace, "NO_SPACE", absl::StatusCode::kResourceExhausted},
    {ErrorReason::kNoDeployRoot, "NO_DEPLOY_ROOT", absl::StatusCode::kFailedPrecondition},
    {ErrorReason::kRequestIdReused, "REQUEST_ID_REUSED", absl::StatusCode::kAlreadyExists},
    {ErrorReason::kOperationNotFound, "OPERATION_NOT_FOUND", absl::StatusCode::kNotFound},
    {ErrorReason::kExpectedSha256Mismatch, "EXPECTED_SHA256_MISMATCH",
     absl::StatusCode::kFailedPrecondition},
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
  return MakeError(reason, CodeOf(reason), message);
}

absl::Status MakeError(ErrorReason reason, absl::StatusCode code, absl::string_view message) {
  absl::Status status(code, message);
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

absl::string_view AbiCodeName(PolyplugAbiErrorCode code) {
  switch (code) {
    case POLYPLUG_ABI_OK:
      return "OK";
    case POLYPLUG_ABI_GENERIC:
      return "GENERIC";
    case POLYPLUG_ABI_BUFFER_TOO_SMALL:
      return "BUFFER_TOO_SMALL";
    case POLYPLUG_ABI_PANIC:
      return "PANIC";
    case POLYPLUG_ABI_NOT_FOUND:
      return "NOT_FOUND";
    case POLYPLUG_ABI_STALE_HANDLE:
      return "STALE_HANDLE";
    case POLYPLUG_ABI_FUNCTION_NOT_AVAILABLE:
      return "FUNCTION_NOT_AVAILABLE";
    case POLYPLUG_ABI_DUPLICATE_PROVIDER:
      return "DUPLICATE_PROVIDER";
    case POLYPLUG_ABI_INVALID_POINTER:
      return "INVALID_POINTER";
    case POLYPLUG_ABI_REENTRANT_CALL:
      return "REENTRANT_CALL";
    case POLYPLUG_ABI_UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case POLYPLUG_ABI_INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    default:
      return code >= POLYPLUG_ABI_FIRST_BUNDLE_DEFINED ? "BUNDLE_DEFINED" : "GENERIC";
  }
}

std::string DescribeAbiError(const PolyplugAbiError& error) {
  std::string text = absl::StrCat(AbiCodeName(error.code), " (", error.code, ")");
  if (error.message.ptr != nullptr && error.message.len > 0) {
    absl::StrAppend(&text, ": ", absl::string_view(error.message.ptr, error.message.len));
  }
  return text;
}

}  // namespace polyplug::core
