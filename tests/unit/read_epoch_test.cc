// ReadEpoch: Synchronize waits for readers that entered before it, and only for them.
#include "core/src/read_epoch.h"

#include <atomic>
#include <future>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace polyplug::core {
namespace {

// How many times to yield while checking that a blocked Synchronize stays blocked. A
// Synchronize that ignores the guard finishes within a few yields, so this catches it
// without any timing assumption; passing never depends on the count.
constexpr int kBlockedChecks = 20000;

// Runs Synchronize on its own thread and records when it has returned.
class SynchronizeInBackground {
 public:
  explicit SynchronizeInBackground(ReadEpoch& epoch)
      : thread_([this, &epoch] {
          epoch.Synchronize();
          done_.store(true, std::memory_order_release);
        }) {}
  ~SynchronizeInBackground() {
    if (thread_.joinable()) thread_.join();
  }

  bool done() const { return done_.load(std::memory_order_acquire); }
  void Join() { thread_.join(); }

  // True when Synchronize stayed blocked for every check.
  bool StaysBlocked() const {
    for (int i = 0; i < kBlockedChecks; ++i) {
      if (done()) return false;
      std::this_thread::yield();
    }
    return !done();
  }

 private:
  std::atomic<bool> done_{false};
  std::thread thread_;
};

TEST(ReadEpochTest, SynchronizeReturnsWithoutReaders) {
  ReadEpoch epoch;
  epoch.Synchronize();
  epoch.Synchronize();  // and again: the epoch flip must leave it reusable
}

TEST(ReadEpochTest, SynchronizeReturnsAfterReadersLeft) {
  ReadEpoch epoch;
  for (int i = 0; i < 100; ++i) {
    ReadEpoch::Guard guard = epoch.Enter();
  }
  epoch.Synchronize();
}

TEST(ReadEpochTest, SynchronizeWaitsForAGuardHeldBeforeIt) {
  ReadEpoch epoch;
  std::optional<ReadEpoch::Guard> guard(epoch.Enter());
  SynchronizeInBackground sync(epoch);
  EXPECT_TRUE(sync.StaysBlocked()) << "Synchronize returned while a reader was inside";
  guard.reset();
  sync.Join();
  EXPECT_TRUE(sync.done());
}

TEST(ReadEpochTest, SynchronizeWaitsForAGuardHeldOnAnotherThread) {
  ReadEpoch epoch;
  std::promise<void> entered;
  std::promise<void> release;
  std::thread reader([&] {
    ReadEpoch::Guard guard = epoch.Enter();
    entered.set_value();
    release.get_future().wait();
  });
  entered.get_future().wait();
  SynchronizeInBackground sync(epoch);
  EXPECT_TRUE(sync.StaysBlocked()) << "Synchronize returned while a reader was inside";
  release.set_value();
  reader.join();
  sync.Join();
  EXPECT_TRUE(sync.done());
}

TEST(ReadEpochTest, SynchronizeWaitsForEveryReaderThread) {
  constexpr int kReaders = 8;  // more than one per stripe is likely, all stripes not
  ReadEpoch epoch;
  std::vector<std::promise<void>> entered(kReaders);
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::vector<std::thread> readers;
  for (int i = 0; i < kReaders; ++i) {
    readers.emplace_back([&, i] {
      ReadEpoch::Guard guard = epoch.Enter();
      entered[i].set_value();
      released.wait();
    });
  }
  for (std::promise<void>& promise : entered) promise.get_future().wait();
  SynchronizeInBackground sync(epoch);
  EXPECT_TRUE(sync.StaysBlocked());
  release.set_value();
  for (std::thread& reader : readers) reader.join();
  sync.Join();
  EXPECT_TRUE(sync.done());
}

// A moved-from guard must not leave the read side: only the guard that owns the entry
// does, once.
TEST(ReadEpochTest, MovedFromGuardDoesNotLeave) {
  ReadEpoch epoch;
  std::optional<ReadEpoch::Guard> owner;
  {
    ReadEpoch::Guard original = epoch.Enter();
    owner.emplace(std::move(original));
  }  // `original` is destroyed here, moved-from
  SynchronizeInBackground sync(epoch);
  EXPECT_TRUE(sync.StaysBlocked()) << "destroying a moved-from guard released the reader";
  owner.reset();
  sync.Join();
  EXPECT_TRUE(sync.done());
}

TEST(ReadEpochTest, RepeatedSynchronizeWithReadersInBetween) {
  ReadEpoch epoch;
  for (int round = 0; round < 50; ++round) {
    std::optional<ReadEpoch::Guard> guard(epoch.Enter());
    SynchronizeInBackground sync(epoch);
    guard.reset();
    sync.Join();
    EXPECT_TRUE(sync.done());
  }
}

}  // namespace
}  // namespace polyplug::core
