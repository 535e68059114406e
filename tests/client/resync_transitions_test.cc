// The transitions a subscription missed, replayed as synthetic events after a resync:
// after falling behind the host's journal, and after a host restart (kill -9, a new epoch)
// with bundles reloaded, unloaded and loaded while the client was cut off. Relative to what
// the handlers were last told, in a fixed order (unloadings, then loads and reloads by
// name), before on_resynced; never for the first snapshot.
#include <signal.h>

#include <string>
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
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::SizeIs;

using ResyncTransitionsTest = ClientTest;

// The events delivered from index `from` on.
std::vector<client::PhaseEvent> EventsFrom(const SubscriptionLog& log, size_t from) {
  std::vector<client::PhaseEvent> events = log.events();
  return std::vector<client::PhaseEvent>(
      events.begin() + static_cast<std::ptrdiff_t>(std::min(from, events.size())), events.end());
}

TEST_F(ResyncTransitionsTest, TheFirstSnapshotSynthesizesNothing) {
  Copy("counter_v1");
  Copy("stateless");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  SubscriptionLog log;
  auto subscription = client->Subscribe(log.Handlers());
  ASSERT_TRUE(log.WaitForLine("RESYNCED INITIAL counter,stateless"));
  EXPECT_THAT(log.lines(), ElementsAre("CONNECTED", "RESYNCED INITIAL counter,stateless"));
  EXPECT_THAT(log.events(), IsEmpty()) << "on_loaded is not called for the initial snapshot";
}

TEST_F(ResyncTransitionsTest, AfterFallingBehindTheJournal) {
  const fs::path counter = Copy("counter_v1");
  Copy("stateless");
  ASSERT_NO_FATAL_FAILURE(StartHost({"--journal-size", "3"}));
  TcpProxy proxy(socket_path());
  auto through_proxy = Connect(FastOptions(), proxy.address());
  auto direct = Connect();
  SubscriptionLog log;
  auto subscription = through_proxy->Subscribe(log.Handlers());
  ASSERT_TRUE(log.WaitForLine("RESYNCED INITIAL counter,stateless"));
  const size_t before_cut = log.lines().size();
  proxy.Sever();
  ASSERT_TRUE(WaitForDisconnect(log, before_cut));

  // Four events while cut off, one more than the journal keeps.
  OverwriteArtifact(TestBundleDir("counter_v2"), counter);
  ASSERT_NO_FATAL_FAILURE(ReloadOk(*direct, "counter"));       // PREPARING, RELOADED
  ASSERT_TRUE(direct->UnloadBundle("stateless", false).ok());  // UNLOADING
  const fs::path chain_a = Copy("chain_a");
  ASSERT_TRUE(direct->LoadBundle(chain_a.string()).ok());  // LOADED
  proxy.Restore();
  ASSERT_TRUE(log.WaitForLine("RESYNCED FELL_BEHIND chain_a,counter", before_cut));
  EXPECT_THAT(LinesFrom(log, before_cut),
              ElementsAre("DISCONNECTED", "CONNECTED", "UNLOADING stateless (synthetic)",
                          "LOADED chain_a (synthetic)", "RELOADED counter (synthetic)",
                          "RESYNCED FELL_BEHIND chain_a,counter"));
  const client::Resynced resynced = log.resyncs().back();
  const std::vector<client::PhaseEvent> synthetic = log.events();
  ASSERT_THAT(synthetic, SizeIs(3));
  for (const client::PhaseEvent& e : synthetic) {
    EXPECT_TRUE(e.synthetic);
    EXPECT_EQ(e.host_epoch, host().epoch());
    EXPECT_EQ(e.seq, resynced.seq);
    EXPECT_EQ(e.registry_revision, resynced.registry_revision);
    EXPECT_EQ(e.reload_id, 0u);
    EXPECT_GT(e.timestamp_unix_nanos, 0);
  }
  EXPECT_EQ(synthetic[0].bundle_version, (client::Version{1, 0, 0})) << "stateless as it was";
  EXPECT_EQ(synthetic[1].bundle_version, (client::Version{1, 0, 0}));
  EXPECT_EQ(synthetic[2].bundle_version, (client::Version{2, 0, 0})) << "counter as it is";
  EXPECT_EQ(synthetic[2].bundle_id, resynced.bundles[1].id);

  // Live events follow, not synthetic; the handlers' picture is the host's.
  ASSERT_NO_FATAL_FAILURE(ReloadOk(*direct, "counter"));
  ASSERT_TRUE(log.WaitForEvents(5));
  const std::vector<client::PhaseEvent> live = EventsFrom(log, 3);
  EXPECT_THAT(Describe(live), ElementsAre("PREPARING counter", "RELOADED counter"));
  EXPECT_EQ(live[0].seq, resynced.seq + 1);
}

