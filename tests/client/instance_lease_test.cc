// Leases of remote instances against a real polyplug-host: the instances of a client that
// dies, disconnects or closes are destroyed (its OpenSession stream ends), instances made
// outside a session die after their idle timeout, and a LiveInstance carries on in a new
// session after its connection dropped.
#include <signal.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "client/client_fixture.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "polyplug/client/host_client.h"

namespace polyplug::test {
namespace {

namespace v1 = ::polyplug::host::v1;
using ::testing::HasSubstr;

class InstanceLeaseTest : public ClientTest {
 protected:
  // Polls GetHostInfo until `done` holds for it (the host learns of a closed connection
  // on its own schedule); false, with the last answer printed, after kCallDeadline.
  bool WaitForHostInfo(client::HostClient& client,
                       const std::function<bool(const v1::HostInfo&)>& done) {
    const absl::Time limit = absl::Now() + absl::FromChrono(kCallDeadline);
    absl::StatusOr<v1::HostInfo> info;
    while (absl::Now() < limit) {
      info = client.GetHostInfo();
      if (info.ok() && done(*info)) return true;
      absl::SleepFor(absl::Milliseconds(10));
    }
    ADD_FAILURE() << "host info never matched; last: "
                  << (info.ok() ? info->ShortDebugString() : info.status().ToString());
    return false;
  }

  // The error of `method` on instance `id` as "CODE REASON: message", or its answer.
  static std::string Call(client::HostClient& client, uint64_t id, uint64_t epoch,
                          const std::string& method) {
    v1::InstanceRef ref;
    ref.set_instance_id(id);
    ref.set_host_epoch(epoch);
    auto response = client.Invoke(ref, method, "");
    if (response.ok()) return response->response();
    return absl::StrCat(absl::StatusCodeToString(response.status().code()), " ",
                        client::ReasonToken(client::FailureReasonOf(response.status())), ": ",
                        response.status().message());
  }

  // CreateInstance the way grpcurl would: no session.
  absl::StatusOr<v1::InstanceRef> CreateWithoutSession(const v1::CreateInstanceRequest& request) {
    auto context = host().NewContext();
    v1::InstanceRef ref;
    grpc::Status status = host().stub().CreateInstance(context.get(), request, &ref);
    if (!status.ok())
      return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                          status.error_message());
    return ref;
  }
};

TEST_F(InstanceLeaseTest, AKilledClientsInstancesAreDestroyed) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto observer = Connect();
  ChildProcess holder({POLYPLUG_INSTANCE_HOLDER_BINARY, address(), "3"});
  std::vector<uint64_t> ids;
  for (std::optional<std::string> line = holder.ReadLine(); line && *line != "ready";
       line = holder.ReadLine()) {
    uint64_t id = 0;
    ASSERT_TRUE(absl::SimpleAtoi(*line, &id)) << *line;
    ids.push_back(id);
  }
  ASSERT_EQ(ids.size(), 3u) << "the holder did not get ready";
  auto info = observer->GetHostInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->instance_count(), 3u);
  EXPECT_EQ(info->session_count(), 1u);
  // The instances are real and shared: anyone may call them while they live.
  EXPECT_EQ(Call(*observer, ids[0], host().epoch(), "count"), "2");

  holder.Signal(SIGKILL);
  EXPECT_EQ(holder.Wait().exit_code, 128 + SIGKILL);
  ASSERT_TRUE(WaitForHostInfo(*observer, [](const v1::HostInfo& i) {
    return i.instance_count() == 0 && i.session_count() == 0;
  }));
  for (uint64_t id : ids) {
    const std::string answer = Call(*observer, id, host().epoch(), "count");
    EXPECT_THAT(answer, HasSubstr("FAILED_PRECONDITION LEASE_EXPIRED"));
    EXPECT_THAT(answer, HasSubstr("session"));
    EXPECT_THAT(answer, HasSubstr("disconnected"));
  }
  // The host goes on.
  auto again = observer->CreateInstance("test.counter@1");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(Call(*observer, again->instance_id(), host().epoch(), "count"), "1");
}

TEST_F(InstanceLeaseTest, DestroyingTheClientEndsItsSession) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto observer = Connect();
  uint64_t id = 0;
  {
    auto owner = Connect();
    auto instance = owner->CreateInstance("test.counter@1");
    ASSERT_TRUE(instance.ok()) << instance.status();
    id = instance->instance_id();
    auto second = owner->CreateInstance("test.counter@1");
    ASSERT_TRUE(second.ok()) << second.status();
    auto info = observer->GetHostInfo();
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->instance_count(), 2u);
    EXPECT_EQ(info->session_count(), 1u) << "one session per client, shared by its instances";
  }
  ASSERT_TRUE(WaitForHostInfo(*observer, [](const v1::HostInfo& i) {
    return i.instance_count() == 0 && i.session_count() == 0;
  }));
  EXPECT_THAT(Call(*observer, id, host().epoch(), "count"),
              HasSubstr("FAILED_PRECONDITION LEASE_EXPIRED"));
}

