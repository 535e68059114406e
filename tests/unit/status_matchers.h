// gMock matchers for absl::Status / absl::StatusOr and polyplug error reasons.
//
// Abseil 20220623 ships no status matchers, so the unit tests carry their own.
#ifndef POLYPLUG_TESTS_UNIT_STATUS_MATCHERS_H_
#define POLYPLUG_TESTS_UNIT_STATUS_MATCHERS_H_

#include <ostream>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "polyplug/core/error.h"

namespace polyplug::testing {

inline const absl::Status& StatusOf(const absl::Status& status) { return status; }

template <typename T>
const absl::Status& StatusOf(const absl::StatusOr<T>& status_or) {
  return status_or.status();
}

// Matches an OK Status or StatusOr.
MATCHER(IsOk, negation ? "is not OK" : "is OK") {
  const absl::Status& status = ::polyplug::testing::StatusOf(arg);
  *result_listener << "status is " << status;
  return status.ok();
}

// Matches a Status or StatusOr with the given canonical code.
MATCHER_P(StatusCodeIs, code,
          std::string(negation ? "has a code other than " : "has code ") +
              absl::StatusCodeToString(code)) {
  const absl::Status& status = ::polyplug::testing::StatusOf(arg);
  *result_listener << "status is " << status;
  return status.code() == code;
}

// Matches a Status or StatusOr carrying the given polyplug ErrorReason.
MATCHER_P(HasReason, reason,
          std::string(negation ? "does not carry reason " : "carries reason ") +
              std::string(::polyplug::core::ReasonToken(reason))) {
  const absl::Status& status = ::polyplug::testing::StatusOf(arg);
  *result_listener << "status is " << status << " (reason "
                   << ::polyplug::core::ReasonToken(::polyplug::core::ReasonOf(status)) << ")";
  return ::polyplug::core::ReasonOf(status) == reason;
}

// Matches a non-OK Status or StatusOr whose message matches `message_matcher`.
MATCHER_P(MessageMatches, message_matcher, "has an error message that matches") {
  const absl::Status& status = ::polyplug::testing::StatusOf(arg);
  if (status.ok()) {
    *result_listener << "status is OK";
    return false;
  }
  return ::testing::ExplainMatchResult(message_matcher, std::string(status.message()),
                                       result_listener);
}

}  // namespace polyplug::testing

#define POLYPLUG_STATUS_CONCAT_INNER_(a, b) a##b
#define POLYPLUG_STATUS_CONCAT_(a, b) POLYPLUG_STATUS_CONCAT_INNER_(a, b)

// ASSERT_OK_AND_ASSIGN(auto value, expr): fails the test unless `expr` (a StatusOr) is OK,
// then binds its value.
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  POLYPLUG_ASSERT_OK_AND_ASSIGN_IMPL_(POLYPLUG_STATUS_CONCAT_(status_or_, __LINE__), lhs, expr)
#define POLYPLUG_ASSERT_OK_AND_ASSIGN_IMPL_(status_or, lhs, expr)    \
  auto status_or = (expr);                                           \
  ASSERT_TRUE(status_or.ok()) << "status is " << status_or.status(); \
  lhs = std::move(status_or).value()

#define ASSERT_OK(expr) ASSERT_THAT((expr), ::polyplug::testing::IsOk())
#define EXPECT_OK(expr) EXPECT_THAT((expr), ::polyplug::testing::IsOk())

#endif  // POLYPLUG_TESTS_UNIT_STATUS_MATCHERS_H_