TEST_F(ResyncTransitionsTest, AfterAHostRestartWithChangesWhileTheClientWasCutOff) {
  const fs::path counter = Copy("counter_v1");
  Copy("stateless");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const uint64_t first_epoch = host().epoch();
  TcpProxy proxy(socket_path());
  auto through_proxy = Connect(FastOptions(), proxy.address());
  SubscriptionLog log;
  auto subscription = through_proxy->Subscribe(log.Handlers());
  ASSERT_TRUE(log.WaitForLine("RESYNCED INITIAL counter,stateless"));
  const size_t before_cut = log.lines().size();
  proxy.Sever();
  ASSERT_TRUE(WaitForDisconnect(log, before_cut));

  // kill -9, a new host (new epoch), and changes on it before the client can see it.
  KillHost();
  ASSERT_NO_FATAL_FAILURE(StartHost());
  ASSERT_NE(host().epoch(), first_epoch);
  auto direct = Connect();
  OverwriteArtifact(TestBundleDir("counter_v2"), counter);
  ASSERT_NO_FATAL_FAILURE(ReloadOk(*direct, "counter"));
  ASSERT_TRUE(direct->UnloadBundle("stateless", false).ok());
  const fs::path chain_a = Copy("chain_a");
  ASSERT_TRUE(direct->LoadBundle(chain_a.string()).ok());
  proxy.Restore();

  ASSERT_TRUE(log.WaitForLine("RESYNCED HOST_RESTARTED chain_a,counter", before_cut));
  EXPECT_THAT(
      LinesFrom(log, before_cut),
      ElementsAre("DISCONNECTED", "CONNECTED", "HOST_RESTARTED", "UNLOADING stateless (synthetic)",
                  "LOADED chain_a (synthetic)", "RELOADED counter (synthetic)",
                  "RESYNCED HOST_RESTARTED chain_a,counter"));
  const client::Resynced resynced = log.resyncs().back();
  for (const client::PhaseEvent& e : log.events()) {
    EXPECT_TRUE(e.synthetic) << Describe(e);
    EXPECT_EQ(e.host_epoch, host().epoch()) << "the new epoch";
    EXPECT_EQ(e.seq, resynced.seq);
  }
  EXPECT_EQ(log.events().at(2).bundle_version, (client::Version{2, 0, 0}));
}

TEST_F(ResyncTransitionsTest, AHostRestartThatChangedNothingSynthesizesNothing) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  SubscriptionLog log;
  auto subscription = client->Subscribe(log.Handlers());
  ASSERT_TRUE(log.WaitForLine("RESYNCED INITIAL counter"));
  const size_t before_kill = log.lines().size();
  KillHost();
  ASSERT_TRUE(WaitForDisconnect(log, before_kill));
  ASSERT_NO_FATAL_FAILURE(StartHost());
  ASSERT_TRUE(log.WaitForLine("RESYNCED HOST_RESTARTED counter", before_kill));
  EXPECT_THAT(LinesFrom(log, before_kill),
              ElementsAre("DISCONNECTED", "CONNECTED", "HOST_RESTARTED",
                          "RESYNCED HOST_RESTARTED counter"));
}

