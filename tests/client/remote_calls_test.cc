// Remote calls against a real polyplug-host: CreateInstance, Invoke and DestroyInstance
// through the client library, and what reloads and unloads do to instances.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <future>
#include <string>

#include "client/client_fixture.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "polyplug/client/host_client.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::polyplug::host::v1;
using ::testing::HasSubstr;

class RemoteCallsTest : public ClientTest {
 protected:
  // The answer of `method` on `instance`, or the error as "CODE REASON".
  std::string Call(client::HostClient& client, const v1::InstanceRef& instance,
                   const std::string& method, const std::string& request = "") {
    auto response = client.Invoke(instance, method, request);
    if (response.ok()) return response->response();
    return absl::StrCat(absl::StatusCodeToString(response.status().code()), " ",
                        client::ReasonToken(client::FailureReasonOf(response.status())));
  }

  // Runs the counter's "block" method on `instance` and returns once it runs in the host;
  // it returns (the future's value) after ReleaseBlockedCall(). Synchronised by FIFOs.
  std::future<absl::StatusOr<v1::InvokeResponse>> StartBlockedCall(
      client::HostClient& client, const v1::InstanceRef& instance) {
    const fs::path fifos = dir_.path() / "fifos";
    fs::create_directories(fifos);
    EXPECT_EQ(mkfifo((fifos / "started").c_str(), 0600), 0);
    EXPECT_EQ(mkfifo((fifos / "release").c_str(), 0600), 0);
    auto call = std::async(std::launch::async, [&client, instance, fifos] {
      return client.Invoke(instance, "block", fifos.string());
    });
    std::ifstream started(fifos / "started");  // opens once the call runs in the host
    EXPECT_EQ(started.get(), '1');
    return call;
  }
  void ReleaseBlockedCall() { std::ofstream release(dir_.path() / "fifos" / "release"); }
};

TEST_F(RemoteCallsTest, CreateInvokeAndDestroyAnInstance) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  auto instance = client->CreateInstance("test.counter@1");
  ASSERT_TRUE(instance.ok()) << instance.status();
  EXPECT_EQ(instance->host_epoch(), host().epoch());
  EXPECT_EQ(instance->handle().provider_bundle_name(), "counter");
  EXPECT_GT(instance->instance_id(), 0u);

  EXPECT_EQ(Call(*client, *instance, "version"), "v1");
  EXPECT_EQ(Call(*client, *instance, "count"), "1");
  EXPECT_EQ(Call(*client, *instance, "count"), "2") << "the instance keeps its state";
  const std::string binary("a\0b\xff", 4);
  EXPECT_EQ(Call(*client, *instance, "echo", binary), binary);
  auto answer = client->Invoke(*instance, "version", "");
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->handle().provider_version().major(), 1u);

  auto unknown = client->Invoke(*instance, "no_such_method", "");
  EXPECT_TRUE(absl::IsUnimplemented(unknown.status())) << unknown.status();
  EXPECT_EQ(client::FailureReasonOf(unknown.status()), v1::FAILURE_REASON_METHOD_NOT_FOUND);
  EXPECT_THAT(unknown.status().message(), HasSubstr("no_such_method"));
  auto failed = client->Invoke(*instance, "fail", "");
  EXPECT_TRUE(absl::IsAborted(failed.status())) << failed.status();
  EXPECT_EQ(client::FailureReasonOf(failed.status()), v1::FAILURE_REASON_CALL_FAILED);
  EXPECT_THAT(failed.status().message(), HasSubstr("failed on purpose"));
  EXPECT_EQ(Call(*client, *instance, "count"), "3") << "an error leaves the instance usable";

  // A second instance has its own state.
  auto other = client->CreateInstance(instance->handle());
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_NE(other->instance_id(), instance->instance_id());
  EXPECT_EQ(Call(*client, *other, "count"), "1");

  ASSERT_TRUE(client->DestroyInstance(*instance).ok());
  EXPECT_EQ(Call(*client, *instance, "version"), "NOT_FOUND INSTANCE_NOT_FOUND");
  EXPECT_EQ(Call(*client, *other, "count"), "2");
}

TEST_F(RemoteCallsTest, OneShotCallsNeedNoInstance) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  auto answer = client->InvokeOnce("test.counter@1", "count", "");
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->response(), "1");
  EXPECT_EQ(client->InvokeOnce("test.counter@1", "count", "")->response(), "1")
      << "a fresh instance per call";
  auto missing = client->InvokeOnce("test.nothing@1", "version", "");
  EXPECT_TRUE(absl::IsNotFound(missing.status())) << missing.status();
  EXPECT_EQ(client::FailureReasonOf(missing.status()), v1::FAILURE_REASON_CONTRACT_NOT_FOUND);
}

