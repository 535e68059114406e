#include "host/src/authorization.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "wire/wire.h"

namespace polyplug::host {
namespace {

// Constant-time comparison, so a remote caller learns nothing from response times.
bool SecretEquals(absl::string_view a, absl::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

}  // namespace

grpc::Status TokenAuthorizer::Check(grpc::CallbackServerContext* context) const {
  if (token_.empty()) return grpc::Status::OK;
  const auto& metadata = context->client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    context->AddTrailingMetadata(wire::kReasonTrailer, "PERMISSION_DENIED");
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "[PERMISSION_DENIED] this host requires 'authorization: Bearer <token>' "
                        "metadata (see --auth-token-file)");
  }
  const absl::string_view value(it->second.data(), it->second.size());
  if (!absl::StartsWith(value, "Bearer ") || !SecretEquals(value.substr(7), token_)) {
    context->AddTrailingMetadata(wire::kReasonTrailer, "PERMISSION_DENIED");
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "[PERMISSION_DENIED] the bearer token is not accepted");
  }
  return grpc::Status::OK;
}

}  // namespace polyplug::host
