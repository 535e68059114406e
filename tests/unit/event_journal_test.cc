// EventJournal: sequencing, the bounded ring and its cursors, listeners, waiting.
#include "polyplug/core/event_journal.h"

#include <cstdint>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "unit/status_matchers.h"

namespace polyplug::core {
namespace {

using ::polyplug::testing::MessageMatches;
using ::polyplug::testing::StatusCodeIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr uint64_t kEpoch = 0x5eed5eed12345678ULL;

PhaseEvent MakeEvent(std::string bundle_name, Phase phase = Phase::kLoaded) {
  PhaseEvent event;
  event.phase = phase;
  event.bundle_name = std::move(bundle_name);
  return event;
}

std::vector<uint64_t> SeqsOf(const std::vector<PhaseEvent>& events) {
  std::vector<uint64_t> seqs;
  for (const PhaseEvent& event : events) seqs.push_back(event.seq);
  return seqs;
}

void AppendN(EventJournal& journal, int count) {
  for (int i = 0; i < count; ++i) journal.Append(MakeEvent("b" + std::to_string(i)));
}

TEST(EventJournalTest, EmptyJournalHasNoSeqs) {
  EventJournal journal(kEpoch, 8);
  EXPECT_EQ(journal.host_epoch(), kEpoch);
  EXPECT_EQ(journal.capacity(), 8u);
  EXPECT_EQ(journal.last_seq(), 0u);
  EXPECT_EQ(journal.earliest_seq(), 0u);
  ASSERT_OK_AND_ASSIGN(std::vector<PhaseEvent> events, journal.ReadAfter(0));
  EXPECT_THAT(events, IsEmpty());
}

TEST(EventJournalTest, AppendStampsEpochAndSeqStartingAtOne) {
  EventJournal journal(kEpoch, 8);
  PhaseEvent input = MakeEvent("counter", Phase::kPreparing);
  input.seq = 999;       // overwritten: the journal owns sequencing
  input.host_epoch = 7;  // overwritten: the journal owns the epoch
  const PhaseEvent stored = journal.Append(input);
  EXPECT_EQ(stored.seq, 1u);
  EXPECT_EQ(stored.host_epoch, kEpoch);
  EXPECT_EQ(stored.phase, Phase::kPreparing);
  EXPECT_EQ(stored.bundle_name, "counter");
  EXPECT_EQ(journal.last_seq(), 1u);
  EXPECT_EQ(journal.earliest_seq(), 1u);
}

TEST(EventJournalTest, SeqIsMonotonicWithoutGaps) {
  EventJournal journal(kEpoch, 64);
  for (uint64_t expected = 1; expected <= 20; ++expected) {
    EXPECT_EQ(journal.Append(MakeEvent("b")).seq, expected);
  }
  ASSERT_OK_AND_ASSIGN(std::vector<PhaseEvent> events, journal.ReadAfter(0));
  ASSERT_EQ(events.size(), 20u);
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].seq, i + 1);
    EXPECT_EQ(events[i].host_epoch, kEpoch);
  }
}

TEST(EventJournalTest, StampsTimestampOnlyWhenUnset) {
  EventJournal journal(kEpoch, 8);
  const PhaseEvent unset = journal.Append(MakeEvent("a"));
  EXPECT_NE(unset.timestamp_unix_nanos, 0);
  PhaseEvent preset = MakeEvent("b");
  preset.timestamp_unix_nanos = 1234567890;
  EXPECT_EQ(journal.Append(preset).timestamp_unix_nanos, 1234567890);
}

TEST(EventJournalTest, ReadAfterReturnsExactlyTheLaterEvents) {
  EventJournal journal(kEpoch, 16);
  AppendN(journal, 5);
  ASSERT_OK_AND_ASSIGN(std::vector<PhaseEvent> after2, journal.ReadAfter(2));
  EXPECT_THAT(SeqsOf(after2), ElementsAre(3, 4, 5));
  EXPECT_EQ(after2[0].bundle_name, "b2");
  ASSERT_OK_AND_ASSIGN(std::vector<PhaseEvent> after0, journal.ReadAfter(0));
  EXPECT_THAT(SeqsOf(after0), ElementsAre(1, 2, 3, 4, 5));
  ASSERT_OK_AND_ASSIGN(std::vector<PhaseEvent> after_last, journal.ReadAfter(5));
  EXPECT_THAT(after_last, IsEmpty());
}

