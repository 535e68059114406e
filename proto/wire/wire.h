// polyplug::wire: what polyplug-host and its clients must agree on beyond host.proto's
// messages, written once for both: metadata keys, the default address, reason tokens, and
// conversions between protobuf's time types and absl's.
#ifndef POLYPLUG_PROTO_WIRE_WIRE_H_
#define POLYPLUG_PROTO_WIRE_WIRE_H_

#include <string>

#include "absl/time/time.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/timestamp.pb.h"
#include "polyplug/host/v1/host.pb.h"

namespace polyplug::wire {

// Trailing metadata of a failed call: its reason token ("BUNDLE_NOT_FOUND"), the same that
// starts the message ("[BUNDLE_NOT_FOUND] ...").
inline constexpr char kReasonTrailer[] = "polyplug-reason";
// Initial metadata of a SubscribeReloadPhases stream: the host's epoch, in decimal.
inline constexpr char kHostEpochMetadata[] = "polyplug-host-epoch";

// Where a host listens when no address is given, and where clients look for it:
// unix:$XDG_RUNTIME_DIR/polyplug-host.sock, else unix:/tmp/polyplug-host-<uid>.sock.
std::string DefaultHostAddress();

// "BUNDLE_NOT_FOUND" for FAILURE_REASON_BUNDLE_NOT_FOUND; "UNSPECIFIED" for 0.
std::string ReasonToken(host::v1::FailureReason reason);
// The reason a token names; FAILURE_REASON_UNSPECIFIED for an unknown one.
host::v1::FailureReason ReasonOfToken(absl::string_view token);

// Lossless within protobuf's ranges (TimeUtil); an infinite absl value saturates.
google::protobuf::Duration ToProto(absl::Duration duration);
absl::Duration FromProto(const google::protobuf::Duration& duration);
google::protobuf::Timestamp ToProto(absl::Time time);
absl::Time FromProto(const google::protobuf::Timestamp& timestamp);

}  // namespace polyplug::wire

#endif  // POLYPLUG_PROTO_WIRE_WIRE_H_
