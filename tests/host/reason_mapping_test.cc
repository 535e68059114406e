// The reasons of the core (core::ErrorReason) and of the wire (host.proto's FailureReason)
// are one taxonomy: each core reason maps to the proto value of the same token, and each
// proto value is a core reason. A reason added to one and not the other fails here (or, for
// the core side, does not compile: ToProtoReason has one case per reason).
#include <set>
#include <string>

#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "gtest/gtest.h"
#include "host/src/status_mapping.h"
#include "polyplug/core/error.h"
#include "wire/wire.h"

namespace polyplug::host {
namespace {

// Every reason the core knows: the values with a token of their own (0 is UNSPECIFIED).
std::set<int> CoreReasons() {
  std::set<int> values{0};
  for (int value = 1; value < 1024; ++value) {
    if (core::ReasonToken(static_cast<core::ErrorReason>(value)) != "UNSPECIFIED") {
      values.insert(value);
    }
  }
  return values;
}

TEST(ReasonMappingTest, EveryCoreReasonMapsToTheProtoValueOfTheSameToken) {
  for (int value : CoreReasons()) {
    const auto reason = static_cast<core::ErrorReason>(value);
    const v1::FailureReason proto = ToProtoReason(reason);
    EXPECT_EQ(wire::ReasonToken(proto), core::ReasonToken(reason)) << "core reason " << value;
    // Stable on the wire: the numbers agree too.
    EXPECT_EQ(static_cast<int>(proto), value) << core::ReasonToken(reason);
  }
}

TEST(ReasonMappingTest, EveryProtoReasonIsACoreReason) {
  const std::set<int> core_reasons = CoreReasons();
  const google::protobuf::EnumDescriptor* proto = v1::FailureReason_descriptor();
  ASSERT_GT(proto->value_count(), 1);
  for (int i = 0; i < proto->value_count(); ++i) {
    const google::protobuf::EnumValueDescriptor* value = proto->value(i);
    SCOPED_TRACE(value->name());
    ASSERT_TRUE(core_reasons.contains(value->number()))
        << "host.proto has a reason the core does not: add it to core::ErrorReason";
    EXPECT_EQ("FAILURE_REASON_" +
                  std::string(core::ReasonToken(static_cast<core::ErrorReason>(value->number()))),
              value->name());
  }
  EXPECT_EQ(static_cast<size_t>(proto->value_count()), core_reasons.size())
      << "the core has a reason host.proto does not: add it to FailureReason";
}

TEST(ReasonMappingTest, TokensRoundTripThroughTheWireHelpers) {
  for (int value : CoreReasons()) {
    const std::string token(core::ReasonToken(static_cast<core::ErrorReason>(value)));
    EXPECT_EQ(wire::ReasonToken(wire::ReasonOfToken(token)), token);
  }
  EXPECT_EQ(wire::ReasonOfToken("NOT_A_REASON"), v1::FAILURE_REASON_UNSPECIFIED);
  EXPECT_EQ(wire::ReasonOfToken(""), v1::FAILURE_REASON_UNSPECIFIED);
}

}  // namespace
}  // namespace polyplug::host
