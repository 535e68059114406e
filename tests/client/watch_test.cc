// polyplug-host --watch end to end: files change in a bundle root, the host reloads, and a
// client sees the phases and the answers of a remote call change. Every wait is on an event
// the client receives (the host's settle time only delays them).
#include <cstdio>
#include <string>

#include "client/client_fixture.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "polyplug/client/host_client.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::polyplug::host::v1;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class WatchTest : public ClientTest {
 protected:
  void SetUp() override {
    counter_ = Copy("counter_v1");
    ASSERT_NO_FATAL_FAILURE(StartHost({"--watch", "--watch-settle", "100ms"}));
    client_ = Connect();
    subscription_ = client_->Subscribe(log_.Handlers());
    ASSERT_TRUE(log_.WaitForLine("RESYNCED INITIAL counter"));
    live_ = client_->MakeLiveInstance("test.counter@1");
    EXPECT_EQ(Version(), "v1");
  }

  std::string Version() {
    auto answer = live_->Invoke("version", "");
    return answer.ok() ? answer->response() : answer.status().ToString();
  }

  // The phase lines that arrived from line `from` on, once `last` arrived.
  std::vector<std::string> PhasesUntil(size_t from, const std::string& last) {
    EXPECT_TRUE(log_.WaitForLine(last, from));
    std::vector<std::string> lines = log_.lines();
    return std::vector<std::string>(lines.begin() + static_cast<std::ptrdiff_t>(from), lines.end());
  }

  fs::path counter_;
  SubscriptionLog log_;
  std::unique_ptr<client::HostClient> client_;
  std::unique_ptr<client::Subscription> subscription_;
  std::unique_ptr<client::LiveInstance> live_;
};

TEST_F(WatchTest, InPlaceRewritesRenamesGarbageAndRestoreEachGiveTheRightPhase) {
  // 1. The linker's way: the artifact rewritten in place.
  size_t from = log_.lines().size();
  OverwriteArtifact(TestBundleDir("counter_v2"), counter_);
  EXPECT_THAT(PhasesUntil(from, "RELOADED counter"),
              ElementsAre("PREPARING counter", "RELOADED counter"));
  EXPECT_EQ(Version(), "v2");

  // 2. The build system's way: written next to it, then renamed over it.
  from = log_.lines().size();
  const fs::path temp = counter_ / ".libcounter.so.partial";
  fs::copy_file(TestBundleDir("counter_v1") / "libcounter.so", temp);
  fs::rename(temp, counter_ / "libcounter.so");
  EXPECT_THAT(PhasesUntil(from, "RELOADED counter"),
              ElementsAre("PREPARING counter", "RELOADED counter"));
  EXPECT_EQ(Version(), "v1");

  // 3. Garbage: FAILED with a reason naming the artifact; v1 keeps answering.
  from = log_.lines().size();
  WriteFile(counter_ / "libcounter.so", "this is not a shared object");
  EXPECT_THAT(PhasesUntil(from, "FAILED counter"),
              ElementsAre("PREPARING counter", "FAILED counter"));
  const client::PhaseEvent failed = log_.events().back();
  EXPECT_EQ(failed.reason, v1::FAILURE_REASON_ARTIFACT_NOT_LOADABLE);
  EXPECT_THAT(failed.message, HasSubstr("not an ELF shared object"));
  EXPECT_EQ(Version(), "v1");

  // 4. Restored: RELOADED, and the new code answers.
  from = log_.lines().size();
  OverwriteArtifact(TestBundleDir("counter_v2"), counter_);
  EXPECT_THAT(PhasesUntil(from, "RELOADED counter"),
              ElementsAre("PREPARING counter", "RELOADED counter"));
  EXPECT_EQ(Version(), "v2");
}

TEST_F(WatchTest, AHalfWrittenArtifactIsReportedAndThenLoadedOnceComplete) {
  const std::string full = ReadFile(TestBundleDir("counter_v2") / "libcounter.so");
  ASSERT_GT(full.size(), 4096u);
  size_t from = log_.lines().size();
  // A writer that stopped half way: the ELF header is there, the rest is not.
  WriteFile(counter_ / "libcounter.so", full.substr(0, full.size() / 2));
  EXPECT_THAT(PhasesUntil(from, "FAILED counter"),
              ElementsAre("PREPARING counter", "FAILED counter"));
  EXPECT_THAT(log_.events().back().message, HasSubstr("truncated or still being written"));
  EXPECT_EQ(Version(), "v1") << "the previous version stays live";

  from = log_.lines().size();
  WriteFile(counter_ / "libcounter.so", full);  // the writer finished
  EXPECT_THAT(PhasesUntil(from, "RELOADED counter"),
              ElementsAre("PREPARING counter", "RELOADED counter"));
  EXPECT_EQ(Version(), "v2");
}

TEST_F(WatchTest, ANewBundleDirectoryIsLoadedAndARemovedOneUnloaded) {
  size_t from = log_.lines().size();
  // Staged outside the root, then moved in whole, as a deployment would.
  const fs::path staged = CopyTestBundle("stateless", dir_.path());
  fs::rename(staged, root() / "stateless");
  EXPECT_THAT(PhasesUntil(from, "LOADED stateless"), ElementsAre("LOADED stateless"));
  auto found = client_->FindContract("test.stateless@1");
  EXPECT_TRUE(found.ok()) << found.status();

  from = log_.lines().size();
  fs::remove_all(root() / "stateless");
  EXPECT_THAT(PhasesUntil(from, "UNLOADING stateless"), ElementsAre("UNLOADING stateless"));
  // UNLOADING announces the unload; the runtime runs one mutation at a time, so once a
  // reload issued now has returned, the unload has finished.
  auto reloaded = client_->Reload("counter");
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  found = client_->FindContract("test.stateless@1");
  EXPECT_EQ(client::FailureReasonOf(found.status()), v1::FAILURE_REASON_CONTRACT_NOT_FOUND);
  EXPECT_EQ(Version(), "v1") << "the other bundle was not touched";
}

TEST_F(WatchTest, AnEditedManifestThatIsInvalidFailsAndTheOldVersionStays) {
  const std::string manifest = ReadFile(counter_ / "manifest.toml");
  size_t from = log_.lines().size();
  WriteFile(counter_ / "manifest.toml", "name = [this is not toml");
  EXPECT_THAT(PhasesUntil(from, "FAILED counter"), ElementsAre("FAILED counter"))
      << "a manifest error fails before PREPARING (docs/SEMANTICS.md §4 step 3)";
  EXPECT_EQ(log_.events().back().reason, v1::FAILURE_REASON_MANIFEST_INVALID);
  EXPECT_EQ(Version(), "v1");

  from = log_.lines().size();
  WriteFile(counter_ / "manifest.toml", manifest);
  EXPECT_THAT(PhasesUntil(from, "RELOADED counter"),
              ElementsAre("PREPARING counter", "RELOADED counter"));
  EXPECT_EQ(Version(), "v1");
}

}  // namespace
}  // namespace polyplug::test