TEST(EventJournalTest, ReadAfterHonoursMaxEvents) {
  EventJournal journal(kEpoch, 16);
  AppendN(journal, 5);
  ASSERT_OK_AND_ASSIGN(std::vector<PhaseEvent> first_two, journal.ReadAfter(1, 2));
  EXPECT_THAT(SeqsOf(first_two), ElementsAre(2, 3));
}

TEST(EventJournalTest, RingKeepsOnlyTheNewestCapacityEvents) {
  EventJournal journal(kEpoch, 4);
  AppendN(journal, 10);
  EXPECT_EQ(journal.last_seq(), 10u);
  EXPECT_EQ(journal.earliest_seq(), 7u);
  // A cursor right before the earliest held event loses nothing.
  ASSERT_OK_AND_ASSIGN(std::vector<PhaseEvent> events, journal.ReadAfter(6));
  EXPECT_THAT(SeqsOf(events), ElementsAre(7, 8, 9, 10));
}

TEST(EventJournalTest, CursorThatFellOutOfTheRingIsOutOfRange) {
  EventJournal journal(kEpoch, 4);
  AppendN(journal, 10);
  // Event 6 is gone, so a reader at 5 would silently miss it.
  const auto result = journal.ReadAfter(5);
  EXPECT_THAT(result, StatusCodeIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(result, MessageMatches(HasSubstr("7")));
  EXPECT_THAT(journal.ReadAfter(0), StatusCodeIs(absl::StatusCode::kOutOfRange));
}

TEST(EventJournalTest, OutOfRangeMessageNamesTheEarliestAvailableSeq) {
  EventJournal journal(kEpoch, 3);
  AppendN(journal, 1000);
  ASSERT_EQ(journal.earliest_seq(), 998u);
  EXPECT_THAT(journal.ReadAfter(100), MessageMatches(HasSubstr("998")));
}

TEST(EventJournalTest, CursorAheadOfTheJournalIsInvalidArgument) {
  EventJournal journal(kEpoch, 4);
  EXPECT_THAT(journal.ReadAfter(1), StatusCodeIs(absl::StatusCode::kInvalidArgument));
  AppendN(journal, 3);
  EXPECT_THAT(journal.ReadAfter(4), StatusCodeIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(journal.ReadAfter(UINT64_MAX), StatusCodeIs(absl::StatusCode::kInvalidArgument));
}

TEST(EventJournalTest, ListenersRunInRegistrationOrderWithTheStoredEvent) {
  EventJournal journal(kEpoch, 8);
  std::vector<std::string> calls;
  journal.AddListener(
      [&calls](const PhaseEvent& event) { calls.push_back("first:" + std::to_string(event.seq)); });
  journal.AddListener([&calls](const PhaseEvent& event) {
    calls.push_back("second:" + std::to_string(event.seq));
    EXPECT_EQ(event.host_epoch, kEpoch);
  });
  journal.Append(MakeEvent("a"));
  journal.Append(MakeEvent("b"));
  EXPECT_THAT(calls, ElementsAre("first:1", "second:1", "first:2", "second:2"));
}

TEST(EventJournalTest, ListenerSeesOnlyLaterAppends) {
  EventJournal journal(kEpoch, 8);
  AppendN(journal, 2);
  std::vector<uint64_t> seen;
  journal.AddListener([&seen](const PhaseEvent& event) { seen.push_back(event.seq); });
  AppendN(journal, 1);
  EXPECT_THAT(seen, ElementsAre(3));
}

TEST(EventJournalTest, RemovedListenerIsNotCalledAgain) {
  EventJournal journal(kEpoch, 8);
  std::vector<std::string> calls;
  const EventJournal::ListenerId removed =
      journal.AddListener([&calls](const PhaseEvent&) { calls.push_back("removed"); });
  const EventJournal::ListenerId kept =
      journal.AddListener([&calls](const PhaseEvent&) { calls.push_back("kept"); });
  EXPECT_NE(removed, kept);
  journal.Append(MakeEvent("a"));
  journal.RemoveListener(removed);
  journal.Append(MakeEvent("b"));
  EXPECT_THAT(calls, ElementsAre("removed", "kept", "kept"));
  journal.RemoveListener(kept);
  journal.Append(MakeEvent("c"));
  EXPECT_EQ(calls.size(), 3u);
}

TEST(EventJournalTest, RemovingAnUnknownListenerIsHarmless) {
  EventJournal journal(kEpoch, 8);
  int calls = 0;
  const EventJournal::ListenerId id = journal.AddListener([&calls](const PhaseEvent&) { ++calls; });
  journal.RemoveListener(id + 1000);
  journal.Append(MakeEvent("a"));
  EXPECT_EQ(calls, 1);
}

// Listeners run without the journal lock, so one may read the journal (a remote
// subscriber catching up does exactly this). A held lock would deadlock here.
TEST(EventJournalTest, ListenerMayReadTheJournal) {
  EventJournal journal(kEpoch, 8);
  std::vector<uint64_t> read_back;
  uint64_t last_seq_in_listener = 0;
  journal.AddListener([&](const PhaseEvent& event) {
    last_seq_in_listener = journal.last_seq();
    auto events = journal.ReadAfter(event.seq - 1);
    ASSERT_TRUE(events.ok()) << events.status();
    read_back = SeqsOf(*events);
  });
  journal.Append(MakeEvent("a"));
  EXPECT_EQ(last_seq_in_listener, 1u);
  EXPECT_THAT(read_back, ElementsAre(1));
}

TEST(EventJournalTest, ListenerMayRemoveItself) {
  EventJournal journal(kEpoch, 8);
  int calls = 0;
  EventJournal::ListenerId id = 0;
  id = journal.AddListener([&](const PhaseEvent&) {
    ++calls;
    journal.RemoveListener(id);
  });
  journal.Append(MakeEvent("a"));
  journal.Append(MakeEvent("b"));
  EXPECT_EQ(calls, 1);
}

TEST(EventJournalTest, AwaitAfterWithZeroTimeoutIsFalseWhenNothingIsNew) {
  EventJournal journal(kEpoch, 8);
  EXPECT_FALSE(journal.AwaitAfter(0, absl::ZeroDuration()));
  AppendN(journal, 2);
  EXPECT_FALSE(journal.AwaitAfter(2, absl::ZeroDuration()));
}

TEST(EventJournalTest, AwaitAfterIsTrueAtOnceWhenANewerEventExists) {
  EventJournal journal(kEpoch, 8);
  AppendN(journal, 2);
  EXPECT_TRUE(journal.AwaitAfter(1, absl::ZeroDuration()));
  EXPECT_TRUE(journal.AwaitAfter(0, absl::ZeroDuration()));
}

TEST(EventJournalTest, AwaitAfterReturnsTrueOnceAnotherThreadAppends) {
  EventJournal journal(kEpoch, 8);
  AppendN(journal, 1);
  std::promise<void> waiter_started;
  std::future<bool> woke = std::async(std::launch::async, [&] {
    waiter_started.set_value();
    // The bound only keeps a broken wake-up from hanging the suite; it is not a
    // timing assertion.
    return journal.AwaitAfter(1, absl::Minutes(5));
  });
  waiter_started.get_future().wait();
  journal.Append(MakeEvent("wake"));
  EXPECT_TRUE(woke.get());
}

TEST(EventJournalTest, ConcurrentAppendsGetDistinctContiguousSeqs) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 250;
  EventJournal journal(kEpoch, kThreads * kPerThread);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&journal] { AppendN(journal, kPerThread); });
  }
  for (std::thread& thread : threads) thread.join();
  ASSERT_EQ(journal.last_seq(), static_cast<uint64_t>(kThreads * kPerThread));
  ASSERT_OK_AND_ASSIGN(std::vector<PhaseEvent> events, journal.ReadAfter(0));
  ASSERT_EQ(events.size(), static_cast<size_t>(kThreads * kPerThread));
  for (size_t i = 0; i < events.size(); ++i) EXPECT_EQ(events[i].seq, i + 1);
}

}  // namespace
}  // namespace polyplug::core
