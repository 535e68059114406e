// Soak: many reload cycles (counter v1 <-> v2, by copying the other version's files over the
// bundle and reloading) against the real polyplug-host with a few subscribers attached.
//
// POLYPLUG_SOAK_CYCLES: the number of reload cycles (default 10000). The ctest registration
// (tests/stress/CMakeLists.txt) sets 300 for CI; run the binary directly for a long soak:
//   POLYPLUG_SOAK_CYCLES=10000 ./stress_host_soak_test
//
// After a warm-up, the host's open file descriptors (/proc/<pid>/fd), mapped bundle images
// (distinct files in /proc/<pid>/maps that are the bundle's private copies or libcounter),
// threads (/proc/<pid>/task) and RSS (VmRSS) are measured; at the end they must stay within
// small bounds, and every subscriber must have received every event in order. The host runs
// with a small journal (--journal-size) so that the journal is full, and its memory settled,
// by the end of the warm-up. Each cycle waits until every subscriber has its events, so
// subscribers never fall behind the journal; nothing waits on a sleep.
#include <sys/types.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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

constexpr int kDefaultCycles = 10000;
constexpr int kSubscribers = 3;
constexpr int kJournalSize = 64;

// Bounds, end versus after the warm-up.
constexpr int64_t kMaxExtraFds = 16;
constexpr int64_t kMaxExtraThreads = 4;
constexpr int64_t kMaxRssGrowthKb = 24 * 1024;

int SoakCycles() {
  const char* text = std::getenv("POLYPLUG_SOAK_CYCLES");
  int cycles = 0;
  if (text == nullptr || !absl::SimpleAtoi(text, &cycles) || cycles < 2) return kDefaultCycles;
  return cycles;
}

size_t CountEntries(const fs::path& dir) {
  size_t n = 0;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) ++n;
  return n;
}

struct Usage {
  int64_t fds = 0;
  int64_t threads = 0;
  int64_t rss_kb = 0;
  std::vector<std::string> images;  // distinct mapped files of the bundle

  std::string ToString() const {
    return absl::StrCat("fds=", fds, " threads=", threads, " rss=", rss_kb,
                        "kB images=", images.size(), " [", absl::StrJoin(images, ", "), "]");
  }
};

Usage Measure(pid_t pid, const fs::path& state_dir) {
  const fs::path proc = fs::path("/proc") / std::to_string(pid);
  Usage u;
  u.fds = static_cast<int64_t>(CountEntries(proc / "fd"));
  u.threads = static_cast<int64_t>(CountEntries(proc / "task"));
  std::ifstream status(proc / "status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) {
      std::istringstream fields(line.substr(6));
      fields >> u.rss_kb;
    }
  }
  std::ifstream maps(proc / "maps");
  std::set<std::string> images;
  for (std::string line; std::getline(maps, line);) {
    // address perms offset dev inode [path]: the path starts at the first '/' after the inode.
    const size_t slash = line.find('/');
    if (slash == std::string::npos) continue;
    const std::string path = line.substr(slash);
    if (path.find(state_dir.string()) != std::string::npos ||
        path.find("libcounter") != std::string::npos) {
      images.insert(path);
    }
  }
  u.images.assign(images.begin(), images.end());
  return u;
}

using HostSoakTest = ClientTest;

TEST_F(HostSoakTest, ReloadCyclesKeepResourcesBoundedAndEventsInOrder) {
  const int cycles = SoakCycles();
  const int warmup = std::min(100, cycles / 3);
  const fs::path dir = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost({"--journal-size", std::to_string(kJournalSize)}));
  const pid_t pid = host().pid();
  ASSERT_GT(pid, 0);
  const fs::path state_dir = host().dir() / "state";

  auto subscriber_client = Connect();
  ASSERT_NE(subscriber_client, nullptr);
  std::vector<std::unique_ptr<SubscriptionLog>> logs;
  std::vector<std::unique_ptr<client::Subscription>> subscriptions;
  for (int s = 0; s < kSubscribers; ++s) {
    logs.push_back(std::make_unique<SubscriptionLog>());
    subscriptions.push_back(subscriber_client->Subscribe(logs.back()->Handlers()));
  }
  for (auto& log : logs) ASSERT_TRUE(log->WaitForLine("RESYNCED INITIAL counter"));
  const uint64_t synced = host().info_at_start().last_seq();

  auto reloader = Connect();
  ASSERT_NE(reloader, nullptr);
  Usage before;
  for (int i = 0; i < cycles; ++i) {
    if (i == warmup) {
      before = Measure(pid, state_dir);
      std::cout << "[soak] after " << warmup << " warm-up cycles: " << before.ToString()
                << std::endl;
    }
    const uint32_t major = i % 2 == 0 ? 2 : 1;
    OverwriteArtifact(TestBundleDir(major == 2 ? "counter_v2" : "counter_v1"), dir);
    absl::StatusOr<v1::ReloadResponse> response = reloader->Reload("counter");
    ASSERT_TRUE(response.ok()) << "cycle " << i << ": " << response.status();
    ASSERT_EQ(response->outcome(), v1::RELOAD_OUTCOME_RELOADED)
        << "cycle " << i << ": " << response->message();
    ASSERT_EQ(response->events_size(), 2) << "cycle " << i;
    ASSERT_EQ(response->events(1).bundle_version().major(), major) << "cycle " << i;
    ASSERT_EQ(response->events(1).seq(), synced + 2 * static_cast<uint64_t>(i) + 2);
    for (auto& log : logs) ASSERT_TRUE(log->WaitForEvents(2 * static_cast<size_t>(i) + 2));
  }
  const Usage after = Measure(pid, state_dir);
  std::cout << "[soak] after " << cycles << " cycles: " << after.ToString() << std::endl;
  std::cout << "[soak] growth: fds " << after.fds - before.fds << ", threads "
            << after.threads - before.threads << ", rss " << after.rss_kb - before.rss_kb
            << " kB, images " << static_cast<int64_t>(after.images.size()) - 1
            << " beyond the live one" << std::endl;

  EXPECT_LE(after.fds, before.fds + kMaxExtraFds) << before.ToString() << "\n" << after.ToString();
  EXPECT_LE(after.threads, before.threads + kMaxExtraThreads);
  EXPECT_LE(after.rss_kb, before.rss_kb + kMaxRssGrowthKb);
  // Only the live version's private copy stays mapped.
  EXPECT_THAT(after.images, SizeIs(1)) << after.ToString();
  EXPECT_LE(after.images.size(), std::max<size_t>(1, before.images.size()));

  // Every subscriber got every event, in order, with no resync.
  for (size_t s = 0; s < logs.size(); ++s) {
    SCOPED_TRACE(absl::StrCat("subscriber ", s));
    const std::vector<client::PhaseEvent> events = logs[s]->events();
    ASSERT_EQ(events.size(), 2 * static_cast<size_t>(cycles));
    EXPECT_EQ(events.front().seq, synced + 1);
    EXPECT_THAT(SequenceProblems(events), IsEmpty());
    for (size_t k = 0; k < events.size(); ++k) {
      const client::Phase phase = k % 2 == 0 ? client::Phase::kPreparing : client::Phase::kReloaded;
      ASSERT_EQ(events[k].phase, phase) << "event " << k;
    }
    EXPECT_THAT(logs[s]->resyncs(), SizeIs(1));
  }
  subscriptions.clear();
}

}  // namespace
}  // namespace polyplug::test
