// client::Subscription against a real polyplug-host: the in-process on_reload events,
// delivered in seq order on the subscription's thread, across dropped connections, host
// restarts (kill -9) and a journal that no longer reaches back.
#include <signal.h>

#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/client_fixture.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "polyplug/client/host_client.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::polyplug::host::v1;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;

using ClientSubscriptionTest = ClientTest;

TEST_F(ClientSubscriptionTest, DeliversTheReloadPhasesInSeqOrderOnItsOwnThread) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  SubscriptionLog log;
  auto subscription = client->Subscribe(log.Handlers());
  ASSERT_TRUE(log.WaitForLine("RESYNCED INITIAL counter"));
  EXPECT_THAT(log.lines(), ElementsAre("CONNECTED", "RESYNCED INITIAL counter"));
  const client::Resynced initial = log.resyncs().at(0);
  EXPECT_EQ(initial.host_epoch, host().epoch());
  EXPECT_EQ(initial.seq, host().info_at_start().last_seq());
  ASSERT_THAT(initial.bundles, SizeIs(1));
  EXPECT_EQ(initial.bundles[0].version, (client::Version{1, 0, 0}));
  EXPECT_TRUE(subscription->connected());

  OverwriteArtifact(TestBundleDir("counter_v2"), root() / "counter_v1");
  auto response = client->Reload("counter");
  ASSERT_TRUE(response.ok()) << response.status();
  ASSERT_TRUE(log.WaitForEvents(2));
  const std::vector<client::PhaseEvent> events = log.events();
  EXPECT_THAT(Describe(events), ElementsAre("PREPARING counter", "RELOADED counter"));
  // The stream carries exactly the events the Reload response lists, field by field.
  ASSERT_EQ(response->events_size(), 2);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(events[i], client::PhaseEventFromProto(response->events(i))) << "event " << i;
  }
  EXPECT_EQ(events[0].seq, initial.seq + 1);
  EXPECT_EQ(events[1].seq, initial.seq + 2);
  EXPECT_EQ(events[1].bundle_version, (client::Version{2, 0, 0}));
  EXPECT_EQ(events[0].root_reload_id, response->reload_id());
  EXPECT_GT(events[1].timestamp_unix_nanos, 0);
  // One thread of the subscription's own delivers everything.
  std::ostringstream me;
  me << std::this_thread::get_id();
  const std::vector<std::string> threads = log.handler_threads();
  ASSERT_THAT(threads, SizeIs(2));
  EXPECT_EQ(threads[0], threads[1]);
  EXPECT_NE(threads[0], me.str());
}

TEST_F(ClientSubscriptionTest, CursorNamesTheLastEventWhoseHandlerReturned) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  // Each handler records the cursor it sees: the event before its own.
  std::mutex mu;
  std::vector<std::optional<client::Cursor>> seen;
  client::Subscription* self = nullptr;
  SubscriptionLog log;
  client::PhaseHandlers handlers = log.Handlers();
  auto record_then = [&](std::function<void(const client::PhaseEvent&)> next) {
    return [&, next](const client::PhaseEvent& e) {
      {
        std::lock_guard<std::mutex> lock(mu);
        seen.push_back(self->cursor());
      }
      next(e);
    };
  };
  handlers.on_preparing = record_then(handlers.on_preparing);
  handlers.on_reloaded = record_then(handlers.on_reloaded);
  std::unique_ptr<client::Subscription> subscription;
  {
    std::lock_guard<std::mutex> lock(mu);
    subscription = client->Subscribe(std::move(handlers));
    self = subscription.get();
  }
  ASSERT_TRUE(log.WaitForLine("RESYNCED INITIAL counter"));
  const uint64_t synced = log.resyncs().at(0).seq;
  ASSERT_TRUE(client->Reload("counter").ok());
  ASSERT_TRUE(log.WaitForEvents(2));
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_THAT(seen, SizeIs(2));
  EXPECT_EQ(seen[0], (client::Cursor{host().epoch(), synced})) << "PREPARING saw the snapshot's";
  EXPECT_EQ(seen[1], (client::Cursor{host().epoch(), synced + 1})) << "RELOADED saw PREPARING's";
}

