// Operations with a client-chosen request_id against the real polyplug-host: a retry gets
// the first outcome and runs nothing again, a reused id is refused, and a caller that lost
// its response (it gave up while the reload ran) finds the outcome with GetOperation.
//
// A reload is held mid-way by a remote call in flight on the counter's "block" method,
// which the test releases through a FIFO: nothing sleeps.
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "host/host_calls.h"
#include "host/host_fixture.h"
#include "host/host_process_fixture.h"
#include "polyplug/host/v1/host.grpc.pb.h"
#include "support/bundle_fixture.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::polyplug::host::v1;
using ::testing::HasSubstr;

class RequestIdTest : public HostProcessTest {
 protected:
  CallResult<v1::ReloadResponse> ReloadWithId(const std::string& name, const std::string& id) {
    v1::ReloadRequest request;
    request.set_name(name);
    request.set_request_id(id);
    return Reload(request);
  }
  CallResult<v1::Operation> GetOperation(const std::string& id, bool wait = false) {
    v1::GetOperationRequest request;
    request.set_request_id(id);
    request.set_wait(wait);
    return Call<v1::GetOperationRequest, v1::Operation>(&v1::PluginHost::Stub::GetOperation,
                                                        request);
  }
};

TEST_F(RequestIdTest, ARetryGetsTheFirstOutcomeAndRunsNothingAgain) {
  const fs::path counter = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  OverwriteArtifact(TestBundleDir("counter_v2"), counter);
  const auto first = ReloadWithId("counter", "ci-123-deploy");
  ASSERT_TRUE(first.status.ok()) << ToString(first.status);
  ASSERT_EQ(first.response.outcome(), v1::RELOAD_OUTCOME_RELOADED);
  const uint64_t seq_after_first = HostInfo().last_seq();

  const auto retry = ReloadWithId("counter", "ci-123-deploy");
  ASSERT_TRUE(retry.status.ok()) << ToString(retry.status);
  EXPECT_THAT(retry.response, ProtoEq(first.response));
  EXPECT_EQ(HostInfo().last_seq(), seq_after_first) << "the retry ran the reload again";

  // GetOperation has it too.
  const auto op = GetOperation("ci-123-deploy");
  ASSERT_TRUE(op.status.ok()) << ToString(op.status);
  EXPECT_TRUE(op.response.done());
  EXPECT_EQ(op.response.method(), "Reload");
  EXPECT_EQ(op.response.code(), 0);
  EXPECT_THAT(op.response.reload(), ProtoEq(first.response));
  EXPECT_EQ(op.response.host_epoch(), host().epoch());

  // Without an id every call runs.
  ReloadOk("counter");
  EXPECT_GT(HostInfo().last_seq(), seq_after_first);
}