TEST_F(InstanceLeaseTest, ALiveInstanceCarriesOnInANewSessionAfterItsConnectionDropped) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  TcpProxy proxy(socket_path());
  auto through_proxy = Connect(FastOptions(), proxy.address());
  auto observer = Connect();
  auto live = through_proxy->MakeLiveInstance("test.counter@1");
  for (const char* expected : {"1", "2"}) {
    auto answer = live->Invoke("count", "");
    ASSERT_TRUE(answer.ok()) << answer.status();
    EXPECT_EQ(answer->response(), expected);
  }
  const uint64_t first_id = live->instance()->instance_id();

  proxy.Sever();  // the host sees the connection close: the session and its instance end
  ASSERT_TRUE(WaitForHostInfo(*observer, [](const v1::HostInfo& i) {
    return i.instance_count() == 0 && i.session_count() == 0;
  }));
  proxy.Restore();
  client::CallOptions patient;
  patient.wait_for_ready = true;  // the channel may still be reconnecting
  auto answer = live->Invoke("count", "", patient);
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->response(), "1") << "a new instance, in a new session";
  EXPECT_NE(live->instance()->instance_id(), first_id);
  auto info = observer->GetHostInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->instance_count(), 1u);
  EXPECT_EQ(info->session_count(), 1u);
}

TEST_F(InstanceLeaseTest, InstancesOutsideASessionDieWhenIdle) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost({"--instance-idle-timeout", "300ms"}));
  auto client = Connect();
  // Made first, under the client's session, with no idle timeout: it outlives the others.
  auto leased = client->CreateInstance("test.counter@1");
  ASSERT_TRUE(leased.ok()) << leased.status();

  v1::CreateInstanceRequest request;
  request.set_contract("test.counter@1");
  auto sessionless = CreateWithoutSession(request);
  ASSERT_TRUE(sessionless.ok()) << sessionless.status();
  request.mutable_idle_timeout()->set_nanos(200'000'000);  // asked for explicitly
  auto short_lived = CreateWithoutSession(request);
  ASSERT_TRUE(short_lived.ok()) << short_lived.status();

  ASSERT_TRUE(
      WaitForHostInfo(*client, [](const v1::HostInfo& i) { return i.instance_count() == 1; }));
  const std::string expired = Call(*client, sessionless->instance_id(), host().epoch(), "count");
  EXPECT_THAT(expired, HasSubstr("FAILED_PRECONDITION LEASE_EXPIRED"));
  EXPECT_THAT(expired, HasSubstr("idle timeout"));
  EXPECT_THAT(Call(*client, short_lived->instance_id(), host().epoch(), "count"),
              HasSubstr("idle timeout"));
  EXPECT_EQ(Call(*client, leased->instance_id(), host().epoch(), "count"), "1");

  request.mutable_idle_timeout()->set_seconds(-1);
  auto negative = CreateWithoutSession(request);
  EXPECT_TRUE(absl::IsInvalidArgument(negative.status())) << negative.status();
}

TEST_F(InstanceLeaseTest, ASessionThatIsNotOpenIsRefused) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  v1::CreateInstanceRequest request;
  request.set_contract("test.counter@1");
  request.set_session_id(12345);
  auto refused = CreateWithoutSession(request);
  EXPECT_TRUE(absl::IsFailedPrecondition(refused.status())) << refused.status();
  EXPECT_THAT(refused.status().message(), HasSubstr("LEASE_EXPIRED"));
  EXPECT_THAT(refused.status().message(), HasSubstr("session 12345 is not open"));
}

// The raw protocol, as grpcurl uses it: the stream's one message names the session.
TEST_F(InstanceLeaseTest, OpenSessionSendsTheIdAndTheStreamEndClosesIt) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto observer = Connect();
  auto context = std::make_unique<grpc::ClientContext>();
  auto stream = host().stub().OpenSession(context.get(), v1::OpenSessionRequest());
  v1::SessionEvent event;
  ASSERT_TRUE(stream->Read(&event));
  EXPECT_NE(event.session_id(), 0u);
  EXPECT_EQ(event.host_epoch(), host().epoch());
  EXPECT_EQ(event.sessionless_idle_timeout().seconds(), 600);

  v1::CreateInstanceRequest request;
  request.set_contract("test.counter@1");
  request.set_session_id(event.session_id());
  auto instance = CreateWithoutSession(request);
  ASSERT_TRUE(instance.ok()) << instance.status();
  EXPECT_EQ(Call(*observer, instance->instance_id(), host().epoch(), "count"), "1");

  context->TryCancel();
  EXPECT_FALSE(stream->Read(&event)) << "no second message";
  stream->Finish();
  ASSERT_TRUE(WaitForHostInfo(*observer, [](const v1::HostInfo& i) {
    return i.instance_count() == 0 && i.session_count() == 0;
  }));
}

}  // namespace
}  // namespace polyplug::test
