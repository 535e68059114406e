// HostProcessTest: the fixture of the tests that drive one real polyplug-host on a bundle
// root of their own (host_process_*_test.cc, and the authentication, path and limit tests
// under security/), and the helpers they share. Compiled once, in
// polyplug_host_test_support.
//
// Each test starts its own host on a temporary bundle root holding copies of the test
// bundles it needs, so reloads can rewrite files freely. Nothing sleeps: the tests wait on
// stream reads, call completions and process exit.
#ifndef POLYPLUG_TESTS_HOST_HOST_PROCESS_FIXTURE_H_
#define POLYPLUG_TESTS_HOST_HOST_PROCESS_FIXTURE_H_

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "host/host_calls.h"
#include "host/host_fixture.h"
#include "polyplug/host/v1/host.grpc.pb.h"
#include "support/bundle_fixture.h"

namespace polyplug::test {

class HostProcessTest : public ::testing::Test, public HostCalls {
 protected:
  void SetUp() override;

  // Copies the built test bundle `target` into the bundle root (as <root>/<target>).
  std::filesystem::path Copy(absl::string_view target);

  // Starts a host serving the bundle root, plus `extra` flags; `token` is sent with every
  // call of the fixture's. Call it as ASSERT_NO_FATAL_FAILURE(StartHost(...)).
  void StartHost(std::vector<std::string> extra = {}, std::string token = "");

  HostProcess& host() override { return *host_; }

  const std::filesystem::path& root() const { return root_; }
  const TempDir& scratch() const { return scratch_; }

 private:
  TempDir scratch_;
  std::filesystem::path root_ = scratch_.path() / "bundles";
  std::unique_ptr<HostProcess> host_;
};

// The bundle called `name` in `list`, or nullptr.
const host::v1::Bundle* FindBundle(const host::v1::ListBundlesResponse& list,
                                   absl::string_view name);
// The names of the bundles in `list`, in its order.
std::vector<std::string> BundleNames(const host::v1::ListBundlesResponse& list);

// True when one line of `log` contains every needle (case-insensitive).
bool HasLogLine(absl::string_view log, std::vector<absl::string_view> needles);

MATCHER_P(ProtoEq, expected, "equals " + expected.ShortDebugString()) {
  if (::google::protobuf::util::MessageDifferencer::Equals(arg, expected)) return true;
  *result_listener << "which is " << arg.ShortDebugString();
  return false;
}

// Expects `actual` to be the very same events as `expected` (every field).
void ExpectSameEvents(const std::vector<host::v1::ReloadPhaseEvent>& actual,
                      const std::vector<host::v1::ReloadPhaseEvent>& expected);

// The events of a reload response, as a vector.
std::vector<host::v1::ReloadPhaseEvent> EventsOf(const host::v1::ReloadResponse& response);

// grpc.health.v1.Health/Check of `service` without any metadata.
grpc::Status HealthCheck(const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
                         grpc::health::v1::HealthCheckResponse* response);

}  // namespace polyplug::test

#endif  // POLYPLUG_TESTS_HOST_HOST_PROCESS_FIXTURE_H_