TEST_F(ClientSubscriptionTest, FailedReloadArrivesWithItsReason) {
  const fs::path dir = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  SubscriptionLog log;
  auto subscription = client->Subscribe(log.Handlers());
  ASSERT_TRUE(log.WaitForLine("RESYNCED INITIAL counter"));
  WriteFile(dir / "libcounter.so", "not an ELF file");
  auto response = client->Reload("counter");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->outcome(), v1::RELOAD_OUTCOME_FAILED);
  ASSERT_TRUE(log.WaitForEvents(2));
  const std::vector<client::PhaseEvent> events = log.events();
  EXPECT_THAT(Describe(events), ElementsAre("PREPARING counter", "FAILED counter"));
  EXPECT_EQ(events[1].reason, v1::FAILURE_REASON_ARTIFACT_NOT_LOADABLE);
  EXPECT_EQ(events[1].message, response->message());
  EXPECT_TRUE(events[1].IsTerminal());
}

TEST_F(ClientSubscriptionTest, ResumesAfterADroppedConnectionWithoutLosingAnEvent) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  TcpProxy proxy(socket_path());
  auto through_proxy = Connect(FastOptions(), proxy.address());
  auto direct = Connect();
  SubscriptionLog log;
  auto subscription = through_proxy->Subscribe(log.Handlers());
  ASSERT_TRUE(log.WaitForLine("RESYNCED INITIAL counter"));
  const uint64_t synced_at = log.resyncs().at(0).seq;

  const size_t before_cut = log.lines().size();
  proxy.Sever();
  ASSERT_TRUE(WaitForDisconnect(log, before_cut));
  EXPECT_FALSE(subscription->connected());
  // Three reloads while the subscriber is cut off (it keeps retrying against the proxy,
  // which refuses it).
  for (int i = 0; i < 3; ++i) ASSERT_NO_FATAL_FAILURE(ReloadOk(*direct, "counter"));
  proxy.Restore();
  ASSERT_TRUE(log.WaitForEvents(6));
  EXPECT_THAT(LinesFrom(log, before_cut),
              ElementsAre("DISCONNECTED", "CONNECTED", "PREPARING counter", "RELOADED counter",
                          "PREPARING counter", "RELOADED counter", "PREPARING counter",
                          "RELOADED counter"));
  const std::vector<client::PhaseEvent> events = log.events();
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].seq, synced_at + 1 + i) << "no gap, no duplicate";
    EXPECT_EQ(events[i].host_epoch, host().epoch());
  }
  EXPECT_THAT(log.resyncs(), SizeIs(1)) << "resumed from the journal, no resync";
  EXPECT_GE(proxy.connections_relayed(), 2);
}

TEST_F(ClientSubscriptionTest, ResyncsWhenTheJournalNoLongerReachesBack) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost({"--journal-size", "3"}));
  TcpProxy proxy(socket_path());
  auto through_proxy = Connect(FastOptions(), proxy.address());
  auto direct = Connect();
  SubscriptionLog log;
  auto subscription = through_proxy->Subscribe(log.Handlers());
  ASSERT_TRUE(log.WaitForLine("RESYNCED INITIAL counter"));
  const size_t before_cut = log.lines().size();
  proxy.Sever();
  ASSERT_TRUE(WaitForDisconnect(log, before_cut));
  for (int i = 0; i < 3; ++i) ASSERT_NO_FATAL_FAILURE(ReloadOk(*direct, "counter"));  // 6 events
  proxy.Restore();
  ASSERT_TRUE(log.WaitForLine("RESYNCED FELL_BEHIND counter", before_cut));
  EXPECT_THAT(LinesFrom(log, before_cut),
              ElementsAre("DISCONNECTED", "CONNECTED", "RESYNCED FELL_BEHIND counter"));
  EXPECT_THAT(log.restarts(), IsEmpty());
  const client::Resynced resynced = log.resyncs().back();
  auto info = direct->GetHostInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(resynced.seq, info->last_seq());
  // Live events follow the resync.
  ASSERT_NO_FATAL_FAILURE(ReloadOk(*direct, "counter"));
  ASSERT_TRUE(log.WaitForEvents(2));
  EXPECT_EQ(log.events()[0].seq, resynced.seq + 1);
}

