// Concurrency against the real polyplug-host: 8 client threads, each with its own
// client::HostClient, reload different and the same bundles at once while 50 subscribers
// (spread over a few HostClients) watch. Every wait is on an event (a latch, a join, a
// subscription delivering a given number of events); deadlines only bound a broken host.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <latch>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "client/client_fixture.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "polyplug/client/host_client.h"
#include "stress/event_invariants.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::polyplug::host::v1;
using ::testing::IsEmpty;
using ::testing::SizeIs;

constexpr int kReloaders = 8;
constexpr int kReloadsEach = 10;
constexpr int kSubscriberClients = 5;
constexpr int kSubscribersPerClient = 10;  // 50 subscribers in all

// What one Reload call returned.
struct Result {
  std::string bundle;
  absl::Status status;
  v1::ReloadResponse response;
};

using HostConcurrencyTest = ClientTest;

TEST_F(HostConcurrencyTest, ConcurrentReloadsAreSerializedAndEverySubscriberSeesTheSameEvents) {
  Copy("chain_a");
  Copy("chain_b");
  Copy("chain_c");
  Copy("stateless");
  const fs::path counter = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  // Every reload of counter now fails (its previous version stays live).
  WriteFile(counter / "libcounter.so", "not an ELF file");
  const std::vector<std::string> targets = {"chain_a", "counter", "chain_b", "stateless",
                                            "chain_c"};

  // 50 subscribers, each synced (initial snapshot) before any reload starts.
  std::vector<std::unique_ptr<client::HostClient>> subscriber_clients;
  std::vector<std::unique_ptr<SubscriptionLog>> logs;
  std::vector<std::unique_ptr<client::Subscription>> subscriptions;
  for (int c = 0; c < kSubscriberClients; ++c) {
    subscriber_clients.push_back(Connect());
    ASSERT_NE(subscriber_clients.back(), nullptr);
    for (int s = 0; s < kSubscribersPerClient; ++s) {
      logs.push_back(std::make_unique<SubscriptionLog>());
      subscriptions.push_back(subscriber_clients.back()->Subscribe(logs.back()->Handlers()));
    }
  }
  for (auto& log : logs) {
    ASSERT_TRUE(log->WaitFor("the initial snapshot", [](const std::vector<std::string>& lines) {
      for (const std::string& line : lines) {
        if (line.rfind("RESYNCED INITIAL ", 0) == 0) return true;
      }
      return false;
    }));
  }
  // Nothing happened since the host started, so every snapshot is at the same seq.
  const uint64_t synced = host().info_at_start().last_seq();
  for (auto& log : logs) {
    ASSERT_THAT(log->resyncs(), SizeIs(1));
    ASSERT_EQ(log->resyncs()[0].seq, synced);
    ASSERT_EQ(log->resyncs()[0].host_epoch, host().epoch());
  }

  std::vector<std::unique_ptr<client::HostClient>> reloader_clients;
  for (int t = 0; t < kReloaders; ++t) {
    reloader_clients.push_back(Connect());
    ASSERT_NE(reloader_clients.back(), nullptr);
  }
  std::latch start(kReloaders);
  std::vector<std::vector<Result>> results(kReloaders);
  std::vector<std::thread> threads;
  for (int t = 0; t < kReloaders; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      for (int i = 0; i < kReloadsEach; ++i) {
        // Threads t and t+5 reload the same bundle at the same step, the others differ.
        const std::string& bundle = targets[(t + i) % targets.size()];
        absl::StatusOr<v1::ReloadResponse> response = reloader_clients[t]->Reload(bundle);
        Result r{bundle, response.status(), {}};
        if (response.ok()) r.response = std::move(*response);
        results[t].push_back(std::move(r));
      }
    });
  }
  for (std::thread& t : threads) t.join();

  // Every Reload response: one terminal event for its reload id; its events are a
  // contiguous run of the host's seqs.
  std::vector<client::PhaseEvent> from_responses;
  for (int t = 0; t < kReloaders; ++t) {
    for (const Result& r : results[t]) {
      SCOPED_TRACE(absl::StrCat("thread ", t, " reload of ", r.bundle));
      ASSERT_TRUE(r.status.ok()) << r.status;
      const v1::ReloadResponse& resp = r.response;
      if (r.bundle == "counter") {
        EXPECT_EQ(resp.outcome(), v1::RELOAD_OUTCOME_FAILED);
        EXPECT_EQ(resp.reason(), v1::FAILURE_REASON_ARTIFACT_NOT_LOADABLE);
      } else {
        EXPECT_EQ(resp.outcome(), v1::RELOAD_OUTCOME_RELOADED) << resp.message();
      }
      EXPECT_EQ(resp.host_epoch(), host().epoch());
      EXPECT_EQ(resp.bundle_name(), r.bundle);
      std::vector<client::PhaseEvent> events;
      for (const v1::ReloadPhaseEvent& e : resp.events()) {
        events.push_back(client::PhaseEventFromProto(e));
      }
      ASSERT_FALSE(events.empty());
      EXPECT_EQ(TerminalEventsOf(events, resp.reload_id()), 1);
      EXPECT_EQ(events.front().phase, client::Phase::kPreparing);
      EXPECT_EQ(events.back().reload_id, resp.reload_id());
      for (size_t i = 0; i < events.size(); ++i) {
        EXPECT_EQ(events[i].root_reload_id, resp.reload_id());
        EXPECT_EQ(events[i].seq, events.front().seq + i);
      }
      from_responses.insert(from_responses.end(), events.begin(), events.end());
    }
  }
  std::sort(from_responses.begin(), from_responses.end(),
            [](const client::PhaseEvent& a, const client::PhaseEvent& b) { return a.seq < b.seq; });
  ASSERT_FALSE(from_responses.empty());
  // The responses together cover every seq after the snapshot: nothing else happened.
  EXPECT_EQ(from_responses.front().seq, synced + 1);
  EXPECT_THAT(SequenceProblems(from_responses), IsEmpty());
  for (int t = 0; t < kReloaders; ++t) {
    for (const Result& r : results[t]) {
      EXPECT_EQ(TerminalEventsOf(from_responses, r.response.reload_id()), 1)
          << "reload " << r.response.reload_id() << " of " << r.bundle;
    }
  }

  // Every subscriber receives exactly that sequence: wait until each has the last seq.
  const size_t expected = from_responses.size();
  for (size_t s = 0; s < logs.size(); ++s) {
    SCOPED_TRACE(absl::StrCat("subscriber ", s));
    ASSERT_TRUE(logs[s]->WaitForEvents(expected));
    const std::vector<client::PhaseEvent> seen = logs[s]->events();
    EXPECT_THAT(SequenceProblems(seen), IsEmpty());
    ASSERT_EQ(seen.size(), expected);
    for (size_t k = 0; k < expected; ++k) {
      ASSERT_EQ(seen[k], from_responses[k]) << "event " << k << " (seq " << seen[k].seq << ")";
    }
    EXPECT_THAT(logs[s]->resyncs(), SizeIs(1)) << "no resync: nothing was lost";
  }
  subscriptions.clear();
}

}  // namespace
}  // namespace polyplug::test
