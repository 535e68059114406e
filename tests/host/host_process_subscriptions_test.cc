// HostProcessTest, SubscribeReloadPhases streams: many subscribers on several connections
// get every event in order while others come and go, until_next_terminal and
// until_terminal_of_reload end a stream after the right reload, a bundle filter applies to
// the snapshot and the events, and heartbeats carry the current seq. Resume and cursors are
// in host_process_resume_test.cc; a subscriber that stops reading is the fault catalogue's
// FaultCatalogueTest.SubscriberThatNeverReadsIsCutAndOthersGetEveryEvent; the subscriber
// limit is in security/limits_test.cc.
//
// Each test starts its own host on a temporary bundle root holding copies of the test
// bundles it needs (HostProcessTest, host_process_fixture.h), so reloads can rewrite files
// freely. Nothing sleeps: the tests wait on stream reads, call completions and process exit.
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "host/host_calls.h"
#include "host/host_fixture.h"
#include "host/host_process_fixture.h"
#include "polyplug/host/v1/host.grpc.pb.h"

namespace polyplug::test {
namespace {

namespace v1 = ::polyplug::host::v1;
using ::testing::ElementsAre;
using ::testing::SizeIs;

// The host hands events out on several lanes (one per CPU); each stream keeps its lane,
// so streams that come and go between back-to-back reloads must not reorder or lose any.
TEST_F(HostProcessTest, ManySubscribersOnSeveralConnectionsGetEveryEventInOrder) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  std::vector<std::unique_ptr<v1::PluginHost::Stub>> stubs;
  for (int i = 0; i < 4; ++i) stubs.push_back(host().NewStub());
  std::vector<std::unique_ptr<Subscription>> subs;
  for (size_t i = 0; i < 200; ++i) {
    subs.push_back(SubscribeSynced({}, stubs[i % stubs.size()].get()));
    ASSERT_NE(subs.back(), nullptr) << "subscriber " << i;
  }

  std::vector<v1::ReloadPhaseEvent> first, second;
  for (int i = 0; i < 5; ++i) {
    const v1::ReloadResponse r = ReloadOk("counter");
    first.insert(first.end(), r.events().begin(), r.events().end());
  }
  // Every third subscriber leaves and three join, while the hand-out may still be running.
  for (size_t i = 0; i < subs.size(); i += 3) {
    subs[i]->Cancel();
    EXPECT_EQ(subs[i]->Finish().error_code(), grpc::StatusCode::CANCELLED) << "subscriber " << i;
    subs[i].reset();
  }
  for (int i = 0; i < 3; ++i) {
    subs.push_back(SubscribeSynced({}, stubs[i % stubs.size()].get()));
    ASSERT_NE(subs.back(), nullptr) << "joiner " << i;
  }
  for (int i = 0; i < 5; ++i) {
    const v1::ReloadResponse r = ReloadOk("counter");
    second.insert(second.end(), r.events().begin(), r.events().end());
  }
  std::vector<v1::ReloadPhaseEvent> all = first;
  all.insert(all.end(), second.begin(), second.end());
  ASSERT_THAT(all, SizeIs(20));

  for (size_t i = 0; i < subs.size(); ++i) {
    if (subs[i] == nullptr) continue;
    SCOPED_TRACE(absl::StrCat("subscriber ", i));
    const std::vector<v1::ReloadPhaseEvent>& expected = i < 200 ? all : second;
    ExpectSameEvents(subs[i]->ReadPhases(expected.size()), expected);
  }
}

TEST_F(HostProcessTest, UntilNextTerminalEndsTheStreamAfterTheReload) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  v1::SubscribeReloadPhasesRequest request;
  request.set_until_next_terminal(true);
  auto sub = SubscribeSynced(request);
  ASSERT_NE(sub, nullptr);
  const v1::ReloadResponse reload = ReloadOk("counter");
  const auto got = sub->ReadToEnd();
  const grpc::Status status = sub->Finish();
  EXPECT_TRUE(status.ok()) << ToString(status);
  ExpectSameEvents(got, EventsOf(reload));
}

