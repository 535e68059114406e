// Journal cursors against the real polyplug-host: listings carry the position they are
// current at, so that list-then-watch has no gap; a cursor out of range says where to
// resume in a google.rpc.ErrorInfo a machine can read; and a wait for the end of a reload
// cannot miss an end that came before it.
#include <future>
#include <string>

#include "absl/cleanup/cleanup.h"
#include "gmock/gmock.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
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
using ::testing::ElementsAre;
using ::testing::IsEmpty;

// The ErrorInfo in a status's details; fails the test when there is none.
google::rpc::ErrorInfo ErrorInfoOf(const grpc::Status& status) {
  google::rpc::Status details;
  google::rpc::ErrorInfo info;
  EXPECT_TRUE(details.ParseFromString(status.error_details())) << ToString(status);
  for (const auto& any : details.details()) {
    if (any.UnpackTo(&info)) return info;
  }
  ADD_FAILURE() << "no google.rpc.ErrorInfo in " << ToString(status);
  return info;
}

class CursorTest : public HostProcessTest {
 protected:
  std::unique_ptr<Subscription> Subscribe(v1::SubscribeReloadPhasesRequest request) {
    return std::make_unique<Subscription>(host().stub(), request, host().NewContext());
  }
};

TEST_F(CursorTest, WatchingFromAListingsCursorMissesNothing) {
  const fs::path counter = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const v1::ListBundlesResponse list = ListBundles();
  ASSERT_EQ(list.bundles_size(), 1);
  EXPECT_EQ(list.cursor().host_epoch(), host().epoch());
  EXPECT_EQ(list.cursor().seq(), HostInfo().last_seq());
  // A reload after the listing and before the watch starts: the watch still sees it.
  OverwriteArtifact(TestBundleDir("counter_v2"), counter);
  const v1::ReloadResponse reload = ReloadOk("counter");
  v1::SubscribeReloadPhasesRequest request;
  *request.mutable_resume_after() = list.cursor();
  request.set_until_terminal_of_reload(reload.reload_id());
  auto watch = Subscribe(request);
  EXPECT_THAT(Describe(watch->ReadToEnd()), ElementsAre("PREPARING counter", "RELOADED counter"));
  EXPECT_TRUE(watch->Finish().ok());

  v1::ListContractsRequest contracts_request;
  const auto contracts = Call<v1::ListContractsRequest, v1::ListContractsResponse>(
      &v1::PluginHost::Stub::ListContracts, contracts_request);
  ASSERT_TRUE(contracts.status.ok()) << ToString(contracts.status);
  EXPECT_EQ(contracts.response.cursor().seq(), HostInfo().last_seq());
}

// An unload announces UNLOADING, then waits for the calls in flight before the bundle goes:
// a listing in between is current at UNLOADING, so it must not list the bundle.
TEST_F(CursorTest, AListingDuringAnUnloadIsCurrentAtItsUnloadingEvent) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const fs::path fifos = scratch().path() / "fifos";
  ASSERT_NO_FATAL_FAILURE(MakeBlockFifos(fifos));
  std::future<CallResult<v1::InvokeResponse>> blocked;
  std::future<CallResult<v1::UnloadBundleResponse>> unload;
  absl::Cleanup unblock = [&] { ReleaseBlockedCallIfWaiting(fifos); };
  blocked = std::async(std::launch::async, [this, &fifos] {
    return Invoke("test.counter@1", "block", fifos.string());
  });
  ASSERT_TRUE(WaitForBlockedCall(fifos));
  unload = std::async(std::launch::async, [this] {
    v1::UnloadBundleRequest request;
    request.set_name("counter");
    return Call<v1::UnloadBundleRequest, v1::UnloadBundleResponse>(
        &v1::PluginHost::Stub::UnloadBundle, request);
  });
  ASSERT_TRUE(host().WaitForStderrLine("UNLOADING counter").ok());
  const v1::ListBundlesResponse during = ListBundles();
  EXPECT_THAT(BundleNames(during), IsEmpty());
  EXPECT_EQ(during.cursor().seq(), HostInfo().last_seq());
  ReleaseBlockedCall(fifos);
  EXPECT_TRUE(blocked.get().status.ok());
  EXPECT_TRUE(unload.get().status.ok());
}

TEST_F(CursorTest, ACursorOutOfRangeSaysWhereToResumeInErrorInfo) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost({"--journal-size", "4"}));
  for (int i = 0; i < 4; ++i) ReloadOk("counter");  // 1 + 8 events: seq 1..4 are gone
  const v1::HostInfo info = HostInfo();

  v1::SubscribeReloadPhasesRequest request;
  request.mutable_resume_after()->set_host_epoch(host().epoch());
  request.mutable_resume_after()->set_seq(1);
  auto stale = Subscribe(request);
  EXPECT_THAT(stale->ReadToEnd(), IsEmpty());
  grpc::Status status = stale->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::OUT_OF_RANGE) << ToString(status);
  google::rpc::ErrorInfo error = ErrorInfoOf(status);
  EXPECT_EQ(error.reason(), "CURSOR_OUT_OF_RANGE");
  EXPECT_EQ(error.metadata().at("host_epoch"), absl::StrCat(host().epoch()));
  EXPECT_EQ(error.metadata().at("earliest_seq"), absl::StrCat(info.last_seq() - 3));
  EXPECT_EQ(error.metadata().at("resume_after_seq"), absl::StrCat(info.last_seq() - 4));

  // From another epoch: the same metadata.
  request.mutable_resume_after()->set_host_epoch(host().epoch() + 1);
  auto other = Subscribe(request);
  other->ReadToEnd();
  status = other->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::OUT_OF_RANGE) << ToString(status);
  error = ErrorInfoOf(status);
  EXPECT_EQ(error.metadata().at("host_epoch"), absl::StrCat(host().epoch()));
  EXPECT_EQ(error.metadata().at("resume_after_seq"), absl::StrCat(info.last_seq() - 4));
}

TEST_F(CursorTest, WaitingForTheEndOfAReloadThatAlreadyEndedEndsAtOnce) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const v1::ReloadResponse reload = ReloadOk("counter");
  ReloadOk("counter");  // a later reload is not replayed
  v1::SubscribeReloadPhasesRequest request;
  request.set_until_terminal_of_reload(reload.reload_id());
  auto watch = Subscribe(request);
  const auto events = watch->ReadToEnd();
  EXPECT_THAT(Describe(events), ElementsAre("PREPARING counter", "RELOADED counter"));
  for (const auto& e : events) EXPECT_EQ(e.root_reload_id(), reload.reload_id());
  EXPECT_TRUE(watch->Finish().ok());
}

}  // namespace
}  // namespace polyplug::test
