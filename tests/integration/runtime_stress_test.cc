// Concurrency: reloads and unloads racing lock-free lookups and calls. Meant to be run
// under TSan and ASan as well; threads synchronise on a latch and atomics only, and no
// assertion depends on timing.
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <latch>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "polyplug/core/ids.h"
#include "polyplug/core/runtime.h"
#include "support/bundle_fixture.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
using core::ErrorReason;
using core::GuestContractId;
using core::Phase;
using ::testing::IsEmpty;

constexpr int kReloaders = 8;
constexpr int kReloadsEach = 25;
constexpr int kReaders = 8;

// Keeps the first few problems seen by any thread (thread-safe).
class Problems {
 public:
  void Add(std::string problem) {
    std::lock_guard<std::mutex> lock(mu_);
    ++count_;
    if (problems_.size() < 10) problems_.push_back(std::move(problem));
  }
  int count() const {
    std::lock_guard<std::mutex> lock(mu_);
    return count_;
  }
  std::string ToString() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::string out;
    for (const std::string& p : problems_) absl::StrAppend(&out, "  ", p, "\n");
    return out;
  }

 private:
  mutable std::mutex mu_;              // not absl::Mutex: see EventRecorder
  int count_ = 0;                      // guarded by mu_
  std::vector<std::string> problems_;  // guarded by mu_
};

using RuntimeStressTest = RuntimeTest;

TEST_F(RuntimeStressTest, ConcurrentReloadsWhileReadersCallThrough) {
  const fs::path dir = Copy("counter_v1");
  ASSERT_THAT(runtime().LoadBundle(dir).status(), IsOk());
  // Every reload now brings in v2: readers see 1 until the first swap and 2 afterwards.
  OverwriteArtifact(TestBundleDir("counter_v2"), dir);
  const uint64_t contract = GuestContractId("test.counter", 1);

  std::latch start(kReloaders + kReaders);
  std::atomic<bool> reloaders_done{false};
  std::atomic<int> reloads_ok{0};
  std::atomic<uint64_t> outcome_events{0};
  std::atomic<int64_t> calls{0};
  Problems problems;

  std::vector<std::thread> readers;
  for (int r = 0; r < kReaders; ++r) {
    readers.emplace_back([&, r] {
      start.arrive_and_wait();
      int32_t last_seen = 1;
      do {
        absl::StatusOr<core::ContractHandle> handle = runtime().Find(contract, 1);
        if (!handle.ok()) {
          problems.Add(absl::StrCat("reader ", r, ": Find: ", handle.status().ToString()));
          continue;
        }
        absl::StatusOr<int32_t> value = CallFn0(runtime(), *handle);
        if (!value.ok()) {
          problems.Add(absl::StrCat("reader ", r, ": call: ", value.status().ToString()));
        } else if (*value != 1 && *value != 2) {
          problems.Add(absl::StrCat("reader ", r, ": fn0 returned ", *value));
        } else if (*value < last_seen) {
          problems.Add(absl::StrCat("reader ", r, ": saw v", *value, " after v", last_seen));
        } else {
          last_seen = *value;
        }
        calls.fetch_add(1, std::memory_order_relaxed);
      } while (!reloaders_done.load(std::memory_order_acquire));
    });
  }

  std::vector<std::thread> reloaders;
  for (int t = 0; t < kReloaders; ++t) {
    reloaders.emplace_back([&, t] {
      start.arrive_and_wait();
      for (int i = 0; i < kReloadsEach; ++i) {
        absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundle(dir);
        if (!outcome.ok()) {
          problems.Add(absl::StrCat("reloader ", t, ": ", outcome.status().ToString()));
          continue;
        }
        outcome_events.fetch_add(outcome->events.size(), std::memory_order_relaxed);
        if (outcome->ok()) {
          reloads_ok.fetch_add(1, std::memory_order_relaxed);
        } else {
          problems.Add(absl::StrCat("reloader ", t, ": outcome ", outcome->status.ToString()));
        }
      }
    });
  }

  for (std::thread& t : reloaders) t.join();
  reloaders_done.store(true, std::memory_order_release);
  for (std::thread& t : readers) t.join();

  EXPECT_EQ(problems.count(), 0) << problems.ToString();
  EXPECT_EQ(reloads_ok.load(), kReloaders * kReloadsEach);
  EXPECT_GE(calls.load(), kReaders);

  // LOADED, then the events of every reload: PREPARING + RELOADED for each success.
  absl::StatusOr<std::vector<core::PhaseEvent>> journal = runtime().journal().ReadAfter(0);
  ASSERT_THAT(journal.status(), IsOk());
  const uint64_t expected_events = 1 + outcome_events.load();
  EXPECT_EQ(expected_events, 1u + 2u * kReloaders * kReloadsEach);
  ASSERT_EQ(journal->size(), expected_events);
  EXPECT_EQ((*journal)[0].phase, Phase::kLoaded);
  for (size_t i = 1; i < journal->size(); ++i) {
    ASSERT_GT((*journal)[i].seq, (*journal)[i - 1].seq) << "at " << i;
  }
  // Reloads are serialized, so each PREPARING is directly followed by its RELOADED.
  for (size_t i = 1; i + 1 < journal->size(); i += 2) {
    ASSERT_EQ((*journal)[i].phase, Phase::kPreparing) << "at " << i;
    ASSERT_EQ((*journal)[i + 1].phase, Phase::kReloaded) << "at " << i + 1;
    ASSERT_EQ((*journal)[i].reload_id, (*journal)[i + 1].reload_id) << "at " << i;
  }
  // The listener saw the same events in the same order.
  const std::vector<core::PhaseEvent> seen = recorder().events();
  ASSERT_EQ(seen.size(), journal->size());
  for (size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i].seq, (*journal)[i].seq);

  absl::StatusOr<int32_t> version = CallFn0(runtime(), contract, 1);
  ASSERT_THAT(version.status(), IsOk());
  EXPECT_EQ(*version, 2);
  EXPECT_EQ(runtime().GetBundle("counter")->reload_count,
            static_cast<uint64_t>(kReloaders * kReloadsEach));
  EXPECT_EQ(CountFilesUnder(state().path()), 1u);
}

