// client::Subscription with Delivery::kPoll against a real polyplug-host: an editor-style
// loop runs the handlers on its own thread through Poll(), sees what a subscription with its
// own thread sees, and an application that stops polling costs bounded memory: the
// subscription drops what waits, resyncs, and replays the transitions it dropped.
#include <algorithm>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "client/client_fixture.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "polyplug/client/host_client.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::polyplug::host::v1;
using ::testing::Contains;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::SizeIs;

using SubscriptionPollTest = ClientTest;

std::string ThisThread() {
  std::ostringstream out;
  out << std::this_thread::get_id();
  return out.str();
}

bool HasLine(const SubscriptionLog& log, absl::string_view line) {
  const std::vector<std::string> lines = log.lines();
  return std::find(lines.begin(), lines.end(), line) != lines.end();
}

// The editor's loop: polls `subscription` on this thread until `done()` holds. Each turn
// waits (without spinning) until something is ready. False, with the lines so far in the
// failure, if `done` does not hold within kCallDeadline.
bool PollUntil(client::Subscription& subscription, const SubscriptionLog& log,
               absl::string_view what, const std::function<bool()>& done) {
  const absl::Time give_up = absl::Now() + absl::FromChrono(kCallDeadline);
  while (!done()) {
    if (absl::Now() > give_up) {
      ADD_FAILURE() << "gave up polling for " << what << "; the handlers ran:\n  "
                    << absl::StrJoin(log.lines(), "\n  ");
      return false;
    }
    subscription.PollFor(absl::Milliseconds(200));
  }
  return true;
}

TEST_F(SubscriptionPollTest, AnEditorLoopPollingSeesTheSameEventsInOrderAsAThreadedSubscription) {
  const fs::path counter = Copy("counter_v1");
  Copy("stateless");
  Copy("chain_a");
  Copy("chain_b");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  SubscriptionLog threaded, polled;
  auto own_thread = client->Subscribe(threaded.Handlers());
  client::SubscribeOptions options;
  options.delivery = client::Delivery::kPoll;
  auto polling = client->Subscribe(polled.Handlers(), options);
  const std::string initial = "RESYNCED INITIAL chain_a,chain_b,counter,stateless";
  ASSERT_TRUE(threaded.WaitForLine(initial));
  ASSERT_TRUE(PollUntil(*polling, polled, initial, [&] { return HasLine(polled, initial); }));

  // A reload, a cascade, an unload, a load and a failed reload.
  OverwriteArtifact(TestBundleDir("counter_v2"), counter);
  ASSERT_NO_FATAL_FAILURE(ReloadOk(*client, "counter"));
  ASSERT_NO_FATAL_FAILURE(ReloadOk(*client, "chain_a"));
  ASSERT_TRUE(client->UnloadBundle("stateless", false).ok());
  ASSERT_TRUE(client->LoadBundle((root() / "stateless").string()).ok());
  WriteFile(counter / "libcounter.so", "not an ELF file");
  auto failed = client->Reload("counter");
  ASSERT_TRUE(failed.ok()) << failed.status();
  ASSERT_EQ(failed->outcome(), v1::RELOAD_OUTCOME_FAILED);
  constexpr size_t kEvents = 2 + 4 + 1 + 1 + 2;
  ASSERT_TRUE(threaded.WaitForEvents(kEvents));

  // Nothing ran on the polling side meanwhile: its handlers run only inside Poll().
  EXPECT_THAT(polled.events(), IsEmpty());
  EXPECT_TRUE(polling->WaitReady(absl::FromChrono(kCallDeadline)));
  EXPECT_GT(polling->pending(), 0u);
  ASSERT_TRUE(PollUntil(*polling, polled, absl::StrCat(kEvents, " events"),
                        [&] { return polled.events().size() >= kEvents; }));

  EXPECT_THAT(
      Describe(threaded.events()),
      ElementsAre("PREPARING counter", "RELOADED counter", "PREPARING chain_a", "PREPARING chain_b",
                  "RELOADED chain_b", "RELOADED chain_a", "UNLOADING stateless", "LOADED stateless",
                  "PREPARING counter", "FAILED counter"));
  EXPECT_EQ(polled.lines(), threaded.lines());
  EXPECT_EQ(polled.events(), threaded.events()) << "field by field, seq included";
  EXPECT_EQ(polled.resyncs().size(), 1u);
  // Every handler of the polling subscription ran on this thread, the editor's; the other
  // subscription's on its own.
  EXPECT_THAT(polled.handler_threads(), Each(ThisThread()));
  EXPECT_THAT(threaded.handler_threads(), Each(::testing::Ne(ThisThread())));
  // (The threaded cursor moves just after its handler returned, so compare with the event.)
  EXPECT_EQ(polling->cursor(), (client::Cursor{host().epoch(), threaded.events().back().seq}));
  EXPECT_EQ(polling->dropped(), 0u);
  EXPECT_EQ(polling->Poll(), 0u) << "nothing left";
}

