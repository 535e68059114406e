// Concurrency of one in-process core::Runtime: 8 threads reload different and the same
// bundles at once (a cascade chain, a standalone bundle, and a bundle whose every reload
// fails) while 50 listeners (journal listeners and phase callbacks) watch. Core only, so it
// also runs under TSan. Threads synchronise on a latch and joins; nothing depends on timing.
#include <cstdint>
#include <filesystem>
#include <latch>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "polyplug/core/runtime.h"
#include "stress/event_invariants.h"
#include "support/bundle_fixture.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
using core::ErrorReason;
using core::Phase;
using core::PhaseEvent;
using ::testing::IsEmpty;

constexpr int kReloaders = 8;
constexpr int kReloadsEach = 15;
constexpr int kListeners = 50;

// Every event one listener received, in delivery order (thread-safe).
class Watcher {
 public:
  void Add(const PhaseEvent& event) {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(event);
  }
  std::vector<PhaseEvent> events() const {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }

 private:
  mutable std::mutex mu_;  // not absl::Mutex: see EventRecorder
  std::vector<PhaseEvent> events_;
};

// What one reload call returned.
struct Result {
  std::string bundle;
  absl::Status request_status;  // the StatusOr's status
  core::ReloadOutcome outcome;
};

using RuntimeConcurrencyTest = RuntimeTest;

