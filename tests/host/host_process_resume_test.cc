// HostProcessTest, resuming SubscribeReloadPhases from a cursor: after a disconnect a stream
// gets exactly the events it missed, with nothing missed it waits for the next one, a long
// backlog still in the journal is replayed, a cursor ahead of the journal is refused, and one
// that fell out of it or comes from another epoch gets OUT_OF_RANGE (with include_snapshot
// the client resyncs instead).
//
// Each test starts its own host on a temporary bundle root holding copies of the test
// bundles it needs (HostProcessTest, host_process_fixture.h), so reloads can rewrite files
// freely. Nothing sleeps: the tests wait on stream reads, call completions and process exit.
#include <signal.h>
#include <sys/wait.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
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
using ::testing::IsEmpty;
using ::testing::SizeIs;

TEST_F(HostProcessTest, ResumeAfterDisconnectDeliversExactlyTheMissedEvents) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());

  v1::ReloadResponse first_reload;
  v1::ReloadPhaseEvent seen;
  {
    auto sub = SubscribeSynced();
    ASSERT_NE(sub, nullptr);
    first_reload = ReloadOk("counter");
    ASSERT_THAT(first_reload.events(), SizeIs(2));
    auto event = sub->NextPhase();
    ASSERT_TRUE(event.has_value()) << ToString(sub->Finish());
    seen = *event;
    EXPECT_THAT(seen, ProtoEq(first_reload.events(0)));
    sub->Cancel();
    EXPECT_EQ(sub->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  const v1::ReloadResponse second = ReloadOk("counter");
  const v1::ReloadResponse third = ReloadOk("counter");

  std::vector<v1::ReloadPhaseEvent> missed = {first_reload.events(1)};
  missed.insert(missed.end(), second.events().begin(), second.events().end());
  missed.insert(missed.end(), third.events().begin(), third.events().end());
  ASSERT_THAT(missed, SizeIs(5));

  v1::SubscribeReloadPhasesRequest request;
  request.mutable_resume_after()->set_host_epoch(seen.host_epoch());
  request.mutable_resume_after()->set_seq(seen.seq());
  request.set_max_events(static_cast<uint32_t>(missed.size()));
  auto resumed = Subscribe(request);
  const std::vector<v1::ReloadPhaseEvent> got = resumed->ReadToEnd();
  EXPECT_TRUE(resumed->Finish().ok()) << ToString(resumed->Finish());
  ExpectSameEvents(got, missed);
}

TEST_F(HostProcessTest, ResumeWithNothingMissedWaitsForTheNextEvent) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const v1::ReloadResponse reload = ReloadOk("counter");
  ASSERT_FALSE(reload.events().empty());
  // Resuming at the newest seq yields nothing old; with include_snapshot nothing would
  // tell us the host registered the stream, so end it with the next reload's events.
  v1::SubscribeReloadPhasesRequest request;
  request.mutable_resume_after()->set_host_epoch(host().epoch());
  request.mutable_resume_after()->set_seq(reload.events().rbegin()->seq());
  request.set_max_events(2);
  request.mutable_heartbeat_interval()->set_nanos(100'000'000);
  auto sub = Subscribe(request);
  // The first progress marker proves the stream is live and at the newest seq.
  auto progress = sub->Next();
  ASSERT_TRUE(progress.has_value()) << ToString(sub->Finish());
  EXPECT_EQ(Describe(*progress), "PROGRESS");
  EXPECT_EQ(progress->seq(), reload.events().rbegin()->seq());
  const v1::ReloadResponse next = ReloadOk("counter");
  std::vector<v1::ReloadPhaseEvent> phases;
  for (const v1::ReloadPhaseEvent& e : sub->ReadToEnd()) {
    if (e.kind() == v1::EVENT_KIND_PHASE) phases.push_back(e);
  }
  EXPECT_TRUE(sub->Finish().ok()) << ToString(sub->Finish());
  ExpectSameEvents(phases, EventsOf(next));
}

TEST_F(HostProcessTest, ResumeReplaysALongBacklogThatIsStillInTheJournal) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost({"--journal-size", "4096"}));
  const uint64_t start_seq = HostInfo().last_seq();
  constexpr size_t kReloads = 600;  // 1200 events: well inside a journal of 4096
  for (size_t i = 0; i < kReloads; ++i) {
    const auto reload = ReloadByName("counter");
    ASSERT_TRUE(reload.status.ok()) << "reload " << i << ": " << ToString(reload.status);
  }
  const v1::HostInfo info = HostInfo();
  ASSERT_EQ(info.last_seq(), start_seq + 2 * kReloads);
  ASSERT_LE(info.earliest_seq(), start_seq + 1) << info.ShortDebugString();

  v1::SubscribeReloadPhasesRequest request;
  request.mutable_resume_after()->set_host_epoch(host().epoch());
  request.mutable_resume_after()->set_seq(start_seq);
  request.set_max_events(2 * kReloads);
  auto sub = Subscribe(request);
  const auto got = sub->ReadToEnd();
  const grpc::Status status = sub->Finish();
  EXPECT_TRUE(status.ok()) << "a cursor inside the journal must resume: " << ToString(status);
  EXPECT_EQ(got.size(), 2 * kReloads);
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i].seq(), start_seq + 1 + i) << "event " << i;
  }
}