TEST_F(SubscriptionPollTest, PollReturnsHowManyHandlersRanAndCursorMovesOnlyAsTheyRun) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  SubscriptionLog log;
  std::mutex mu;
  std::condition_variable queued;
  client::SubscribeOptions options;
  options.delivery = client::Delivery::kPoll;
  options.heartbeat = absl::Hours(1);  // no progress marker among the deliveries counted
  options.on_ready = [&] {
    std::lock_guard<std::mutex> lock(mu);
    queued.notify_all();
  };
  auto subscription = client->Subscribe(log.Handlers(), options);
  ASSERT_TRUE(subscription->WaitReady(absl::FromChrono(kCallDeadline)));
  ASSERT_TRUE(PollUntil(*subscription, log, "the snapshot",
                        [&] { return HasLine(log, "RESYNCED INITIAL counter"); }));
  EXPECT_THAT(log.lines(), ElementsAre("CONNECTED", "RESYNCED INITIAL counter"));
  const client::Cursor synced = *subscription->cursor();
  ASSERT_NO_FATAL_FAILURE(ReloadOk(*client, "counter"));
  {
    // Both events are queued; the cursor has not moved, no handler ran.
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(queued.wait_for(lock, kCallDeadline, [&] { return subscription->pending() >= 2; }));
  }
  EXPECT_EQ(subscription->pending(), 2u);
  EXPECT_EQ(subscription->cursor(), synced);
  EXPECT_THAT(log.events(), IsEmpty());
  EXPECT_EQ(subscription->Poll(), 2u);
  EXPECT_THAT(Describe(log.events()), ElementsAre("PREPARING counter", "RELOADED counter"));
  EXPECT_EQ(subscription->cursor(), (client::Cursor{synced.host_epoch, synced.seq + 2}));
  EXPECT_EQ(subscription->Poll(), 0u);
  EXPECT_FALSE(subscription->WaitReady(absl::ZeroDuration()));
}

TEST_F(SubscriptionPollTest, AHandlerRunByPollMayDestroyItsSubscription) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  std::unique_ptr<client::Subscription> subscription;
  bool destroyed = false;
  client::PhaseHandlers handlers;
  handlers.on_resynced = [&](const client::Resynced&) {
    EXPECT_EQ(subscription->Poll(), 0u) << "Poll from a handler runs nothing";
    subscription.reset();
    destroyed = true;
  };
  client::SubscribeOptions options;
  options.delivery = client::Delivery::kPoll;
  subscription = client->Subscribe(std::move(handlers), options);
  client::Subscription* raw = subscription.get();
  const absl::Time give_up = absl::Now() + absl::FromChrono(kCallDeadline);
  while (!destroyed && absl::Now() < give_up) raw->PollFor(absl::Milliseconds(200));
  EXPECT_TRUE(destroyed);
  EXPECT_EQ(subscription, nullptr);
}

