// polyplug::wire's conversions between protobuf's time types and absl's.
#include "wire/wire.h"

#include <stdlib.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"

namespace polyplug::wire {
namespace {

using google::protobuf::util::TimeUtil;

TEST(WireTest, DurationsRoundTripToTheNanosecondAndSaturate) {
  for (absl::Duration d : {absl::ZeroDuration(), absl::Nanoseconds(1), absl::Milliseconds(1500),
                           absl::Seconds(-3) - absl::Nanoseconds(7), absl::Hours(24 * 365)}) {
    const google::protobuf::Duration proto = ToProto(d);
    EXPECT_TRUE(TimeUtil::DurationToNanoseconds(proto) == absl::ToInt64Nanoseconds(d)) << d;
    EXPECT_EQ(FromProto(proto), d);
  }
  EXPECT_EQ(ToProto(absl::InfiniteDuration()).seconds(), TimeUtil::kDurationMaxSeconds);
  EXPECT_EQ(ToProto(-absl::InfiniteDuration()).seconds(), TimeUtil::kDurationMinSeconds);
}

TEST(WireTest, TimesRoundTripToTheNanosecondAndClamp) {
  for (absl::Time t : {absl::UnixEpoch(), absl::FromUnixNanos(1'765'000'000'123'456'789),
                       absl::FromUnixNanos(-1)}) {
    const google::protobuf::Timestamp proto = ToProto(t);
    EXPECT_GE(proto.nanos(), 0);
    EXPECT_LT(proto.nanos(), 1'000'000'000);
    EXPECT_EQ(FromProto(proto), t);
  }
  EXPECT_EQ(ToProto(absl::InfiniteFuture()).seconds(), TimeUtil::kTimestampMaxSeconds);
  EXPECT_EQ(ToProto(absl::InfinitePast()).seconds(), TimeUtil::kTimestampMinSeconds);
}

TEST(WireTest, TheDefaultAddressFollowsXdgRuntimeDir) {
  const char* saved = std::getenv("XDG_RUNTIME_DIR");
  const std::string restore = saved != nullptr ? saved : "";
  setenv("XDG_RUNTIME_DIR", "/run/user/1234", 1);
  EXPECT_EQ(DefaultHostAddress(), "unix:/run/user/1234/polyplug-host.sock");
  unsetenv("XDG_RUNTIME_DIR");
  EXPECT_EQ(DefaultHostAddress(), "unix:/tmp/polyplug-host-" + std::to_string(getuid()) + ".sock");
  if (saved != nullptr) setenv("XDG_RUNTIME_DIR", restore.c_str(), 1);
}

}  // namespace
}  // namespace polyplug::wire