TEST_F(RuntimeConcurrencyTest, ConcurrentReloadsAreSerializedAndEveryListenerSeesTheSameEvents) {
  // 50 listeners, half on the journal and half as phase callbacks, attached before anything
  // is loaded so that each must see the whole journal from seq 1.
  std::vector<std::unique_ptr<Watcher>> watchers;
  std::vector<core::EventJournal::ListenerId> journal_ids;
  std::vector<core::EventJournal::ListenerId> callback_ids;
  for (int i = 0; i < kListeners; ++i) {
    watchers.push_back(std::make_unique<Watcher>());
    Watcher* w = watchers.back().get();
    if (i % 2 == 0) {
      journal_ids.push_back(
          runtime().journal().AddListener([w](const PhaseEvent& e) { w->Add(e); }));
    } else {
      callback_ids.push_back(runtime().AddPhaseCallback(
          [w](const PolyplugReloadPhase&, const PhaseEvent& e) { w->Add(e); }));
    }
  }
  // The listeners capture the watchers, which die before the runtime (TearDown): detach
  // them first, whatever the test's outcome.
  struct Detach {
    core::Runtime* runtime;
    std::vector<core::EventJournal::ListenerId>* journal_ids;
    std::vector<core::EventJournal::ListenerId>* callback_ids;
    ~Detach() {
      for (auto id : *journal_ids) runtime->journal().RemoveListener(id);
      for (auto id : *callback_ids) runtime->RemovePhaseCallback(id);
    }
  } detach{&runtime(), &journal_ids, &callback_ids};

  ASSERT_NO_FATAL_FAILURE(CopyAndLoad("chain_a"));
  ASSERT_NO_FATAL_FAILURE(CopyAndLoad("chain_b"));
  ASSERT_NO_FATAL_FAILURE(CopyAndLoad("chain_c"));
  ASSERT_NO_FATAL_FAILURE(CopyAndLoad("stateless"));
  fs::path counter;
  ASSERT_NO_FATAL_FAILURE(counter = CopyAndLoad("counter_v1"));
  // Every reload of counter now fails (its previous version stays live).
  WriteFile(counter / "libcounter.so", "not an ELF file");
  const std::vector<std::string> targets = {"chain_a", "counter", "chain_b", "stateless",
                                            "chain_c"};

  std::latch start(kReloaders);
  std::vector<std::vector<Result>> results(kReloaders);
  std::vector<std::thread> threads;
  for (int t = 0; t < kReloaders; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      for (int i = 0; i < kReloadsEach; ++i) {
        // Threads t and t+5 reload the same bundle at the same step, the others differ.
        const std::string& bundle = targets[(t + i) % targets.size()];
        absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundleByName(bundle);
        Result r{bundle, outcome.status(), {}};
        if (outcome.ok()) r.outcome = std::move(*outcome);
        results[t].push_back(std::move(r));
      }
    });
  }
  for (std::thread& t : threads) t.join();

  absl::StatusOr<std::vector<PhaseEvent>> journal = runtime().journal().ReadAfter(0);
  ASSERT_THAT(journal.status(), IsOk());
  ASSERT_FALSE(journal->empty());
  EXPECT_EQ(journal->front().seq, 1u);
  EXPECT_EQ(journal->back().seq, runtime().journal().last_seq());
  EXPECT_THAT(SequenceProblems(*journal), IsEmpty());

  // Every reload: exactly one terminal event for its id, in the journal and in its outcome,
  // which lists a contiguous block of the journal carrying its id as root.
  size_t reloads = 0;
  size_t outcome_events = 0;
  for (int t = 0; t < kReloaders; ++t) {
    for (const Result& r : results[t]) {
      SCOPED_TRACE(absl::StrCat("thread ", t, " reload of ", r.bundle));
      ASSERT_THAT(r.request_status, IsOk());
      ++reloads;
      outcome_events += r.outcome.events.size();
      if (r.bundle == "counter") {
        EXPECT_THAT(r.outcome.status, HasReason(ErrorReason::kArtifactNotLoadable));
      } else {
        EXPECT_THAT(r.outcome.status, IsOk());
      }
      EXPECT_NE(r.outcome.reload_id, 0u);
      EXPECT_EQ(TerminalEventsOf(*journal, r.outcome.reload_id), 1);
      EXPECT_EQ(TerminalEventsOf(r.outcome.events, r.outcome.reload_id), 1);
      ASSERT_FALSE(r.outcome.events.empty());
      EXPECT_EQ(r.outcome.events.front().phase, Phase::kPreparing);
      EXPECT_EQ(r.outcome.events.front().bundle_name, r.bundle);
      EXPECT_EQ(r.outcome.events.back().reload_id, r.outcome.reload_id);
      EXPECT_TRUE(r.outcome.events.back().IsTerminal());
      for (size_t i = 0; i < r.outcome.events.size(); ++i) {
        const PhaseEvent& e = r.outcome.events[i];
        EXPECT_EQ(e.root_reload_id, r.outcome.reload_id);
        EXPECT_EQ(e.seq, r.outcome.events.front().seq + i);
        ASSERT_GE(e.seq, 1u);
        ASSERT_LE(e.seq, journal->size());
        EXPECT_EQ(Describe(e), Describe((*journal)[e.seq - 1]));
      }
    }
  }
  EXPECT_EQ(reloads, static_cast<size_t>(kReloaders * kReloadsEach));
  // The five loads plus every reload's events: nothing else happened.
  EXPECT_EQ(journal->size(), 5 + outcome_events);

  // Every listener saw exactly the journal: same seqs, same contents, same order.
  for (int i = 0; i < kListeners; ++i) {
    SCOPED_TRACE(absl::StrCat("listener ", i, i % 2 == 0 ? " (journal)" : " (phase callback)"));
    const std::vector<PhaseEvent> seen = watchers[i]->events();
    ASSERT_EQ(seen.size(), journal->size());
    for (size_t k = 0; k < seen.size(); ++k) {
      const PhaseEvent& a = seen[k];
      const PhaseEvent& b = (*journal)[k];
      ASSERT_EQ(a.seq, b.seq) << "at " << k;
      ASSERT_EQ(a.host_epoch, b.host_epoch) << "at " << k;
      ASSERT_EQ(a.phase, b.phase) << "at " << k;
      ASSERT_EQ(a.bundle_name, b.bundle_name) << "at " << k;
      ASSERT_EQ(a.reload_id, b.reload_id) << "at " << k;
      ASSERT_EQ(a.parent_reload_id, b.parent_reload_id) << "at " << k;
      ASSERT_EQ(a.root_reload_id, b.root_reload_id) << "at " << k;
      ASSERT_EQ(a.reason, b.reason) << "at " << k;
      ASSERT_EQ(a.registry_revision, b.registry_revision) << "at " << k;
    }
  }
  // The fixture's own recorder agrees too.
  EXPECT_EQ(recorder().size(), journal->size());

  // Everything still works: the chain reloaded, counter kept its previous version.
  EXPECT_EQ(runtime().ListBundles().size(), 5u);
  absl::StatusOr<int32_t> version = CallFn0(runtime(), "test.counter", 1);
  ASSERT_THAT(version.status(), IsOk());
  EXPECT_EQ(*version, 1);
}

}  // namespace
}  // namespace polyplug::test
