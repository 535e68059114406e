// Connection: the channel, stubs and options shared by a HostClient and everything it
// started (subscriptions, trackers), which may outlive it.
#ifndef POLYPLUG_CLIENT_SRC_CONNECTION_H_
#define POLYPLUG_CLIENT_SRC_CONNECTION_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "polyplug/client/host_client.h"
#include "polyplug/host/v1/host.grpc.pb.h"
#include "src/session.h"

namespace polyplug::client::internal {

// The absl::Status payload under which a host error's reason token is kept.
inline constexpr char kReasonPayloadUrl[] = "type.polyplug.dev/polyplug.host.v1.FailureReason";

struct Connection {
  std::string target;
  ConnectOptions options;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<host::v1::PluginHost::Stub> stub;
  std::unique_ptr<grpc::health::v1::Health::Stub> health;
  // The lease of the instances made through this connection; last, so it ends first.
  std::unique_ptr<Session> session;

  // Adds the credentials and the call's deadline.
  void PrepareCall(grpc::ClientContext& context, const CallOptions& call) const;
  // Adds the credentials; streams have no deadline.
  void PrepareStream(grpc::ClientContext& context) const;
  // The gRPC result of a finished call as an absl::Status: the host's code and message, the
  // reason token as a payload, and for transport failures which target failed.
  absl::Status ToStatus(const grpc::Status& status, const grpc::ClientContext& context,
                        absl::Duration timeout) const;
};

// One unary call on `connection`'s stub: the reply, or the mapped error.
template <typename Response, typename Request, typename Method>
absl::StatusOr<Response> CallUnary(const Connection& connection, Method method,
                                   const Request& request, const CallOptions& call) {
  grpc::ClientContext context;
  connection.PrepareCall(context, call);
  Response response;
  grpc::Status status = ((*connection.stub).*method)(&context, request, &response);
  if (!status.ok()) {
    return connection.ToStatus(
        status, context,
        call.timeout > absl::ZeroDuration() ? call.timeout : connection.options.call_timeout);
  }
  return response;
}

}  // namespace polyplug::client::internal

#endif  // POLYPLUG_CLIENT_SRC_CONNECTION_H_
