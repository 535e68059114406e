// TrackedContract against a real polyplug-host: the handle refreshes itself after a
// reload of its provider, an unload and a load, and a host restart (kill -9).
#include <signal.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
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
using ::testing::SizeIs;

using Handle = absl::StatusOr<v1::ContractHandle>;

// "counter 2.0.0 slot 0 gen 1", or "NOT_FOUND".
std::string Describe(const Handle& h) {
  if (!h.ok()) return std::string(absl::StatusCodeToString(h.status().code()));
  return absl::StrCat(h->provider_bundle_name(), " ", h->provider_version().major(), ".",
                      h->provider_version().minor(), ".", h->provider_version().patch(), " slot ",
                      h->index(), " gen ", h->generation());
}

// Records on_refreshed calls; lets the test wait for the n-th.
class RefreshLog {
 public:
  client::RefreshCallback Callback() {
    return [this](const Handle& previous, const Handle& current) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        calls_.push_back({previous, current});
      }
      changed_.notify_all();
    };
  }
  // Waits for at least `n` calls and returns them all (fewer on timeout, with a failure).
  std::vector<std::pair<Handle, Handle>> WaitFor(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!changed_.wait_for(lock, kCallDeadline, [&] { return calls_.size() >= n; })) {
      ADD_FAILURE() << "gave up waiting for refresh " << n << "; got " << calls_.size();
    }
    return calls_;
  }
  // Waits until some call's `current` satisfies `done`.
  void WaitUntil(const std::string& what, const std::function<bool(const Handle&)>& done) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!changed_.wait_for(lock, kCallDeadline, [&] {
          for (const auto& call : calls_) {
            if (done(call.second)) return true;
          }
          return false;
        })) {
      ADD_FAILURE() << "gave up waiting for " << what << "; got " << calls_.size() << " calls";
    }
  }
  size_t size() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_.size();
  }

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  std::vector<std::pair<Handle, Handle>> calls_;
};

class TrackedContractTest : public ClientTest {};

TEST_F(TrackedContractTest, RefreshesAfterAReloadOfItsProvider) {
  const fs::path counter = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  RefreshLog log;
  auto tracked = client->TrackContract("test.counter@1", 0, log.Callback());
  Handle first = tracked->Current();
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(Describe(first), "counter 1.0.0 slot 0 gen 0");

  OverwriteArtifact(TestBundleDir("counter_v2"), counter);
  auto reloaded = client->Reload("counter");
  ASSERT_TRUE(reloaded.ok() && reloaded->outcome() == v1::RELOAD_OUTCOME_RELOADED);
  auto calls = log.WaitFor(1);
  ASSERT_THAT(calls, SizeIs(1));
  EXPECT_EQ(Describe(calls[0].first), "counter 1.0.0 slot 0 gen 0");
  EXPECT_EQ(Describe(calls[0].second), "counter 2.0.0 slot 0 gen 0") << "same handle, new code";
  EXPECT_EQ(Describe(tracked->Current()), "counter 2.0.0 slot 0 gen 0");
  EXPECT_EQ(tracked->change_count(), 1u);

  // A reload of the same version still swapped the code: the holder is told.
  ASSERT_TRUE(client->Reload("counter").ok());
  EXPECT_THAT(log.WaitFor(2), SizeIs(2));
  // A failed reload changes nothing.
  WriteFile(counter / "libcounter.so", "garbage");
  auto failed = client->Reload("counter");
  ASSERT_TRUE(failed.ok() && failed->outcome() == v1::RELOAD_OUTCOME_FAILED);
  // Wait for something that comes after the FAILED event on the same stream: a second
  // tracker's first refresh is not it, but a load is.
  RefreshLog other;
  auto stateless = client->TrackContract("test.stateless@1", 0, other.Callback());
  Copy("stateless");
  ASSERT_TRUE(client->LoadBundle((root() / "stateless").string()).ok());
  other.WaitFor(1);
  EXPECT_EQ(log.size(), 2u);
  EXPECT_EQ(tracked->change_count(), 2u);
}

TEST_F(TrackedContractTest, UnloadMakesItNotFoundAndALoadBringsItBack) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  RefreshLog log;
  auto tracked = client->TrackContract("test.counter@1", 0, log.Callback());
  ASSERT_TRUE(tracked->Current().ok());
  ASSERT_TRUE(client->UnloadBundle("counter", false).ok());
  auto calls = log.WaitFor(1);
  ASSERT_THAT(calls, SizeIs(1));
  EXPECT_EQ(Describe(calls[0].second), "NOT_FOUND");
  EXPECT_TRUE(absl::IsNotFound(tracked->Current().status()));

  ASSERT_TRUE(client->LoadBundle((root() / "counter_v1").string()).ok());
  calls = log.WaitFor(2);
  ASSERT_THAT(calls, SizeIs(2));
  EXPECT_EQ(Describe(calls[1].first), "NOT_FOUND");
  ASSERT_TRUE(calls[1].second.ok()) << calls[1].second.status();
  EXPECT_EQ(calls[1].second->provider_bundle_name(), "counter");
  EXPECT_EQ(Describe(tracked->Current()), Describe(calls[1].second));
}

