// The error taxonomy: stable reason tokens, canonical codes and the reason payload.
#include "polyplug/core/error.h"

#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace polyplug::core {
namespace {

constexpr int kLastReason = static_cast<int>(ErrorReason::kExpectedSha256Mismatch);

bool IsUpperSnake(absl::string_view token) {
  if (token.empty() || token.front() == '_' || token.back() == '_') return false;
  for (char c : token) {
    if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) return false;
  }
  return token.find("__") == absl::string_view::npos;
}

TEST(ReasonTokenTest, EveryReasonHasADistinctUpperSnakeToken) {
  std::set<std::string> seen;
  for (int value = 0; value <= kLastReason; ++value) {
    absl::string_view token = ReasonToken(static_cast<ErrorReason>(value));
    EXPECT_TRUE(IsUpperSnake(token)) << "reason " << value << " token '" << token << "'";
    EXPECT_TRUE(seen.insert(std::string(token)).second)
        << "reason " << value << " repeats token " << token;
  }
}

// The tokens are part of the wire contract, so every one is pinned here: a rename must
// fail this test.
TEST(ReasonTokenTest, TokensAreTheStableWireNames) {
  EXPECT_EQ(ReasonToken(ErrorReason::kUnspecified), "UNSPECIFIED");
  EXPECT_EQ(ReasonToken(ErrorReason::kManifestInvalid), "MANIFEST_INVALID");
  EXPECT_EQ(ReasonToken(ErrorReason::kBundleTampered), "BUNDLE_TAMPERED");
  EXPECT_EQ(ReasonToken(ErrorReason::kArtifactMissing), "ARTIFACT_MISSING");
  EXPECT_EQ(ReasonToken(ErrorReason::kArtifactNotLoadable), "ARTIFACT_NOT_LOADABLE");
  EXPECT_EQ(ReasonToken(ErrorReason::kArtifactPathEscape), "ARTIFACT_PATH_ESCAPE");
  EXPECT_EQ(ReasonToken(ErrorReason::kAbiMismatch), "ABI_MISMATCH");
  EXPECT_EQ(ReasonToken(ErrorReason::kInitSymbolMissing), "INIT_SYMBOL_MISSING");
  EXPECT_EQ(ReasonToken(ErrorReason::kInitFailed), "INIT_FAILED");
  EXPECT_EQ(ReasonToken(ErrorReason::kProvidesMismatch), "PROVIDES_MISMATCH");
  EXPECT_EQ(ReasonToken(ErrorReason::kSwapFailed), "SWAP_FAILED");
  EXPECT_EQ(ReasonToken(ErrorReason::kHotReloadDisabled), "HOT_RELOAD_DISABLED");
  EXPECT_EQ(ReasonToken(ErrorReason::kDuplicateProvider), "DUPLICATE_PROVIDER");
  EXPECT_EQ(ReasonToken(ErrorReason::kContractIdCollision), "CONTRACT_ID_COLLISION");
  EXPECT_EQ(ReasonToken(ErrorReason::kBundleNotFound), "BUNDLE_NOT_FOUND");
  EXPECT_EQ(ReasonToken(ErrorReason::kBundleAlreadyLoaded), "BUNDLE_ALREADY_LOADED");
  EXPECT_EQ(ReasonToken(ErrorReason::kDependencyInUse), "DEPENDENCY_IN_USE");
  EXPECT_EQ(ReasonToken(ErrorReason::kDependencyCycle), "DEPENDENCY_CYCLE");
  EXPECT_EQ(ReasonToken(ErrorReason::kUnsatisfiedDependency), "UNSATISFIED_DEPENDENCY");
  EXPECT_EQ(ReasonToken(ErrorReason::kContractNotFound), "CONTRACT_NOT_FOUND");
  EXPECT_EQ(ReasonToken(ErrorReason::kInvalidHandle), "INVALID_HANDLE");
  EXPECT_EQ(ReasonToken(ErrorReason::kStaleHandle), "STALE_HANDLE");
  EXPECT_EQ(ReasonToken(ErrorReason::kNoLoader), "NO_LOADER");
  EXPECT_EQ(ReasonToken(ErrorReason::kInvalidArgument), "INVALID_ARGUMENT");
  EXPECT_EQ(ReasonToken(ErrorReason::kPermissionDenied), "PERMISSION_DENIED");
  EXPECT_EQ(ReasonToken(ErrorReason::kReentrantCall), "REENTRANT_CALL");
  EXPECT_EQ(ReasonToken(ErrorReason::kInternal), "INTERNAL");
  EXPECT_EQ(ReasonToken(ErrorReason::kCursorOutOfRange), "CURSOR_OUT_OF_RANGE");
  EXPECT_EQ(ReasonToken(ErrorReason::kInstanceInvalidatedByReload),
            "INSTANCE_INVALIDATED_BY_RELOAD");
  EXPECT_EQ(ReasonToken(ErrorReason::kInstanceNotFound), "INSTANCE_NOT_FOUND");
  EXPECT_EQ(ReasonToken(ErrorReason::kNotInvocable), "NOT_INVOCABLE");
  EXPECT_EQ(ReasonToken(ErrorReason::kMethodNotFound), "METHOD_NOT_FOUND");
  EXPECT_EQ(ReasonToken(ErrorReason::kCallFailed), "CALL_FAILED");
  EXPECT_EQ(ReasonToken(ErrorReason::kLeaseExpired), "LEASE_EXPIRED");
  EXPECT_EQ(ReasonToken(ErrorReason::kSubscriberFellBehind), "SUBSCRIBER_FELL_BEHIND");
  EXPECT_EQ(ReasonToken(ErrorReason::kCrashed), "CRASHED");
  EXPECT_EQ(ReasonToken(ErrorReason::kShuttingDown), "SHUTTING_DOWN");
}