// With --hash-artifacts, a rebuild at the same version is a reload too.
TEST_F(ResyncTransitionsTest, AnotherArtifactAtTheSameVersionIsAReloadWhenTheHostHashes) {
  const fs::path counter = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost({"--journal-size", "1", "--hash-artifacts"}));
  TcpProxy proxy(socket_path());
  auto through_proxy = Connect(FastOptions(), proxy.address());
  auto direct = Connect();
  SubscriptionLog log;
  auto subscription = through_proxy->Subscribe(log.Handlers());
  ASSERT_TRUE(log.WaitForLine("RESYNCED INITIAL counter"));
  const std::string old_sha = log.resyncs().at(0).bundles.at(0).artifact_sha256;
  ASSERT_FALSE(old_sha.empty());
  const size_t before_cut = log.lines().size();
  proxy.Sever();
  ASSERT_TRUE(WaitForDisconnect(log, before_cut));
  // v2's library under v1's manifest: same version, other bytes.
  fs::copy_file(TestBundleDir("counter_v2") / "libcounter.so", counter / "libcounter.so",
                fs::copy_options::overwrite_existing);
  ASSERT_NO_FATAL_FAILURE(ReloadOk(*direct, "counter"));
  proxy.Restore();
  ASSERT_TRUE(log.WaitForLine("RESYNCED FELL_BEHIND counter", before_cut));
  EXPECT_THAT(LinesFrom(log, before_cut),
              ElementsAre("DISCONNECTED", "CONNECTED", "RELOADED counter (synthetic)",
                          "RESYNCED FELL_BEHIND counter"));
  const client::PhaseEvent reloaded = log.events().at(0);
  EXPECT_EQ(reloaded.bundle_version, (client::Version{1, 0, 0}));
  EXPECT_EQ(reloaded.artifact_sha256, log.resyncs().back().bundles.at(0).artifact_sha256);
  EXPECT_NE(reloaded.artifact_sha256, old_sha);
}

TEST_F(ResyncTransitionsTest, CanBeTurnedOff) {
  const fs::path counter = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost({"--journal-size", "1"}));
  TcpProxy proxy(socket_path());
  auto through_proxy = Connect(FastOptions(), proxy.address());
  auto direct = Connect();
  SubscriptionLog log;
  client::SubscribeOptions options;
  options.synthesize_transitions = false;
  auto subscription = through_proxy->Subscribe(log.Handlers(), options);
  ASSERT_TRUE(log.WaitForLine("RESYNCED INITIAL counter"));
  const size_t before_cut = log.lines().size();
  proxy.Sever();
  ASSERT_TRUE(WaitForDisconnect(log, before_cut));
  OverwriteArtifact(TestBundleDir("counter_v2"), counter);
  ASSERT_NO_FATAL_FAILURE(ReloadOk(*direct, "counter"));
  proxy.Restore();
  ASSERT_TRUE(log.WaitForLine("RESYNCED FELL_BEHIND counter", before_cut));
  EXPECT_THAT(LinesFrom(log, before_cut),
              ElementsAre("DISCONNECTED", "CONNECTED", "RESYNCED FELL_BEHIND counter"));
  EXPECT_EQ(log.resyncs().back().bundles.at(0).version, (client::Version{2, 0, 0}));
}

// Resumed from a cursor, the subscription has no snapshot to compare with: it synthesizes
// only what it can know, from the events it delivered.
TEST_F(ResyncTransitionsTest, AResumedSubscriptionSynthesizesOnlyForBundlesItHeardOf) {
  const fs::path counter = Copy("counter_v1");
  Copy("stateless");
  ASSERT_NO_FATAL_FAILURE(StartHost({"--journal-size", "3"}));
  TcpProxy proxy(socket_path());
  auto through_proxy = Connect(FastOptions(), proxy.address());
  auto direct = Connect();
  SubscriptionLog log;
  client::SubscribeOptions options;
  options.resume_after = client::Cursor{host().epoch(), host().info_at_start().last_seq()};
  auto subscription = through_proxy->Subscribe(log.Handlers(), options);
  ASSERT_TRUE(log.WaitForLine("CONNECTED"));
  ASSERT_NO_FATAL_FAILURE(ReloadOk(*direct, "stateless"));  // heard of: stateless 1.0.0
  ASSERT_TRUE(log.WaitForEvents(2));
  const size_t before_cut = log.lines().size();
  proxy.Sever();
  ASSERT_TRUE(WaitForDisconnect(log, before_cut));
  OverwriteArtifact(TestBundleDir("counter_v2"), counter);
  ASSERT_NO_FATAL_FAILURE(ReloadOk(*direct, "counter"));  // never heard of counter
  ASSERT_TRUE(direct->UnloadBundle("stateless", false).ok());
  ASSERT_NO_FATAL_FAILURE(ReloadOk(*direct, "counter"));
  proxy.Restore();
  ASSERT_TRUE(log.WaitForLine("RESYNCED FELL_BEHIND counter", before_cut));
  EXPECT_THAT(LinesFrom(log, before_cut),
              ElementsAre("DISCONNECTED", "CONNECTED", "UNLOADING stateless (synthetic)",
                          "RESYNCED FELL_BEHIND counter"));
}

}  // namespace
}  // namespace polyplug::test
