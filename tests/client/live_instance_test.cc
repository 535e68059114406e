// LiveInstance against a real polyplug-host: calls made through reloads never fail and
// answer with the version that was live when they ran.
#include <atomic>
#include <condition_variable>
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
using ::testing::HasSubstr;

class LiveInstanceTest : public ClientTest {};

TEST_F(LiveInstanceTest, CallsThroughAHundredReloadsNeverFailAndFollowTheReloads) {
  const fs::path counter = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  auto live = client->MakeLiveInstance("test.counter@1");
  auto first = live->Invoke("version", "");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->response(), "v1");

  constexpr int kReloads = 100;
  // Reload k (1-based) installs v2 when k is odd, v1 when it is even.
  auto expected_after = [](int completed) { return completed % 2 == 0 ? "v1" : "v2"; };
  std::atomic<int> started{0}, completed{0};
  std::atomic<bool> stop{false};
  struct Call {
    int completed_at_start;
    int started_at_end;
    absl::StatusOr<std::string> answer;
  };
  std::vector<Call> calls;
  std::thread caller([&] {
    while (!stop.load()) {
      const int at_start = completed.load();
      auto response = live->Invoke("version", "");
      const int at_end = started.load();
      calls.push_back({at_start, at_end,
                       response.ok() ? absl::StatusOr<std::string>(response->response())
                                     : absl::StatusOr<std::string>(response.status())});
    }
  });
  for (int k = 1; k <= kReloads; ++k) {
    OverwriteArtifact(TestBundleDir(k % 2 == 1 ? "counter_v2" : "counter_v1"), counter);
    started.store(k);
    auto reloaded = client->Reload("counter");
    ASSERT_TRUE(reloaded.ok()) << reloaded.status();
    ASSERT_EQ(reloaded->outcome(), v1::RELOAD_OUTCOME_RELOADED) << reloaded->message();
    completed.store(k);
  }
  stop = true;
  caller.join();

  int between_reloads = 0;
  for (const Call& call : calls) {
    ASSERT_TRUE(call.answer.ok()) << "a call failed during the reloads: " << call.answer.status();
    // A call that no reload overlapped answers with the version the last reload installed.
    if (call.started_at_end == call.completed_at_start) {
      ++between_reloads;
      EXPECT_EQ(*call.answer, expected_after(call.completed_at_start))
          << "after reload " << call.completed_at_start;
    } else {
      EXPECT_TRUE(*call.answer == "v1" || *call.answer == "v2") << *call.answer;
    }
  }
  EXPECT_GT(between_reloads, 0);
  auto last = live->Invoke("version", "");
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_EQ(last->response(), expected_after(kReloads));
  EXPECT_GT(live->instances_made(), 1u);
}

TEST_F(LiveInstanceTest, AFailedReloadKeepsV1Answering) {
  const fs::path counter = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  auto live = client->MakeLiveInstance("test.counter@1");
  EXPECT_EQ(live->Invoke("version", "")->response(), "v1");
  WriteFile(counter / "libcounter.so", "not an ELF file");
  auto failed = client->Reload("counter");
  ASSERT_TRUE(failed.ok() && failed->outcome() == v1::RELOAD_OUTCOME_FAILED);
  auto after = live->Invoke("version", "");
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->response(), "v1");
}

TEST_F(LiveInstanceTest, ArgsAreKeptAcrossReloadsAndStateStartsOver) {
  const fs::path counter = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  auto live = client->MakeLiveInstance("test.counter@1");
  EXPECT_EQ(live->Invoke("count", "")->response(), "1");
  EXPECT_EQ(live->Invoke("count", "")->response(), "2");
  ASSERT_TRUE(client->Reload("counter").ok());
  // The instance was destroyed at PREPARING and made again: its state starts over.
  EXPECT_EQ(live->Invoke("count", "")->response(), "1");
  EXPECT_EQ(live->instances_made(), 2u);
}

TEST_F(LiveInstanceTest, CallsAfterAnUnloadFailWithTheReason) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  auto live = client->MakeLiveInstance("test.counter@1");
  ASSERT_TRUE(live->Invoke("version", "").ok());
  ASSERT_TRUE(client->UnloadBundle("counter", false).ok());
  auto gone = live->Invoke("version", "");
  EXPECT_TRUE(absl::IsNotFound(gone.status())) << gone.status();
  EXPECT_EQ(client::FailureReasonOf(gone.status()), v1::FAILURE_REASON_CONTRACT_NOT_FOUND);
  EXPECT_THAT(gone.status().message(), HasSubstr("test.counter@1"));
}

