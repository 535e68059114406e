// The one error taxonomy of polyplug: every failure carries a stable reason code.
//
// Errors cross module boundaries as absl::Status. The reason travels as a payload so
// that the host can map it to a gRPC status and clients can branch on it.
#ifndef POLYPLUG_CORE_ERROR_H_
#define POLYPLUG_CORE_ERROR_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "polyplug/abi.h"

namespace polyplug::core {

// Stable: values and tokens are part of the wire contract. Append only.
enum class ErrorReason : int {
  kUnspecified = 0,
  kManifestInvalid = 1,         // unreadable, malformed TOML, a bad or missing field
  kBundleTampered = 2,          // manifest id != FNV-1a 64(name)
  kArtifactMissing = 3,         // the `file` does not exist
  kArtifactNotLoadable = 4,     // not an ELF shared object, truncated, wrong arch, dlopen failed
  kArtifactPathEscape = 5,      // `file` resolves outside the bundle directory
  kAbiMismatch = 6,             // polyplug_abi_version missing or != POLYPLUG_ABI_VERSION
  kInitSymbolMissing = 7,       // no polyplug_init export
  kInitFailed = 8,              // polyplug_init returned an error
  kProvidesMismatch = 9,        // what init registered != manifest `provides`
  kSwapFailed = 10,             // the reload swap could not be applied
  kHotReloadDisabled = 11,      // the runtime or the loader does not hot reload
  kDuplicateProvider = 12,      // same bundle registered the same contract twice
  kContractIdCollision = 13,    // a contract id already belongs to another contract name
  kBundleNotFound = 14,         // no loaded bundle by that name, id or path
  kBundleAlreadyLoaded = 15,    // a bundle with the same id is already loaded
  kDependencyInUse = 16,        // unload refused: other bundles depend on it
  kDependencyCycle = 17,        // discovery found a dependency cycle
  kUnsatisfiedDependency = 18,  // discovery found a dependency nobody provides
  kContractNotFound = 19,       // no provider for the contract at that version
  kInvalidHandle = 20,          // handle index out of range or slot empty
  kStaleHandle = 21,            // handle generation is older than the slot's
  kNoLoader = 22,               // manifest names a loader this runtime does not have
  kInvalidArgument = 23,        // a bad request argument (path, name, option)
  kPermissionDenied = 24,       // a path outside the allowed roots
  kReentrantCall = 25,          // a phase callback tried to start another operation
  kInternal = 26,
  kCursorOutOfRange = 27,  // a stream cursor is older than the journal or from another epoch
  kInstanceInvalidatedByReload = 28,  // the instance was destroyed by a reload or unload
  kInstanceNotFound = 29,             // no instance with that id (destroyed, or never made)
  kNotInvocable = 30,                 // the contract has no message-style invoke entry
  kMethodNotFound = 31,               // the contract has no method by that name
  kCallFailed = 32,                   // the bundle's create_instance or method returned an error
  kLeaseExpired = 33,  // the instance's session ended or it sat idle too long; or no such session
  kSubscriberFellBehind = 34,  // a phase stream was ended because its reader kept too far behind
  kCrashed = 35,         // this artifact crashed the host process (--supervise): it is quarantined
  kShuttingDown = 36,    // the host stopped before it ran the operation (or while serving it)
  kUnsignedBundle = 37,  // the signature policy requires a bundle.sig and there is none
  kSignatureInvalid = 38,        // bundle.sig is malformed or does not match the bundle's files
  kUntrustedSigningKey = 39,     // bundle.sig is valid but its key is not a trusted key
  kDigestMismatch = 40,          // uploaded bytes do not have the SHA-256 the upload declared
  kBundleTooLarge = 41,          // an upload exceeds the host's --max-bundle-bytes (or file limits)
  kUploadIncomplete = 42,        // an upload ended before all the bytes it declared arrived
  kUploadPathInvalid = 43,       // an uploaded file's path is absolute, has '..', or repeats
  kNoSpace = 44,                 // the host's disk (or its file size limit) refused the bytes
  kNoDeployRoot = 45,            // PushBundle on a host started without --deploy-root
  kRequestIdReused = 46,         // a request_id already used for another request
  kOperationNotFound = 47,       // GetOperation: no operation with that request_id is remembered
  kExpectedSha256Mismatch = 48,  // the artifact on disk is not the build the request expects
};

// "MANIFEST_INVALID", "BUNDLE_TAMPERED", ...; "UNSPECIFIED" for kUnspecified.
absl::string_view ReasonToken(ErrorReason reason);

// Builds a status whose code is the canonical one for `reason` (e.g. kBundleNotFound ->
// NOT_FOUND, kManifestInvalid -> INVALID_ARGUMENT) carrying the reason as payload.
absl::Status MakeError(ErrorReason reason, absl::string_view message);
// The same with `code` instead of the canonical one, where the reason's usual code would
// mislead: e.g. DIGEST_MISMATCH as FAILED_PRECONDITION when a host does not have the build
// asked for (the request is well-formed). `code` must not be kOk.
absl::Status MakeError(ErrorReason reason, absl::StatusCode code, absl::string_view message);

// The reason carried by `status`; kUnspecified for OK or foreign statuses.
ErrorReason ReasonOf(const absl::Status& status);

// The canonical absl code used for `reason`.
absl::StatusCode CodeOf(ErrorReason reason);

// "FUNCTION_NOT_AVAILABLE", "BUNDLE_DEFINED", ...: the name of an ABI error code.
absl::string_view AbiCodeName(PolyplugAbiErrorCode code);
// "PANIC (3): what the bundle said": an ABI error as text for messages.
std::string DescribeAbiError(const PolyplugAbiError& error);

}  // namespace polyplug::core

#endif  // POLYPLUG_CORE_ERROR_H_