TEST_F(HostProcessTest, CursorThatFellOutOfTheJournalGetsOutOfRange) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost({"--journal-size", "4"}));
  const v1::HostInfo start = HostInfo();
  EXPECT_EQ(start.journal_capacity(), 4u);
  const uint64_t old_seq = start.last_seq();
  for (int i = 0; i < 3; ++i) ReloadOk("counter");  // 6 events through a ring of 4
  const v1::HostInfo now = HostInfo();
  EXPECT_EQ(now.last_seq(), old_seq + 6);
  ASSERT_GT(now.earliest_seq(), old_seq + 1) << now.ShortDebugString();
  EXPECT_EQ(now.earliest_seq(), now.last_seq() - 3) << now.ShortDebugString();

  {
    v1::SubscribeReloadPhasesRequest request;
    request.mutable_resume_after()->set_host_epoch(host().epoch());
    request.mutable_resume_after()->set_seq(old_seq);
    auto sub = Subscribe(request);
    const auto got = sub->ReadToEnd();
    EXPECT_THAT(Describe(got), IsEmpty()) << "no event may be delivered across a gap";
    const grpc::Status status = sub->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::OUT_OF_RANGE) << ToString(status);
    EXPECT_TRUE(ContainsNumber(status.error_message(), now.earliest_seq()))
        << "the message should name the earliest available seq " << now.earliest_seq() << ": "
        << ToString(status);
  }
  {
    // The oldest cursor still covered works and yields the whole ring.
    v1::SubscribeReloadPhasesRequest request;
    request.mutable_resume_after()->set_host_epoch(host().epoch());
    request.mutable_resume_after()->set_seq(now.earliest_seq() - 1);
    request.set_max_events(4);
    auto sub = Subscribe(request);
    const auto got = sub->ReadToEnd();
    EXPECT_TRUE(sub->Finish().ok()) << ToString(sub->Finish());
    EXPECT_THAT(SeqsOf(got), ElementsAre(now.earliest_seq(), now.earliest_seq() + 1,
                                         now.earliest_seq() + 2, now.earliest_seq() + 3));
  }
  {
    // A cursor ahead of the journal is refused, not silently skipped to.
    v1::SubscribeReloadPhasesRequest request;
    request.mutable_resume_after()->set_host_epoch(host().epoch());
    request.mutable_resume_after()->set_seq(now.last_seq() + 10);
    auto sub = Subscribe(request);
    const auto got = sub->ReadToEnd();
    EXPECT_THAT(Describe(got), IsEmpty());
    const grpc::Status status = sub->Finish();
    EXPECT_FALSE(status.ok());
    EXPECT_TRUE(status.error_code() == grpc::StatusCode::OUT_OF_RANGE ||
                status.error_code() == grpc::StatusCode::INVALID_ARGUMENT)
        << ToString(status);
  }
  {
    // A cursor from another host epoch (the host restarted).
    uint64_t other_epoch = host().epoch() + 1;
    if (other_epoch == 0) other_epoch = 1;
    v1::SubscribeReloadPhasesRequest request;
    request.mutable_resume_after()->set_host_epoch(other_epoch);
    request.mutable_resume_after()->set_seq(now.last_seq());
    auto sub = Subscribe(request);
    const auto got = sub->ReadToEnd();
    EXPECT_THAT(Describe(got), IsEmpty());
    const grpc::Status status = sub->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::OUT_OF_RANGE) << ToString(status);
    EXPECT_TRUE(ContainsNumber(status.error_message(), now.earliest_seq()))
        << "the message should name the earliest available seq " << now.earliest_seq() << ": "
        << ToString(status);
  }
}

TEST_F(HostProcessTest, CursorFromBeforeARestartGetsOutOfRange) {
  Copy("counter_v1");
  v1::Cursor cursor;
  {
    HostProcess first({"--bundles", root().string()});
    const absl::Status started = first.Start();
    ASSERT_TRUE(started.ok()) << started;
    cursor.set_host_epoch(first.epoch());
    cursor.set_seq(first.info_at_start().last_seq());
    first.Kill(SIGTERM);
    const int exit_status = first.WaitExit();
    EXPECT_TRUE(WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0)
        << DescribeWaitStatus(exit_status);
  }
  ASSERT_NO_FATAL_FAILURE(StartHost());
  EXPECT_NE(host().epoch(), cursor.host_epoch()) << "each start is a new epoch";
  v1::SubscribeReloadPhasesRequest request;
  *request.mutable_resume_after() = cursor;
  auto sub = Subscribe(request);
  EXPECT_THAT(Describe(sub->ReadToEnd()), IsEmpty());
  const grpc::Status status = sub->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::OUT_OF_RANGE) << ToString(status);
  // With include_snapshot the client resyncs instead.
  request.set_include_snapshot(true);
  Subscription resync(host().stub(), request, host().NewContext());
  std::vector<v1::ReloadPhaseEvent> snapshot;
  auto end = resync.ReadSnapshot(&snapshot);
  ASSERT_TRUE(end.has_value()) << ToString(resync.Finish());
  EXPECT_THAT(Describe(snapshot), ElementsAre("SNAPSHOT counter"));
  EXPECT_EQ(end->host_epoch(), host().epoch());
}

}  // namespace
}  // namespace polyplug::test
