// Limits on what clients can hold or do (docs/SECURITY.md, "Limits"): --max-subscribers
// streams, the session and instance limits of RemoteInstances (with small values, and the
// documented defaults), and --no-hot-reload. The catalogue's limit rows (message size,
// name sizes, a subscriber that does not read) are in fault_catalogue_test.cc.
//
// The fixtures of tests/host/security: security_fixture.h (HostSecurityTest,
// SecurityControlsTest) and host/host_process_fixture.h (HostProcessTest). docs/SECURITY.md
// cites these tests by name: keep its table in step when one moves or is renamed.
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "host/host_calls.h"
#include "host/host_fixture.h"
#include "host/host_process_fixture.h"
#include "host/src/remote_instances.h"
#include "polyplug/core/ids.h"
#include "polyplug/core/runtime.h"
#include "polyplug/host/v1/host.grpc.pb.h"
#include "support/bundle_fixture.h"

namespace polyplug::test {
namespace {

namespace v1 = ::polyplug::host::v1;
using ::testing::IsEmpty;

// ---------------------------------------------------------------------------------------
// SubscribeReloadPhases streams

TEST_F(HostProcessTest, SubscriberLimitIsEnforcedAndFreedOnDisconnect) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost({"--max-subscribers", "2"}));
  auto first = SubscribeSynced();
  ASSERT_NE(first, nullptr);
  auto second = SubscribeSynced();
  ASSERT_NE(second, nullptr);
  {
    auto third = Subscribe(v1::SubscribeReloadPhasesRequest());
    EXPECT_THAT(Describe(third->ReadToEnd()), IsEmpty());
    const grpc::Status status = third->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << ToString(status);
  }
  // A client that goes away frees its slot.
  first->Cancel();
  EXPECT_EQ(first->Finish().error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_TRUE(WaitForSubscriberCount(1)) << HostInfo().ShortDebugString();
  auto replacement = SubscribeSynced();
  ASSERT_NE(replacement, nullptr);
  const v1::ReloadResponse reload = ReloadOk("counter");
  ExpectSameEvents(replacement->ReadPhases(2), EventsOf(reload));
  ExpectSameEvents(second->ReadPhases(2), EventsOf(reload));
}

// ---------------------------------------------------------------------------------------
// Remote instances (fixed in the host: 4096 sessions, 65536 instances; the limits
// themselves are tested here with small values)

TEST(RemoteInstancesLimitsTest, SessionsAndInstancesPastTheLimitAreResourceExhausted) {
  auto runtime = core::Runtime::Create(core::RuntimeOptions());
  ASSERT_TRUE(runtime.ok()) << runtime.status();
  auto loaded = (*runtime)->LoadBundle(TestBundleDir("counter_v1"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto handle = (*runtime)->Find(core::GuestContractId("test.counter", 1), 0);
  ASSERT_TRUE(handle.ok()) << handle.status();
  {
    host::RemoteInstances instances(
        **runtime, host::RemoteInstancesOptions{.max_instances = 2, .max_sessions = 2});
    auto first_session = instances.OpenSession();
    ASSERT_TRUE(first_session.ok()) << first_session.status();
    ASSERT_TRUE(instances.OpenSession().ok());
    const absl::StatusOr<uint64_t> third_session = instances.OpenSession();
    EXPECT_EQ(third_session.status().code(), absl::StatusCode::kResourceExhausted)
        << third_session.status();
    instances.CloseSession(*first_session);
    EXPECT_TRUE(instances.OpenSession().ok()) << "a closed session frees its slot";

    auto first = instances.Create(*handle, "");
    ASSERT_TRUE(first.ok()) << first.status();
    ASSERT_TRUE(instances.Create(*handle, "").ok());
    const absl::StatusOr<uint64_t> third = instances.Create(*handle, "");
    EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted) << third.status();
    EXPECT_EQ(instances.size(), 2u);
    ASSERT_TRUE(instances.Destroy(*first).ok());
    EXPECT_TRUE(instances.Create(*handle, "").ok()) << "a destroyed instance frees its slot";
  }
}

// The host's fixed limits are the documented ones.
TEST(RemoteInstancesLimitsTest, DefaultLimitsAreTheDocumentedOnes) {
  const host::RemoteInstancesOptions options;
  EXPECT_EQ(options.max_sessions, 4096u);
  EXPECT_EQ(options.max_instances, 65536u);
  EXPECT_EQ(options.sessionless_idle_timeout, absl::Minutes(10));
}

// ---------------------------------------------------------------------------------------
// --no-hot-reload

TEST_F(HostProcessTest, NoHotReloadRefusesReload) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost({"--no-hot-reload"}));
  EXPECT_FALSE(host().info_at_start().hot_reload_enabled());
  const auto reload = ReloadByName("counter");
  EXPECT_EQ(reload.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << ToString(reload.status);
  EXPECT_EQ(ReasonTokenOf(reload.status), "HOT_RELOAD_DISABLED") << ToString(reload.status);
  EXPECT_TRUE(absl::StartsWith(reload.status.error_message(), "[HOT_RELOAD_DISABLED]"))
      << ToString(reload.status);
  EXPECT_EQ(reload.trailing_reason, "HOT_RELOAD_DISABLED");
  EXPECT_EQ(HostInfo().last_seq(), host().info_at_start().last_seq());
  EXPECT_TRUE(FindContract("test.counter@1").status.ok());
}

}  // namespace
}  // namespace polyplug::test