TEST_F(ClientSubscriptionTest, SurvivesKill9OfTheHostAndResyncsWithTheRestartedOne) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const uint64_t first_epoch = host().epoch();
  auto client = Connect();
  SubscriptionLog log;
  auto subscription = client->Subscribe(log.Handlers());
  ASSERT_TRUE(log.WaitForLine("RESYNCED INITIAL counter"));
  const size_t before_kill = log.lines().size();
  KillHost();
  ASSERT_TRUE(WaitForDisconnect(log, before_kill));

  // The restarted host loads v2 from the same root, at the same address.
  OverwriteArtifact(TestBundleDir("counter_v2"), root() / "counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  ASSERT_NE(host().epoch(), first_epoch);
  ASSERT_TRUE(log.WaitForLine("RESYNCED HOST_RESTARTED counter", before_kill));
  // Handlers were told counter 1.0.0; the restarted host has 2.0.0: a synthetic RELOADED.
  EXPECT_THAT(LinesFrom(log, before_kill),
              ElementsAre("DISCONNECTED", "CONNECTED", "HOST_RESTARTED",
                          "RELOADED counter (synthetic)", "RESYNCED HOST_RESTARTED counter"));
  ASSERT_THAT(log.restarts(), SizeIs(1));
  EXPECT_EQ(log.restarts()[0].previous_epoch, first_epoch);
  EXPECT_EQ(log.restarts()[0].epoch, host().epoch());
  const client::Resynced resynced = log.resyncs().back();
  EXPECT_EQ(resynced.host_epoch, host().epoch());
  ASSERT_THAT(resynced.bundles, SizeIs(1));
  EXPECT_EQ(resynced.bundles[0].version, (client::Version{2, 0, 0})) << "the snapshot is current";

  // And the subscription follows the new host.
  ASSERT_NO_FATAL_FAILURE(ReloadOk(*client, "counter"));
  ASSERT_TRUE(log.WaitForEvents(3));
  EXPECT_FALSE(log.events()[1].synthetic);
  EXPECT_EQ(log.events()[1].host_epoch, host().epoch());
  EXPECT_EQ(log.events()[1].seq, resynced.seq + 1);
}

TEST_F(ClientSubscriptionTest, ResumeAfterACursorReplaysWhatCameAfterIt) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  const uint64_t start = host().info_at_start().last_seq();
  ASSERT_NO_FATAL_FAILURE(ReloadOk(*client, "counter"));
  ASSERT_NO_FATAL_FAILURE(ReloadOk(*client, "counter"));
  SubscriptionLog log;
  client::SubscribeOptions options;
  options.resume_after = client::Cursor{host().epoch(), start + 2};  // skip the first reload
  auto subscription = client->Subscribe(log.Handlers(), options);
  ASSERT_TRUE(log.WaitForEvents(2));
  EXPECT_THAT(log.lines(), ElementsAre("CONNECTED", "PREPARING counter", "RELOADED counter"));
  EXPECT_EQ(log.events()[0].seq, start + 3);
}

TEST_F(ClientSubscriptionTest, CursorOfAnotherEpochResyncsOrStopsWhenStrict) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  const client::Cursor stale{host().epoch() ^ 0x5a5a, 1};
  {
    SubscriptionLog log;
    client::SubscribeOptions options;
    options.resume_after = stale;
    auto subscription = client->Subscribe(log.Handlers(), options);
    ASSERT_TRUE(log.WaitForLine("RESYNCED HOST_RESTARTED counter"));
    EXPECT_THAT(log.lines(),
                ElementsAre("CONNECTED", "HOST_RESTARTED", "RESYNCED HOST_RESTARTED counter"));
    EXPECT_EQ(log.restarts().at(0).previous_epoch, stale.host_epoch);
  }
  {
    SubscriptionLog log;
    client::SubscribeOptions options;
    options.resume_after = stale;
    options.strict_resume = true;
    auto subscription = client->Subscribe(log.Handlers(), options);
    ASSERT_TRUE(log.WaitForLine("STOPPED OUT_OF_RANGE"));
    EXPECT_THAT(log.lines(), ElementsAre("STOPPED OUT_OF_RANGE"));
  }
}