TEST_F(RemoteCallsTest, AContractWithoutMethodsIsNotInvocable) {
  Copy("stateless");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  auto created = client->CreateInstance("test.stateless@1");
  EXPECT_TRUE(absl::IsUnimplemented(created.status())) << created.status();
  EXPECT_EQ(client::FailureReasonOf(created.status()), v1::FAILURE_REASON_NOT_INVOCABLE);
  EXPECT_THAT(created.status().message(), HasSubstr("test.stateless@1"));
  auto once = client->InvokeOnce("test.stateless@1", "anything", "");
  EXPECT_EQ(client::FailureReasonOf(once.status()), v1::FAILURE_REASON_NOT_INVOCABLE);
}

TEST_F(RemoteCallsTest, AReloadDestroysInstancesAndNewOnesRunTheNewVersion) {
  const fs::path counter = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  auto instance = client->CreateInstance("test.counter@1");
  ASSERT_TRUE(instance.ok()) << instance.status();
  EXPECT_EQ(Call(*client, *instance, "version"), "v1");

  OverwriteArtifact(TestBundleDir("counter_v2"), counter);
  auto reloaded = client->Reload("counter");
  ASSERT_TRUE(reloaded.ok() && reloaded->outcome() == v1::RELOAD_OUTCOME_RELOADED);
  // PREPARING announced one live instance, and the host destroyed it before the swap:
  // the runtime's check after PREPARING found none left to warn about.
  EXPECT_EQ(reloaded->events(0).phase(), v1::PHASE_PREPARING);
  EXPECT_EQ(reloaded->events(0).live_instances(), 1u);
  EXPECT_THAT(host().Stderr(), ::testing::Not(HasSubstr("remain after PREPARING")));

  auto stale = client->Invoke(*instance, "version", "");
  EXPECT_TRUE(absl::IsFailedPrecondition(stale.status())) << stale.status();
  EXPECT_EQ(client::FailureReasonOf(stale.status()),
            v1::FAILURE_REASON_INSTANCE_INVALIDATED_BY_RELOAD);
  EXPECT_THAT(stale.status().message(), HasSubstr("reloading"));
  EXPECT_TRUE(client->DestroyInstance(*instance).ok()) << "destroying it again is fine";

  auto fresh = client->CreateInstance("test.counter@1");
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(Call(*client, *fresh, "version"), "v2");
  EXPECT_EQ(client->InvokeOnce("test.counter@1", "version", "")->response(), "v2");
}

TEST_F(RemoteCallsTest, AFailedReloadKeepsV1Answering) {
  const fs::path counter = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  auto instance = client->CreateInstance("test.counter@1");
  ASSERT_TRUE(instance.ok()) << instance.status();
  WriteFile(counter / "libcounter.so", "not an ELF file");
  auto failed = client->Reload("counter");
  ASSERT_TRUE(failed.ok() && failed->outcome() == v1::RELOAD_OUTCOME_FAILED);
  // PREPARING destroyed the instance even though the reload then failed.
  EXPECT_EQ(Call(*client, *instance, "version"),
            "FAILED_PRECONDITION INSTANCE_INVALIDATED_BY_RELOAD");
  auto fresh = client->CreateInstance("test.counter@1");
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(Call(*client, *fresh, "version"), "v1");
}

TEST_F(RemoteCallsTest, AnUnloadDestroysInstancesAndLaterCallsSaySo) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  auto instance = client->CreateInstance("test.counter@1");
  ASSERT_TRUE(instance.ok()) << instance.status();
  ASSERT_TRUE(client->UnloadBundle("counter", false).ok());
  auto gone = client->Invoke(*instance, "version", "");
  EXPECT_EQ(client::FailureReasonOf(gone.status()),
            v1::FAILURE_REASON_INSTANCE_INVALIDATED_BY_RELOAD);
  EXPECT_THAT(gone.status().message(), HasSubstr("unloaded"));
  auto nothing = client->InvokeOnce("test.counter@1", "version", "");
  EXPECT_EQ(client::FailureReasonOf(nothing.status()), v1::FAILURE_REASON_CONTRACT_NOT_FOUND);
  auto by_handle = client->CreateInstance(instance->handle());
  EXPECT_FALSE(by_handle.ok()) << "the handle went stale with the unload";
}

TEST_F(RemoteCallsTest, AReloadWaitsForACallInFlightWhichFinishesOnTheOldCode) {
  const fs::path counter = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  auto instance = client->CreateInstance("test.counter@1");
  ASSERT_TRUE(instance.ok()) << instance.status();
  auto call = StartBlockedCall(*client, *instance);
  ASSERT_FALSE(HasFailure());
  OverwriteArtifact(TestBundleDir("counter_v2"), counter);
  auto reload = std::async(std::launch::async, [&] { return client->Reload("counter"); });
  // The reload cannot swap while the call runs; let the call end.
  ReleaseBlockedCall();
  auto answered = call.get();
  ASSERT_TRUE(answered.ok()) << answered.status();
  EXPECT_EQ(answered->response(), "v1") << "the call finished on the code it started on";
  auto reloaded = reload.get();
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  EXPECT_EQ(reloaded->outcome(), v1::RELOAD_OUTCOME_RELOADED) << reloaded->message();
  EXPECT_EQ(Call(*client, *instance, "version"),
            "FAILED_PRECONDITION INSTANCE_INVALIDATED_BY_RELOAD");
}

