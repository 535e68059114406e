#include "wire/wire.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "google/protobuf/util/time_util.h"

namespace polyplug::wire {

using google::protobuf::util::TimeUtil;

std::string DefaultHostAddress() {
  if (const char* dir = std::getenv("XDG_RUNTIME_DIR"); dir != nullptr && dir[0] != '\0') {
    return absl::StrCat("unix:", dir, "/polyplug-host.sock");
  }
  return absl::StrCat("unix:/tmp/polyplug-host-", getuid(), ".sock");
}

std::string ReasonToken(host::v1::FailureReason reason) {
  return std::string(absl::StripPrefix(host::v1::FailureReason_Name(reason), "FAILURE_REASON_"));
}

host::v1::FailureReason ReasonOfToken(absl::string_view token) {
  host::v1::FailureReason reason = host::v1::FAILURE_REASON_UNSPECIFIED;
  if (token.empty() ||
      !host::v1::FailureReason_Parse(absl::StrCat("FAILURE_REASON_", token), &reason)) {
    return host::v1::FAILURE_REASON_UNSPECIFIED;
  }
  return reason;
}

google::protobuf::Duration ToProto(absl::Duration duration) {
  if (duration >= absl::Seconds(TimeUtil::kDurationMaxSeconds)) {
    return TimeUtil::SecondsToDuration(TimeUtil::kDurationMaxSeconds);
  }
  if (duration <= absl::Seconds(TimeUtil::kDurationMinSeconds)) {
    return TimeUtil::SecondsToDuration(TimeUtil::kDurationMinSeconds);
  }
  return TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(duration));
}

absl::Duration FromProto(const google::protobuf::Duration& duration) {
  return absl::Seconds(duration.seconds()) + absl::Nanoseconds(duration.nanos());
}

google::protobuf::Timestamp ToProto(absl::Time time) {
  time = std::clamp(time, absl::FromUnixSeconds(TimeUtil::kTimestampMinSeconds),
                    absl::FromUnixSeconds(TimeUtil::kTimestampMaxSeconds));
  const int64_t seconds = absl::ToUnixSeconds(time);  // rounded down
  return TimeUtil::SecondsToTimestamp(seconds) +
         TimeUtil::NanosecondsToDuration(
             absl::ToInt64Nanoseconds(time - absl::FromUnixSeconds(seconds)));
}

absl::Time FromProto(const google::protobuf::Timestamp& timestamp) {
  return absl::FromUnixSeconds(timestamp.seconds()) + absl::Nanoseconds(timestamp.nanos());
}

}  // namespace polyplug::wire