TEST_F(TrackedContractTest, AContractNobodyProvidesYetIsFoundOnceLoaded) {
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  RefreshLog log;
  auto tracked = client->TrackContract("test.counter@1", 0, log.Callback());
  EXPECT_TRUE(absl::IsNotFound(tracked->Current().status())) << tracked->Current().status();
  const fs::path counter = Copy("counter_v1");
  ASSERT_TRUE(client->LoadBundle(counter.string()).ok());
  auto calls = log.WaitFor(1);
  ASSERT_THAT(calls, SizeIs(1));
  EXPECT_EQ(Describe(calls[0].first), "NOT_FOUND");
  EXPECT_EQ(Describe(calls[0].second), "counter 1.0.0 slot 0 gen 0");
}

TEST_F(TrackedContractTest, TrackingThatStartsBeforeTheHostCatchesUpWhenItComes) {
  Copy("counter_v1");
  auto client = Connect();
  RefreshLog log;
  auto tracked = client->TrackContract("test.counter@1", 0, log.Callback());
  EXPECT_TRUE(absl::IsUnavailable(tracked->Current().status())) << tracked->Current().status();
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto calls = log.WaitFor(1);
  ASSERT_THAT(calls, SizeIs(1));
  EXPECT_EQ(Describe(calls[0].first), "UNAVAILABLE");
  EXPECT_EQ(Describe(calls[0].second), "counter 1.0.0 slot 0 gen 0");
}

TEST_F(TrackedContractTest, RefreshesAfterKill9AndARestartOfTheHost) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const uint64_t first_epoch = host().epoch();
  auto client = Connect();
  RefreshLog log;
  auto tracked = client->TrackContract("test.counter@1", 0, log.Callback());
  ASSERT_TRUE(tracked->Current().ok());
  // The tracking subscription is up once a reload reaches it.
  ASSERT_TRUE(client->Reload("counter").ok());
  log.WaitFor(1);

  KillHost();
  // While the host is gone the last handle stays (it is all there is to know).
  EXPECT_EQ(tracked->Current()->host_epoch(), first_epoch);
  OverwriteArtifact(TestBundleDir("counter_v2"), root() / "counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto calls = log.WaitFor(2);
  ASSERT_THAT(calls, SizeIs(2));
  ASSERT_TRUE(calls[1].second.ok()) << calls[1].second.status();
  EXPECT_EQ(calls[1].first->host_epoch(), first_epoch);
  EXPECT_EQ(calls[1].second->host_epoch(), host().epoch());
  EXPECT_EQ(Describe(calls[1].second), "counter 2.0.0 slot 0 gen 0");
  EXPECT_EQ(tracked->Current()->host_epoch(), host().epoch());
}

TEST_F(TrackedContractTest, OutlivesItsHostClientAndMayBeDestroyedFromItsCallback) {
  const fs::path counter = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  std::mutex mu;
  std::unique_ptr<client::TrackedContract> tracked;
  std::promise<std::string> seen;
  {
    auto client = Connect();
    tracked = client->TrackContract("test.counter@1", 0, [&](const Handle&, const Handle& now) {
      std::unique_ptr<client::TrackedContract> mine;
      {
        std::lock_guard<std::mutex> lock(mu);
        mine = std::move(tracked);
      }
      mine.reset();  // destroys the tracker from inside its own callback
      seen.set_value(Describe(now));
    });
  }  // the HostClient is gone; the tracker keeps its channel and subscription
  auto other = Connect();
  OverwriteArtifact(TestBundleDir("counter_v2"), counter);
  ASSERT_TRUE(other->Reload("counter").ok());
  auto result = seen.get_future();
  ASSERT_EQ(result.wait_for(kCallDeadline), std::future_status::ready);
  EXPECT_EQ(result.get(), "counter 2.0.0 slot 0 gen 0");
}

TEST_F(TrackedContractTest, CurrentIsSafeFromManyThreadsDuringReloads) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  RefreshLog log;
  auto tracked = client->TrackContract("test.counter@1", 0, log.Callback());
  std::atomic<bool> stop{false};
  std::vector<std::thread> readers;
  std::atomic<uint64_t> reads{0};
  for (int i = 0; i < 4; ++i) {
    readers.emplace_back([&] {
      while (!stop.load()) {
        Handle h = tracked->Current();
        if (h.ok() && h->provider_bundle_name() == "counter") reads.fetch_add(1);
      }
    });
  }
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(client->Reload("counter").ok());
  // Refreshes coalesce: a lookup that already sees the last reload makes the remaining
  // RELOADED events old news. Wait for the handle as of the final registry revision.
  auto info = client->GetHostInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  log.WaitUntil("a handle as of the last reload", [&](const Handle& current) {
    return current.ok() && current->registry_revision() >= info->registry_revision();
  });
  stop = true;
  for (std::thread& t : readers) t.join();
  EXPECT_GT(reads.load(), 0u);
}

}  // namespace
}  // namespace polyplug::test