// An application that stops polling: at most max_pending deliveries wait; one more drops
// them and the stream, the subscription subscribes again from a snapshot, and the next Poll()
// runs the transitions the handlers missed, flagged synthetic, then the FELL_BEHIND resync.
TEST_F(SubscriptionPollTest, AnApplicationThatStopsPollingCostsBoundedMemoryAndResyncs) {
  const fs::path counter = Copy("counter_v1");
  Copy("stateless");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  SubscriptionLog log;
  constexpr size_t kMaxPending = 4;
  std::mutex mu;
  std::condition_variable queued;
  size_t most_pending = 0;
  client::Subscription* self = nullptr;
  client::SubscribeOptions options;
  options.delivery = client::Delivery::kPoll;
  options.max_pending = kMaxPending;
  options.heartbeat = absl::Hours(1);  // no progress markers in the queue
  options.on_ready = [&] {
    std::lock_guard<std::mutex> lock(mu);
    if (self != nullptr) most_pending = std::max(most_pending, self->pending());
    queued.notify_all();
  };
  std::unique_ptr<client::Subscription> subscription;
  {
    std::lock_guard<std::mutex> lock(mu);
    subscription = client->Subscribe(log.Handlers(), options);
    self = subscription.get();
  }
  ASSERT_TRUE(PollUntil(*subscription, log, "the snapshot",
                        [&] { return HasLine(log, "RESYNCED INITIAL counter,stateless"); }));
  const size_t before = log.lines().size();

  // Ten events while the application does not poll: the fifth overflows the buffer.
  OverwriteArtifact(TestBundleDir("counter_v2"), counter);
  ASSERT_NO_FATAL_FAILURE(ReloadOk(*client, "counter"));       // 2 events
  ASSERT_TRUE(client->UnloadBundle("stateless", false).ok());  // 1
  const fs::path chain_a = Copy("chain_a");
  ASSERT_TRUE(client->LoadBundle(chain_a.string()).ok());                             // 1
  for (int i = 0; i < 3; ++i) ASSERT_NO_FATAL_FAILURE(ReloadOk(*client, "counter"));  // 6
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(queued.wait_for(lock, kCallDeadline, [&] {
      return subscription->dropped() > 0 && subscription->pending() > 0;
    })) << "the buffer never overflowed";
  }
  EXPECT_EQ(log.lines().size(), before) << "no handler ran without Poll()";
  auto info = client->GetHostInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  ASSERT_TRUE(PollUntil(*subscription, log, "the last event", [&] {
    return subscription->cursor() && subscription->cursor()->seq == info->last_seq();
  }));

  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_LE(most_pending, kMaxPending);
    self = nullptr;
  }
  EXPECT_GE(subscription->dropped(), kMaxPending + 1);
  std::vector<std::string> lines = log.lines();
  lines.erase(lines.begin(), lines.begin() + static_cast<std::ptrdiff_t>(before));
  // The missed transitions relative to what the handlers were told (the initial snapshot),
  // unloadings first, then in name order; then the resync; then whatever came after it,
  // as it happened.
  ASSERT_GE(lines.size(), 4u) << absl::StrJoin(lines, "\n");
  EXPECT_THAT(std::vector<std::string>(lines.begin(), lines.begin() + 4),
              ElementsAre("UNLOADING stateless (synthetic)", "LOADED chain_a (synthetic)",
                          "RELOADED counter (synthetic)", "RESYNCED FELL_BEHIND chain_a,counter"))
      << absl::StrJoin(lines, "\n");
  // After the resync the events come as they happened (a drop while this loop polls would
  // resync again, with nothing left to synthesize).
  for (size_t i = 4; i < lines.size(); ++i) {
    EXPECT_THAT(lines[i], ::testing::AnyOf("PREPARING counter", "RELOADED counter",
                                           "RESYNCED FELL_BEHIND chain_a,counter"))
        << absl::StrJoin(lines, "\n");
  }
  const std::vector<client::PhaseEvent> events = log.events();
  ASSERT_GE(log.resyncs().size(), 2u);
  const client::Resynced resync = log.resyncs()[1];
  EXPECT_EQ(resync.cause, client::ResyncCause::kFellBehind);
  ASSERT_GE(events.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(events[i].synthetic);
    EXPECT_EQ(events[i].host_epoch, resync.host_epoch);
    EXPECT_EQ(events[i].seq, resync.seq);
    EXPECT_EQ(events[i].reload_id, 0u);
  }
  EXPECT_EQ(events[0].bundle_version, (client::Version{1, 0, 0})) << "the version it had";
  EXPECT_EQ(events[2].bundle_version, (client::Version{2, 0, 0})) << "the version it has";
  for (size_t i = 3; i < events.size(); ++i) EXPECT_FALSE(events[i].synthetic);
}

}  // namespace
}  // namespace polyplug::test