// --drain-timeout bounds how long a reload waits for a call in flight: past it the reload
// goes on, and the old image stays mapped until the call returns on it.
TEST_F(RemoteCallsTest, AReloadGoesOnAfterTheDrainTimeoutWhileACallStillRuns) {
  const fs::path counter = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost({"--drain-timeout", "100ms"}));
  auto client = Connect();
  auto instance = client->CreateInstance("test.counter@1");
  ASSERT_TRUE(instance.ok()) << instance.status();
  auto call = StartBlockedCall(*client, *instance);
  ASSERT_FALSE(HasFailure());
  OverwriteArtifact(TestBundleDir("counter_v2"), counter);
  // The call is still blocked: the reload completes anyway.
  auto reloaded = client->Reload("counter");
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  EXPECT_EQ(reloaded->outcome(), v1::RELOAD_OUTCOME_RELOADED) << reloaded->message();
  auto fresh = client->InvokeOnce("test.counter@1", "version", "");
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(fresh->response(), "v2");
  EXPECT_EQ(Call(*client, *instance, "version"),
            "FAILED_PRECONDITION INSTANCE_INVALIDATED_BY_RELOAD");

  ReleaseBlockedCall();
  auto answered = call.get();
  ASSERT_TRUE(answered.ok()) << answered.status();
  EXPECT_EQ(answered->response(), "v1") << "the old code stayed mapped for the call";
  auto info = client->GetHostInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->instance_count(), 0u) << "the call destroyed its instance when it returned";
  fresh = client->InvokeOnce("test.counter@1", "version", "");
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(fresh->response(), "v2");
}

// A long call holds up no reload of another bundle (the default drain timeout is 10 s).
TEST_F(RemoteCallsTest, ALongCallDoesNotHoldUpReloadsOfOtherBundles) {
  Copy("counter_v1");
  Copy("stateless");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  auto instance = client->CreateInstance("test.counter@1");
  ASSERT_TRUE(instance.ok()) << instance.status();
  auto call = StartBlockedCall(*client, *instance);
  ASSERT_FALSE(HasFailure());
  for (int i = 0; i < 3; ++i) {
    auto reloaded = client->Reload("stateless");
    ASSERT_TRUE(reloaded.ok()) << reloaded.status();
    EXPECT_EQ(reloaded->outcome(), v1::RELOAD_OUTCOME_RELOADED) << reloaded->message();
  }
  ReleaseBlockedCall();
  auto answered = call.get();
  ASSERT_TRUE(answered.ok()) << answered.status();
  EXPECT_EQ(answered->response(), "v1");
  EXPECT_EQ(Call(*client, *instance, "version"), "v1") << "its own bundle did not reload";
}

TEST_F(RemoteCallsTest, ACallPastItsDeadlineIsDeadlineExceededAndTheHostGoesOn) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  auto instance = client->CreateInstance("test.counter@1");
  ASSERT_TRUE(instance.ok()) << instance.status();
  client::CallOptions short_call;
  short_call.timeout = absl::Milliseconds(200);
  auto slow = client->Invoke(*instance, "sleep", "1500", short_call);
  EXPECT_TRUE(absl::IsDeadlineExceeded(slow.status())) << slow.status();
  EXPECT_EQ(Call(*client, *instance, "version"), "v1") << "other calls run meanwhile";
}

TEST_F(RemoteCallsTest, HandlesAndInstancesOfAnotherEpochAreRefused) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  auto handle = client->FindContract("test.counter@1");
  ASSERT_TRUE(handle.ok()) << handle.status();
  v1::ContractHandle old_epoch = *handle;
  old_epoch.set_host_epoch(handle->host_epoch() ^ 1);
  auto created = client->CreateInstance(old_epoch);
  EXPECT_EQ(client::FailureReasonOf(created.status()), v1::FAILURE_REASON_STALE_HANDLE);
  auto instance = client->CreateInstance(*handle);
  ASSERT_TRUE(instance.ok()) << instance.status();
  v1::InstanceRef foreign = *instance;
  foreign.set_host_epoch(instance->host_epoch() ^ 1);
  EXPECT_EQ(Call(*client, foreign, "version"), "NOT_FOUND INSTANCE_NOT_FOUND");
  auto empty_method = client->Invoke(*instance, "", "");
  EXPECT_TRUE(absl::IsInvalidArgument(empty_method.status())) << empty_method.status();
}

}  // namespace
}  // namespace polyplug::test
