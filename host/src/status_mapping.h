// Conversions between the core's types and the wire contract (polyplug.host.v1).
#ifndef POLYPLUG_HOST_SRC_STATUS_MAPPING_H_
#define POLYPLUG_HOST_SRC_STATUS_MAPPING_H_

#include <grpcpp/grpcpp.h>

#include <map>
#include <string>

#include "absl/status/status.h"
#include "polyplug/core/phase_event.h"
#include "polyplug/core/registry.h"
#include "polyplug/core/runtime.h"
#include "polyplug/host/v1/host.pb.h"

namespace polyplug::host {

// Same code, message "[REASON_TOKEN] message", and the details a google.rpc.Status with a
// google.rpc.ErrorInfo (reason, domain "polyplug.host", `metadata` for machines: e.g. where
// an out-of-range cursor can resume). When `context` is given, also adds the reason as
// trailing metadata (wire::kReasonTrailer).
grpc::Status ToGrpcStatus(const absl::Status& status,
                          grpc::CallbackServerContext* context = nullptr,
                          const std::map<std::string, std::string>& metadata = {});

// The reason token a status made by ToGrpcStatus starts its message with ("[TOKEN] ..."),
// or "" for another status.
std::string ReasonTokenIn(const grpc::Status& status);

// A server stream refused before it started: finishes with `status`, deletes itself.
template <typename Message>
grpc::ServerWriteReactor<Message>* RefusedStream(grpc::Status status) {
  class Refused final : public grpc::ServerWriteReactor<Message> {
   public:
    explicit Refused(grpc::Status s) { this->Finish(std::move(s)); }
    void OnDone() override { delete this; }
  };
  return new Refused(std::move(status));
}

v1::FailureReason ToProtoReason(core::ErrorReason reason);
v1::Phase ToProtoPhase(core::Phase phase);
void ToProto(const core::Version& version, v1::Version* out);
void ToProto(const core::PhaseEvent& event, v1::ReloadPhaseEvent* out);
void ToProto(const core::ContractEntry& entry, const core::Runtime& runtime,
             v1::ContractHandle* out);
void ToProto(const core::BundleInfo& bundle, const core::Runtime& runtime, v1::Bundle* out);

}  // namespace polyplug::host

#endif  // POLYPLUG_HOST_SRC_STATUS_MAPPING_H_