TEST_F(HostProcessTest, UntilNextTerminalWaitsForThePrimaryOfACascade) {
  Copy("chain_a");
  Copy("chain_b");
  Copy("chain_c");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  v1::SubscribeReloadPhasesRequest all;
  all.set_until_next_terminal(true);
  auto sub_all = SubscribeSynced(all);
  ASSERT_NE(sub_all, nullptr);
  // Filtered to chain_b: its cascade terminal does not end the stream; only a primary
  // reload of chain_b does.
  v1::SubscribeReloadPhasesRequest only_b;
  only_b.set_until_next_terminal(true);
  only_b.add_bundle_names("chain_b");
  auto sub_b = SubscribeSynced(only_b);
  ASSERT_NE(sub_b, nullptr);

  const v1::ReloadResponse cascade = ReloadOk("chain_a");
  const auto got_all = sub_all->ReadToEnd();
  EXPECT_TRUE(sub_all->Finish().ok()) << ToString(sub_all->Finish());
  ExpectSameEvents(got_all, EventsOf(cascade));

  const v1::ReloadResponse primary_b = ReloadOk("chain_b");
  EXPECT_THAT(Describe(primary_b.events()), ElementsAre("PREPARING chain_b", "PREPARING chain_c",
                                                        "RELOADED chain_c", "RELOADED chain_b"));
  const auto got_b = sub_b->ReadToEnd();
  EXPECT_TRUE(sub_b->Finish().ok()) << ToString(sub_b->Finish());
  EXPECT_THAT(Describe(got_b), ElementsAre("PREPARING chain_b", "RELOADED chain_b",
                                           "PREPARING chain_b", "RELOADED chain_b"));
  ASSERT_THAT(got_b, SizeIs(4));
  EXPECT_EQ(got_b[3].seq(), primary_b.events().rbegin()->seq());
  EXPECT_EQ(got_b[3].parent_reload_id(), 0u);
}

TEST_F(HostProcessTest, UntilTerminalOfReloadEndsAfterThatReload) {
  Copy("chain_a");
  Copy("chain_b");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const uint64_t before = HostInfo().last_seq();
  const v1::ReloadResponse first = ReloadOk("chain_a");
  const v1::ReloadResponse second = ReloadOk("chain_a");
  // Replaying from before the first reload, the stream ends with that reload's terminal.
  v1::SubscribeReloadPhasesRequest request;
  request.mutable_resume_after()->set_host_epoch(host().epoch());
  request.mutable_resume_after()->set_seq(before);
  request.set_until_terminal_of_reload(first.reload_id());
  auto sub = Subscribe(request);
  const auto got = sub->ReadToEnd();
  EXPECT_TRUE(sub->Finish().ok()) << ToString(sub->Finish());
  ExpectSameEvents(got, EventsOf(first));
  EXPECT_NE(first.reload_id(), second.reload_id());
}

TEST_F(HostProcessTest, BundleNameFilterAppliesToSnapshotAndEvents) {
  Copy("counter_v1");
  Copy("chain_a");
  Copy("chain_b");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  v1::SubscribeReloadPhasesRequest request;
  request.set_include_snapshot(true);
  request.add_bundle_names("chain_b");
  request.set_max_events(2);
  Subscription sub(host().stub(), request, host().NewContext());
  std::vector<v1::ReloadPhaseEvent> snapshot;
  ASSERT_TRUE(sub.ReadSnapshot(&snapshot)) << ToString(sub.Finish());
  EXPECT_THAT(Describe(snapshot), ElementsAre("SNAPSHOT chain_b"));
  ReloadOk("counter");
  const v1::ReloadResponse cascade = ReloadOk("chain_a");
  const auto got = sub.ReadToEnd();
  EXPECT_TRUE(sub.Finish().ok()) << ToString(sub.Finish());
  std::vector<v1::ReloadPhaseEvent> expected;
  for (const auto& e : cascade.events()) {
    if (e.bundle_name() == "chain_b") expected.push_back(e);
  }
  ExpectSameEvents(got, expected);
}

TEST_F(HostProcessTest, HeartbeatCarriesTheCurrentSeq) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const v1::HostInfo info = HostInfo();
  v1::SubscribeReloadPhasesRequest request;
  request.mutable_heartbeat_interval()->set_nanos(100'000'000);
  auto sub = Subscribe(request);
  auto progress = sub->Next();
  ASSERT_TRUE(progress.has_value()) << ToString(sub->Finish());
  EXPECT_EQ(progress->kind(), v1::EVENT_KIND_PROGRESS) << progress->ShortDebugString();
  EXPECT_EQ(progress->seq(), info.last_seq());
  EXPECT_EQ(progress->host_epoch(), host().epoch());

  // After a reload the markers carry the new seq.
  const v1::ReloadResponse reload = ReloadOk("counter");
  ExpectSameEvents(sub->ReadPhases(2), EventsOf(reload));
  auto later = sub->Next();
  ASSERT_TRUE(later.has_value()) << ToString(sub->Finish());
  EXPECT_EQ(later->kind(), v1::EVENT_KIND_PROGRESS) << later->ShortDebugString();
  EXPECT_EQ(later->seq(), reload.events().rbegin()->seq());
}

}  // namespace
}  // namespace polyplug::test
