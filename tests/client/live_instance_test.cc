// LiveInstance against a real polyplug-host: calls made through reloads never fail and
// answer with the version that was live when they ran.
#include <atomic>
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

}  // namespace
}  // namespace polyplug::test