// Publish/Remove churn of one bundle must not disturb lookups of another, and a reader of
// the churning contract sees either the provider or a clean not-found/stale error.
TEST_F(RuntimeStressTest, LoadUnloadChurnWhileReading) {
  ASSERT_NO_FATAL_FAILURE(CopyAndLoad("counter_v1"));
  const fs::path stateless = Copy("stateless");
  constexpr int kCycles = 25;

  std::latch start(1 + kReaders);
  std::atomic<bool> churn_done{false};
  Problems problems;

  std::vector<std::thread> readers;
  for (int r = 0; r < kReaders; ++r) {
    readers.emplace_back([&, r] {
      start.arrive_and_wait();
      do {
        absl::StatusOr<int32_t> counter = CallFn0(runtime(), "test.counter", 1);
        if (!counter.ok() || *counter != 1) {
          problems.Add(absl::StrCat(
              "reader ", r,
              ": counter: ", counter.ok() ? absl::StrCat(*counter) : counter.status().ToString()));
        }
        absl::StatusOr<int32_t> answer = CallFn0(runtime(), "test.stateless", 1);
        if (answer.ok()) {
          if (*answer != 42) problems.Add(absl::StrCat("reader ", r, ": stateless ", *answer));
        } else {
          const ErrorReason reason = core::ReasonOf(answer.status());
          if (reason != ErrorReason::kContractNotFound && reason != ErrorReason::kStaleHandle &&
              reason != ErrorReason::kInvalidHandle) {
            problems.Add(absl::StrCat("reader ", r, ": stateless: ", answer.status().ToString()));
          }
        }
      } while (!churn_done.load(std::memory_order_acquire));
    });
  }

  start.arrive_and_wait();
  for (int i = 0; i < kCycles; ++i) {
    absl::StatusOr<core::BundleInfo> loaded = runtime().LoadBundle(stateless);
    if (!loaded.ok()) problems.Add(absl::StrCat("load: ", loaded.status().ToString()));
    absl::StatusOr<std::vector<std::string>> unloaded =
        runtime().UnloadBundle("stateless", core::UnloadMode::kRefuseIfInUse);
    if (!unloaded.ok()) problems.Add(absl::StrCat("unload: ", unloaded.status().ToString()));
  }
  churn_done.store(true, std::memory_order_release);
  for (std::thread& t : readers) t.join();

  EXPECT_EQ(problems.count(), 0) << problems.ToString();
  EXPECT_EQ(recorder().size(), 1u + 2u * kCycles);
  EXPECT_EQ(runtime().ListBundles().size(), 1u);
  EXPECT_EQ(CountFilesUnder(state().path()), 1u);
  EXPECT_THAT(log().Warnings(), IsEmpty()) << ToString(log().Warnings());
}

}  // namespace
}  // namespace polyplug::test