TEST_F(LiveInstanceTest, TheDestructorDestroysTheRemoteInstance) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  auto live = client->MakeLiveInstance("test.counter@1");
  ASSERT_TRUE(live->Invoke("version", "").ok());
  const std::optional<v1::InstanceRef> instance = live->instance();
  ASSERT_TRUE(instance.has_value());
  live.reset();
  auto after = client->Invoke(*instance, "version", "");
  EXPECT_EQ(client::FailureReasonOf(after.status()), v1::FAILURE_REASON_INSTANCE_NOT_FOUND)
      << after.status();
}

TEST_F(LiveInstanceTest, SaysWhenAReloadMadeItRecreateTheInstance) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  std::mutex mu;
  std::condition_variable changed;
  std::vector<client::InstanceRecreated> recreated;
  client::LiveInstance* self = nullptr;
  client::LiveInstanceOptions options;
  options.on_recreated = [&](const client::InstanceRecreated& r) {
    // It may call the LiveInstance: restore the state the previous instance had.
    client::LiveInstance* live = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu);
      live = self;
    }
    auto restored = live->Invoke("count", "");
    EXPECT_TRUE(restored.ok()) << restored.status();
    std::lock_guard<std::mutex> lock(mu);
    recreated.push_back(r);
    changed.notify_all();
  };
  auto live = client->MakeLiveInstance("test.counter@1", 0, "", options);
  {
    std::lock_guard<std::mutex> lock(mu);
    self = live.get();
  }
  client::LiveCallInfo info;
  auto first = live->Invoke("count", "", client::CallOptions{}, &info);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->response(), "1");
  EXPECT_EQ(info.generation, 1u);
  EXPECT_FALSE(info.recreated);
  const v1::InstanceRef first_instance = *live->instance();
  EXPECT_EQ(live->recreations(), 0u);

  ASSERT_TRUE(client->Reload("counter").ok());
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(changed.wait_for(lock, kCallDeadline, [&] { return !recreated.empty(); }))
        << "on_recreated did not run after the reload";
    ASSERT_EQ(recreated.size(), 1u);
    EXPECT_EQ(recreated[0].generation, 2u);
    EXPECT_EQ(recreated[0].previous.instance_id(), first_instance.instance_id());
    EXPECT_NE(recreated[0].instance.instance_id(), first_instance.instance_id());
  }
  EXPECT_EQ(live->recreations(), 1u);
  EXPECT_EQ(live->instances_made(), 2u);
  // The callback's call restored one count on the new instance.
  auto second = live->Invoke("count", "", client::CallOptions{}, &info);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->response(), "2");
  EXPECT_EQ(info.generation, 2u);
  // The callback's own call was the first on generation 2, so this one is not "recreated";
  // a caller that did not look at on_recreated learns it from the generation.
  EXPECT_FALSE(info.recreated);
  auto third = live->Invoke("count", "", client::CallOptions{}, &info);
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(info.generation, 2u);
  EXPECT_FALSE(info.recreated);
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(recreated.size(), 1u) << "one reload, one re-creation";
}

TEST_F(LiveInstanceTest, ACallSaysItRanOnARecreatedInstance) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  auto live = client->MakeLiveInstance("test.counter@1");
  client::LiveCallInfo info;
  ASSERT_TRUE(live->Invoke("count", "", client::CallOptions{}, &info).ok());
  EXPECT_EQ(info.generation, 1u);
  EXPECT_FALSE(info.recreated);
  ASSERT_TRUE(client->Reload("counter").ok());
  auto after = live->Invoke("count", "", client::CallOptions{}, &info);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->response(), "1") << "the state started over";
  EXPECT_EQ(info.generation, 2u);
  EXPECT_TRUE(info.recreated);
  ASSERT_TRUE(live->Invoke("count", "", client::CallOptions{}, &info).ok());
  EXPECT_FALSE(info.recreated);
  EXPECT_EQ(live->recreations(), 1u);
}

}  // namespace
}  // namespace polyplug::test