TEST(ReasonTest, EnumValuesAreStable) {
  EXPECT_EQ(static_cast<int>(ErrorReason::kManifestInvalid), 1);
  EXPECT_EQ(static_cast<int>(ErrorReason::kBundleNotFound), 14);
  EXPECT_EQ(static_cast<int>(ErrorReason::kStaleHandle), 21);
  EXPECT_EQ(static_cast<int>(ErrorReason::kInternal), 26);
  EXPECT_EQ(static_cast<int>(ErrorReason::kCursorOutOfRange), 27);
  EXPECT_EQ(static_cast<int>(ErrorReason::kCallFailed), 32);
  EXPECT_EQ(static_cast<int>(ErrorReason::kLeaseExpired), 33);
  EXPECT_EQ(static_cast<int>(ErrorReason::kSubscriberFellBehind), 34);
  EXPECT_EQ(static_cast<int>(ErrorReason::kCrashed), 35);
  EXPECT_EQ(static_cast<int>(ErrorReason::kShuttingDown), 36);
}

TEST(MakeErrorTest, MapsReasonsToCanonicalCodes) {
  EXPECT_EQ(MakeError(ErrorReason::kBundleNotFound, "m").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(MakeError(ErrorReason::kManifestInvalid, "m").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeError(ErrorReason::kPermissionDenied, "m").code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(MakeError(ErrorReason::kHotReloadDisabled, "m").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(MakeError(ErrorReason::kDependencyInUse, "m").code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(MakeErrorTest, CodeAgreesWithCodeOfForEveryReason) {
  for (int value = 1; value <= kLastReason; ++value) {
    const auto reason = static_cast<ErrorReason>(value);
    const absl::Status status = MakeError(reason, "message");
    EXPECT_FALSE(status.ok()) << ReasonToken(reason);
    EXPECT_NE(CodeOf(reason), absl::StatusCode::kOk) << ReasonToken(reason);
    EXPECT_EQ(status.code(), CodeOf(reason)) << ReasonToken(reason);
  }
}

TEST(MakeErrorTest, KeepsTheMessage) {
  const absl::Status status =
      MakeError(ErrorReason::kBundleNotFound, "no loaded bundle named 'counter'");
  EXPECT_EQ(status.message(), "no loaded bundle named 'counter'");
}

TEST(ReasonOfTest, RoundTripsEveryReason) {
  for (int value = 1; value <= kLastReason; ++value) {
    const auto reason = static_cast<ErrorReason>(value);
    EXPECT_EQ(ReasonOf(MakeError(reason, "m")), reason) << ReasonToken(reason);
  }
}

TEST(ReasonOfTest, SurvivesCopyingTheStatus) {
  const absl::Status original = MakeError(ErrorReason::kStaleHandle, "stale");
  const absl::Status copy = original;  // NOLINT(performance-unnecessary-copy-initialization)
  EXPECT_EQ(ReasonOf(copy), ErrorReason::kStaleHandle);
}

TEST(ReasonOfTest, IsUnspecifiedForOk) {
  EXPECT_EQ(ReasonOf(absl::OkStatus()), ErrorReason::kUnspecified);
}

TEST(ReasonOfTest, IsUnspecifiedForForeignStatuses) {
  EXPECT_EQ(ReasonOf(absl::NotFoundError("not ours")), ErrorReason::kUnspecified);
  EXPECT_EQ(ReasonOf(absl::InvalidArgumentError("not ours")), ErrorReason::kUnspecified);
  EXPECT_EQ(ReasonOf(absl::InternalError("not ours")), ErrorReason::kUnspecified);
}

TEST(ReasonOfTest, IgnoresUnrelatedPayloads) {
  absl::Status status = absl::NotFoundError("not ours");
  status.SetPayload("type.example.com/other", absl::Cord("14"));
  EXPECT_EQ(ReasonOf(status), ErrorReason::kUnspecified);
}

}  // namespace
}  // namespace polyplug::core
