// Callback equivalence: one scenario (load, a reload that succeeds, one that fails, a
// cascade, an unload) run once against an in-process core::Runtime with its phase
// callback, and once through a real polyplug-host with client::Subscribe. The two
// recorded sequences are equal field by field (the host epoch, which is random per start,
// and wall-clock timestamps aside). The scenario is in equivalence_scenario.h, which
// inprocess_recorder shares for the Python client's tests.
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "client/client_fixture.h"
#include "client/equivalence_scenario.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "polyplug/client/host_client.h"
#include "polyplug/core/runtime.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::polyplug::host::v1;

// The fields both sides must agree on, as a client::PhaseEvent (epoch and time zeroed).
client::PhaseEvent Comparable(const core::PhaseEvent& e) {
  client::PhaseEvent out;
  out.seq = e.seq;
  out.phase = static_cast<client::Phase>(static_cast<int>(e.phase));
  out.bundle_id = e.bundle_id;
  out.bundle_name = e.bundle_name;
  out.bundle_version = {e.bundle_version.major, e.bundle_version.minor, e.bundle_version.patch};
  out.reload_id = e.reload_id;
  out.parent_reload_id = e.parent_reload_id;
  out.root_reload_id = e.root_reload_id;
  out.reason = static_cast<v1::FailureReason>(static_cast<int>(e.reason));
  out.message = e.message;
  out.registry_revision = e.registry_revision;
  out.live_instances = e.live_instances;
  out.artifact_sha256 = e.artifact_sha256;
  return out;
}

client::PhaseEvent Comparable(client::PhaseEvent e) {
  e.host_epoch = 0;
  e.timestamp_unix_nanos = 0;
  return e;
}

class CallbackEquivalenceTest : public ClientTest {};

TEST_F(CallbackEquivalenceTest, SubscribeSeesExactlyWhatTheInProcessCallbackSees) {
  const fs::path state = dir_.path() / "state";  // the same for both runs: same messages

  // 1. In process.
  const std::vector<core::PhaseEvent> in_process =
      RecordInProcess(root(), state, [](const std::string& what) { ADD_FAILURE() << what; });
  ASSERT_FALSE(in_process.empty());

  // 2. Through polyplug-host and the client library.
  PrepareRoot(root());
  ASSERT_NO_FATAL_FAILURE(StartHost({"--state-dir", state.string()}));
  auto client = Connect();
  SubscriptionLog log;
  client::SubscribeOptions options;
  options.resume_after = client::Cursor{host().epoch(), 0};  // from the very first event
  auto subscription = client->Subscribe(log.Handlers(), options);
  RunScenario(
      root(),
      {
          .load = [&](const fs::path& dir) { ASSERT_TRUE(client->LoadBundle(dir.string()).ok()); },
          .reload =
              [&](const std::string& name, bool expect_reloaded) {
                auto response = client->Reload(name);
                ASSERT_TRUE(response.ok()) << response.status();
                EXPECT_EQ(response->outcome() == v1::RELOAD_OUTCOME_RELOADED, expect_reloaded)
                    << name << ": " << response->message();
              },
          .unload_with_dependents =
              [&](const std::string& name) { ASSERT_TRUE(client->UnloadBundle(name, true).ok()); },
      });
  ASSERT_TRUE(log.WaitForEvents(in_process.size()));
  const std::vector<client::PhaseEvent> remote = log.events();

  // The scenario produced what it was meant to: every kind of phase, a cascade, a failure.
  std::vector<std::string> expected_kinds = {
      "LOADED chain_a",    "LOADED chain_b",    "LOADED chain_c",    "LOADED counter",
      "PREPARING counter", "RELOADED counter",  "PREPARING counter", "FAILED counter",
      "PREPARING chain_a", "PREPARING chain_b", "PREPARING chain_c", "RELOADED chain_c",
      "RELOADED chain_b",  "RELOADED chain_a",  "UNLOADING chain_c", "UNLOADING chain_b",
      "UNLOADING chain_a"};
  std::vector<std::string> in_process_kinds;
  for (const core::PhaseEvent& e : in_process) in_process_kinds.push_back(Describe(e));
  EXPECT_EQ(in_process_kinds, expected_kinds);

  ASSERT_EQ(remote.size(), in_process.size());
  for (size_t i = 0; i < remote.size(); ++i) {
    EXPECT_EQ(Comparable(remote[i]), Comparable(in_process[i]))
        << "event " << i << ": remote " << Describe(remote[i]) << " seq " << remote[i].seq
        << " message '" << remote[i].message << "', in process " << Describe(in_process[i])
        << " seq " << in_process[i].seq << " message '" << in_process[i].message << "'";
    EXPECT_EQ(remote[i].host_epoch, host().epoch());
    EXPECT_GT(remote[i].timestamp_unix_nanos, 0);
    EXPECT_EQ(remote[i].IsTerminal(), in_process[i].IsTerminal());
  }
  EXPECT_THAT(log.resyncs(), ::testing::IsEmpty()) << "resumed from seq 0: no snapshot";
}

}  // namespace
}  // namespace polyplug::test