TEST_F(ClientSubscriptionTest, BundleFilterAppliesToTheSnapshotAndTheEvents) {
  Copy("counter_v1");
  Copy("stateless");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  SubscriptionLog log;
  client::SubscribeOptions options;
  options.bundle_names = {"stateless"};
  auto subscription = client->Subscribe(log.Handlers(), options);
  ASSERT_TRUE(log.WaitForLine("RESYNCED INITIAL stateless"));
  ASSERT_NO_FATAL_FAILURE(ReloadOk(*client, "counter"));
  ASSERT_NO_FATAL_FAILURE(ReloadOk(*client, "stateless"));
  ASSERT_TRUE(log.WaitForEvents(2));
  EXPECT_THAT(Describe(log.events()), ElementsAre("PREPARING stateless", "RELOADED stateless"));
}

TEST_F(ClientSubscriptionTest, WrongTokenStopsTheSubscriptionAndTheRightOneWorks) {
  Copy("counter_v1");
  WriteFile(dir_.path() / "token", "s3cret\n");
  ASSERT_NO_FATAL_FAILURE(
      StartHost({"--auth-token-file", (dir_.path() / "token").string()}, "s3cret"));
  {
    auto client = Connect();
    SubscriptionLog log;
    auto subscription = client->Subscribe(log.Handlers());
    ASSERT_TRUE(log.WaitForLine("STOPPED UNAUTHENTICATED"));
    EXPECT_THAT(log.lines(), ElementsAre("STOPPED UNAUTHENTICATED"));
  }
  client::ConnectOptions options = FastOptions();
  options.auth_token = "s3cret";
  auto client = Connect(options);
  SubscriptionLog log;
  auto subscription = client->Subscribe(log.Handlers());
  ASSERT_TRUE(log.WaitForLine("RESYNCED INITIAL counter"));
}

TEST_F(ClientSubscriptionTest, DestructorReturnsWhenNoHostWasEverThere) {
  auto client = Connect(FastOptions(), "unix:" + (dir_.path() / "nobody.sock").string());
  SubscriptionLog log;
  auto subscription = client->Subscribe(log.Handlers());
  ASSERT_TRUE(log.WaitForLine("DISCONNECTED UNAVAILABLE"));
  subscription.reset();  // cancels the reconnect wait; the test would time out otherwise
  EXPECT_THAT(log.lines(), ElementsAre("DISCONNECTED UNAVAILABLE"))
      << "reported once, not per retry";
}

TEST_F(ClientSubscriptionTest, DestructorReturnsWhileTheHostIsFrozen) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  SubscriptionLog log;
  auto subscription = client->Subscribe(log.Handlers());
  ASSERT_TRUE(log.WaitForLine("RESYNCED INITIAL counter"));
  host().Freeze();  // the stream is open and the host answers nothing
  subscription.reset();
  client.reset();
  host().Thaw();
}

TEST_F(ClientSubscriptionTest, AHandlerMayDestroyItsOwnSubscription) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  std::mutex mu;
  std::unique_ptr<client::Subscription> subscription;
  std::promise<void> destroyed;
  client::PhaseHandlers handlers;
  handlers.on_resynced = [&](const client::Resynced&) {
    std::unique_ptr<client::Subscription> mine;
    {
      std::lock_guard<std::mutex> lock(mu);
      mine = std::move(subscription);
    }
    mine.reset();
    destroyed.set_value();
  };
  {
    std::lock_guard<std::mutex> lock(mu);
    subscription = client->Subscribe(std::move(handlers));
  }
  EXPECT_EQ(destroyed.get_future().wait_for(kCallDeadline), std::future_status::ready);
}

TEST_F(ClientSubscriptionTest, TransportFailureIsReportedOnceAndRecoveredFrom) {
  // The host comes up only after the subscription started: it reports the failure once,
  // then connects by itself.
  Copy("counter_v1");
  auto client = Connect();
  SubscriptionLog log;
  auto subscription = client->Subscribe(log.Handlers());
  ASSERT_TRUE(log.WaitForLine("DISCONNECTED UNAVAILABLE"));
  ASSERT_NO_FATAL_FAILURE(StartHost());
  ASSERT_TRUE(log.WaitForLine("RESYNCED INITIAL counter"));
  EXPECT_THAT(log.lines(),
              ElementsAre("DISCONNECTED UNAVAILABLE", "CONNECTED", "RESYNCED INITIAL counter"));
}

}  // namespace
}  // namespace polyplug::test