TEST_F(RequestIdTest, AnErrorIsRememberedToo) {
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const auto first = ReloadWithId("nope", "r-err");
  EXPECT_EQ(first.status.error_code(), grpc::StatusCode::NOT_FOUND) << ToString(first.status);
  const auto retry = ReloadWithId("nope", "r-err");
  EXPECT_EQ(retry.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(retry.status.error_message(), first.status.error_message());
  EXPECT_EQ(retry.trailing_reason, "BUNDLE_NOT_FOUND");
  const auto op = GetOperation("r-err");
  ASSERT_TRUE(op.status.ok()) << ToString(op.status);
  EXPECT_EQ(op.response.code(), static_cast<int>(grpc::StatusCode::NOT_FOUND));
  EXPECT_EQ(op.response.reason(), v1::FAILURE_REASON_BUNDLE_NOT_FOUND);
  EXPECT_EQ(op.response.message(), first.status.error_message());
}

TEST_F(RequestIdTest, AnIdUsedForAnotherRequestIsRefused) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  ASSERT_TRUE(ReloadWithId("counter", "r1").status.ok());
  // Another method with the same id.
  v1::UnloadBundleRequest unload;
  unload.set_name("counter");
  unload.set_request_id("r1");
  const auto refused = Call<v1::UnloadBundleRequest, v1::UnloadBundleResponse>(
      &v1::PluginHost::Stub::UnloadBundle, unload);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::ALREADY_EXISTS)
      << ToString(refused.status);
  EXPECT_EQ(ReasonTokenOf(refused.status), "REQUEST_ID_REUSED");
  EXPECT_THAT(refused.status.error_message(), HasSubstr("a Reload"));
  // The same method with other arguments.
  v1::ReloadRequest by_path;
  by_path.set_path((root() / "counter_v1").string());
  by_path.set_request_id("r1");
  EXPECT_EQ(Reload(by_path).status.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  // Nothing was unloaded.
  EXPECT_EQ(ListBundles().bundles_size(), 1);
  // Malformed ids.
  for (const std::string& bad : std::vector<std::string>{std::string(129, 'x'), "has space"}) {
    EXPECT_EQ(ReloadWithId("counter", bad).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
}

TEST_F(RequestIdTest, GetOperationOfAnUnknownIdIsNotFound) {
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const auto op = GetOperation("never-sent");
  EXPECT_EQ(op.status.error_code(), grpc::StatusCode::NOT_FOUND) << ToString(op.status);
  EXPECT_EQ(ReasonTokenOf(op.status), "OPERATION_NOT_FOUND");
  EXPECT_THAT(op.status.error_message(), HasSubstr("never-sent"));
}

// The CI case: the job's deadline passes while the reload runs. The reload goes on; a retry
// with the same id waits for it instead of starting another, and GetOperation reports it.
TEST_F(RequestIdTest, ACallerThatGaveUpMidReloadFindsItsOutcome) {
  const fs::path counter = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const fs::path fifos = scratch().path() / "fifos";
  ASSERT_NO_FATAL_FAILURE(MakeBlockFifos(fifos));
  auto reload_context = host().NewContext();
  std::future<CallResult<v1::InvokeResponse>> blocked;
  std::future<grpc::Status> reload;
  std::future<CallResult<v1::ReloadResponse>> retry;
  absl::Cleanup unblock = [&] {
    reload_context->TryCancel();
    ReleaseBlockedCallIfWaiting(fifos);
  };
  blocked = std::async(std::launch::async, [this, &fifos] {
    return Invoke("test.counter@1", "block", fifos.string());
  });
  ASSERT_TRUE(WaitForBlockedCall(fifos)) << "the blocking call did not start";
  v1::SubscribeReloadPhasesRequest watch_request;
  Subscription watch(host().stub(), watch_request, host().NewContext());

  OverwriteArtifact(TestBundleDir("counter_v2"), counter);
  reload = std::async(std::launch::async, [this, &reload_context] {
    v1::ReloadRequest request;
    request.set_name("counter");
    request.set_request_id("job-7");
    v1::ReloadResponse response;
    return host().stub().Reload(reload_context.get(), request, &response);
  });
  // PREPARING: the reload runs, and waits for the call in flight. (The log sees PREPARING
  // first; streams see it once the calls on the bundle drained.)
  ASSERT_TRUE(host().WaitForStderrLine("PREPARING counter").ok());
  // The caller gives up (its deadline, say).
  reload_context->TryCancel();
  EXPECT_EQ(reload.get().error_code(), grpc::StatusCode::CANCELLED);
  const auto running = GetOperation("job-7");
  ASSERT_TRUE(running.status.ok()) << ToString(running.status);
  EXPECT_FALSE(running.response.done());
  EXPECT_EQ(running.response.method(), "Reload");
  // A retry waits for the reload running rather than starting another; so does a stream
  // of the operation's events.
  retry = std::async(std::launch::async, [this] { return ReloadWithId("counter", "job-7"); });
  v1::SubscribeReloadPhasesRequest operation_request;
  operation_request.set_until_request_done("job-7");
  Subscription operation_stream(host().stub(), operation_request, host().NewContext());

  ReleaseBlockedCall(fifos);
  EXPECT_TRUE(blocked.get().status.ok());
  const auto retried = retry.get();
  ASSERT_TRUE(retried.status.ok()) << ToString(retried.status);
  EXPECT_EQ(retried.response.outcome(), v1::RELOAD_OUTCOME_RELOADED);
  auto preparing = watch.NextPhase();
  ASSERT_TRUE(preparing.has_value());
  EXPECT_EQ(preparing->phase(), v1::PHASE_PREPARING);
  EXPECT_EQ(retried.response.reload_id(), preparing->reload_id());
  const auto done = GetOperation("job-7", /*wait=*/true);
  ASSERT_TRUE(done.status.ok()) << ToString(done.status);
  EXPECT_TRUE(done.response.done());
  EXPECT_THAT(done.response.reload(), ProtoEq(retried.response));
  // One reload ran: PREPARING, RELOADED, and nothing after.
  auto reloaded = watch.NextPhase();
  ASSERT_TRUE(reloaded.has_value());
  EXPECT_EQ(reloaded->phase(), v1::PHASE_RELOADED);
  EXPECT_EQ(HostInfo().last_seq(), reloaded->seq());
  // The operation's stream got the same two events, then ended.
  const std::vector<v1::ReloadPhaseEvent> streamed = operation_stream.ReadToEnd();
  ASSERT_EQ(streamed.size(), 2u);
  EXPECT_THAT(streamed[0], ProtoEq(*preparing));
  EXPECT_THAT(streamed[1], ProtoEq(*reloaded));
  EXPECT_TRUE(operation_stream.Finish().ok());
}

// until_request_done: the events of one operation, for a client that lost its response.
TEST_F(RequestIdTest, AStreamOfAnEndedOperationSendsItsEventsAndEnds) {
  const fs::path counter = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  OverwriteArtifact(TestBundleDir("counter_v2"), counter);
  const auto reloaded = ReloadWithId("counter", "deploy-9");
  ASSERT_TRUE(reloaded.status.ok()) << ToString(reloaded.status);
  auto stream_of = [this](const std::string& id, std::vector<std::string> bundles = {}) {
    v1::SubscribeReloadPhasesRequest request;
    request.set_until_request_done(id);
    for (const std::string& name : bundles) request.add_bundle_names(name);
    return std::make_unique<Subscription>(host().stub(), request, host().NewContext());
  };
  auto stream = stream_of("deploy-9");
  const std::vector<v1::ReloadPhaseEvent> events = stream->ReadToEnd();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_THAT(events[0], ProtoEq(reloaded.response.events(0)));
  EXPECT_THAT(events[1], ProtoEq(reloaded.response.events(1)));
  EXPECT_TRUE(stream->Finish().ok());
  // The bundle filter applies.
  auto filtered = stream_of("deploy-9", {"other"});
  EXPECT_TRUE(filtered->ReadToEnd().empty());
  EXPECT_TRUE(filtered->Finish().ok());

  // An operation that failed ends the stream with its error.
  const auto missing = ReloadWithId("no-such-bundle", "deploy-10");
  ASSERT_EQ(missing.status.error_code(), grpc::StatusCode::NOT_FOUND) << ToString(missing.status);
  auto failed = stream_of("deploy-10");
  EXPECT_TRUE(failed->ReadToEnd().empty());
  const grpc::Status failed_status = failed->Finish();
  EXPECT_EQ(failed_status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(failed_status.error_message(), missing.status.error_message());

  // An id the host does not know, and a request that asks two things.
  auto unknown = stream_of("never-sent");
  EXPECT_TRUE(unknown->ReadToEnd().empty());
  const grpc::Status unknown_status = unknown->Finish();
  EXPECT_EQ(unknown_status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(ReasonTokenOf(unknown_status), "OPERATION_NOT_FOUND") << ToString(unknown_status);
  v1::SubscribeReloadPhasesRequest both;
  both.set_until_request_done("deploy-9");
  both.set_include_snapshot(true);
  Subscription refused(host().stub(), both, host().NewContext());
  EXPECT_TRUE(refused.ReadToEnd().empty());
  EXPECT_EQ(refused.Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

}  // namespace
}  // namespace polyplug::test
