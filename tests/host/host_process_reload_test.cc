// HostProcessTest, reloads: the real polyplug-host reloads a bundle by name and by path (a
// sibling directory of the same bundle included), three concurrent subscribers see the very
// events of the response, a failed reload is a response that keeps the previous version
// live, a reload cascades through opted-in dependents, and concurrent reloads are serialized.
//
// Each test starts its own host on a temporary bundle root holding copies of the test
// bundles it needs (HostProcessTest, host_process_fixture.h), so reloads can rewrite files
// freely. Nothing sleeps: the tests wait on stream reads, call completions and process exit.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "host/host_calls.h"
#include "host/host_fixture.h"
#include "host/host_process_fixture.h"
#include "polyplug/core/ids.h"
#include "polyplug/host/v1/host.grpc.pb.h"
#include "support/bundle_fixture.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::polyplug::host::v1;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

TEST_F(HostProcessTest, ReloadV1ToV2IsSeenIdenticallyByThreeConcurrentSubscribers) {
  const fs::path counter = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const v1::HostInfo before = HostInfo();
  auto found_before = FindContract("test.counter@1");
  ASSERT_TRUE(found_before.status.ok()) << ToString(found_before.status);
  EXPECT_EQ(VersionString(found_before.response.provider_version()), "1.0.0");

  // Three subscribers, each on its own connection, all registered before the reload.
  std::vector<std::unique_ptr<v1::PluginHost::Stub>> stubs;
  std::vector<std::unique_ptr<Subscription>> subs;
  for (int i = 0; i < 3; ++i) {
    stubs.push_back(host().NewStub());
    v1::SubscribeReloadPhasesRequest request;
    request.set_include_snapshot(true);
    subs.push_back(std::make_unique<Subscription>(*stubs.back(), request, host().NewContext()));
    std::vector<v1::ReloadPhaseEvent> snapshot;
    auto end = subs.back()->ReadSnapshot(&snapshot);
    ASSERT_TRUE(end.has_value()) << "subscriber " << i << ": " << ToString(subs.back()->Finish());
    EXPECT_THAT(Describe(snapshot), ElementsAre("SNAPSHOT counter")) << "subscriber " << i;
    EXPECT_EQ(end->seq(), before.last_seq()) << "subscriber " << i;
    EXPECT_EQ(end->host_epoch(), host().epoch()) << "subscriber " << i;
  }
  EXPECT_EQ(HostInfo().subscriber_count(), 3u);

  OverwriteArtifact(TestBundleDir("counter_v2"), counter);
  const auto reload = ReloadByName("counter");
  ASSERT_TRUE(reload.status.ok()) << ToString(reload.status);
  const v1::ReloadResponse& response = reload.response;
  EXPECT_EQ(response.outcome(), v1::RELOAD_OUTCOME_RELOADED) << response.ShortDebugString();
  EXPECT_EQ(response.bundle_name(), "counter");
  EXPECT_EQ(response.host_epoch(), host().epoch());
  EXPECT_NE(response.reload_id(), 0u);
  EXPECT_GT(response.registry_revision(), before.registry_revision());
  ASSERT_THAT(Describe(response.events()), ElementsAre("PREPARING counter", "RELOADED counter"));
  EXPECT_THAT(SeqsOf(response.events()), ElementsAre(before.last_seq() + 1, before.last_seq() + 2));
  for (const v1::ReloadPhaseEvent& e : response.events()) {
    EXPECT_EQ(e.kind(), v1::EVENT_KIND_PHASE);
    EXPECT_EQ(e.host_epoch(), host().epoch());
    EXPECT_EQ(e.reload_id(), response.reload_id());
    EXPECT_EQ(e.root_reload_id(), response.reload_id());
    EXPECT_EQ(e.parent_reload_id(), 0u);
    EXPECT_EQ(e.bundle_id(), found_before.response.provider_bundle_id());
  }
  EXPECT_EQ(VersionString(response.events(1).bundle_version()), "2.0.0");

  // Every subscriber got exactly the events of the response, in the same order.
  for (size_t i = 0; i < subs.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("subscriber ", i));
    ExpectSameEvents(subs[i]->ReadPhases(2), EventsOf(response));
  }

  // v2 is live behind the same handle; the registry moved on.
  auto found_after = FindContract("test.counter@1");
  ASSERT_TRUE(found_after.status.ok()) << ToString(found_after.status);
  EXPECT_EQ(VersionString(found_after.response.provider_version()), "2.0.0");
  EXPECT_EQ(VersionString(found_after.response.contract_version()), "1.1.0");
  EXPECT_EQ(found_after.response.index(), found_before.response.index());
  EXPECT_EQ(found_after.response.generation(), found_before.response.generation());
  const v1::HostInfo after = HostInfo();
  EXPECT_EQ(after.registry_revision(), response.registry_revision());
  EXPECT_EQ(after.last_seq(), before.last_seq() + 2);
  const v1::ListBundlesResponse list = ListBundles();
  const v1::Bundle* bundle = FindBundle(list, "counter");
  ASSERT_NE(bundle, nullptr) << list.ShortDebugString();
  EXPECT_EQ(VersionString(bundle->version()), "2.0.0");
  EXPECT_EQ(bundle->reload_count(), 1u);

  // One log line per phase.
  const std::string log = host().Stderr();
  EXPECT_TRUE(HasLogLine(log, {"LOADED", "counter"})) << log;
  EXPECT_TRUE(HasLogLine(log, {"PREPARING", "counter"})) << log;
  EXPECT_TRUE(HasLogLine(log, {"RELOADED", "counter"})) << log;
}

TEST_F(HostProcessTest, ReloadByPathInsideTheRootWorks) {
  const fs::path counter = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  OverwriteArtifact(TestBundleDir("counter_v2"), counter);
  const auto reload = ReloadByPath(counter.string());
  ASSERT_TRUE(reload.status.ok()) << ToString(reload.status);
  EXPECT_EQ(reload.response.outcome(), v1::RELOAD_OUTCOME_RELOADED);
  EXPECT_EQ(reload.response.bundle_name(), "counter");
  // A file inside the bundle directory names the bundle too.
  const auto by_manifest = ReloadByPath((counter / "manifest.toml").string());
  ASSERT_TRUE(by_manifest.status.ok()) << ToString(by_manifest.status);
  EXPECT_EQ(by_manifest.response.outcome(), v1::RELOAD_OUTCOME_RELOADED);
  EXPECT_EQ(by_manifest.response.bundle_name(), "counter");
}

// polyplug's v1/ and v2/ directories of one bundle: Reload with the path of v2/ replaces the
// loaded v1 and the bundle lives in v2/ from then on. (Before, the host answered
// BUNDLE_NOT_FOUND "load it first", and LoadBundle then BUNDLE_ALREADY_LOADED.)
TEST_F(HostProcessTest, ReloadFromASiblingDirectoryOfTheSameBundleMovesItThere) {
  const fs::path v1 = CopyBundle(TestBundleDir("counter_v1"), root() / "counter-v1");
  const fs::path v2 = CopyBundle(TestBundleDir("counter_v2"), root() / "counter-v2");
  ASSERT_NO_FATAL_FAILURE(StartHost());  // loads counter-v1, the first of the two

  const auto load = LoadBundle(v2.string());
  EXPECT_EQ(load.status.error_code(), grpc::StatusCode::ALREADY_EXISTS) << ToString(load.status);
  EXPECT_THAT(load.status.error_message(), HasSubstr("reload it with that path"));

  const auto reload = ReloadByPath(v2.string());
  ASSERT_TRUE(reload.status.ok()) << ToString(reload.status);
  EXPECT_EQ(reload.response.outcome(), v1::RELOAD_OUTCOME_RELOADED);
  ASSERT_EQ(reload.response.events_size(), 2);
  EXPECT_EQ(reload.response.events(1).phase(), v1::PHASE_RELOADED);
  EXPECT_EQ(reload.response.events(1).bundle_version().major(), 2u);
  const v1::ListBundlesResponse list = ListBundles();
  const v1::Bundle* counter = FindBundle(list, "counter");
  ASSERT_NE(counter, nullptr);
  EXPECT_EQ(counter->dir(), v2.string());
  EXPECT_EQ(counter->version().major(), 2u);
  const auto answer = Invoke("test.counter@1", "version", "");
  ASSERT_TRUE(answer.status.ok()) << ToString(answer.status);
  EXPECT_EQ(answer.response.response(), "v2");

  // By name it now reloads from v2/.
  EXPECT_EQ(ReloadOk("counter").events(1).bundle_version().major(), 2u);
}

TEST_F(HostProcessTest, FailedReloadIsAResponseAndKeepsV1Live) {
  const fs::path counter = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const v1::HostInfo before = HostInfo();

  v1::SubscribeReloadPhasesRequest until_terminal;
  until_terminal.set_until_next_terminal(true);
  auto sub = SubscribeSynced(until_terminal);
  ASSERT_NE(sub, nullptr);

  WriteFile(counter / "libcounter.so", "this is not a shared object\n");
  const auto reload = ReloadByName("counter");
  ASSERT_TRUE(reload.status.ok()) << "a failed reload is a normal response, got "
                                  << ToString(reload.status);
  const v1::ReloadResponse& response = reload.response;
  EXPECT_EQ(response.outcome(), v1::RELOAD_OUTCOME_FAILED) << response.ShortDebugString();
  EXPECT_EQ(response.reason(), v1::FAILURE_REASON_ARTIFACT_NOT_LOADABLE)
      << response.ShortDebugString();
  EXPECT_FALSE(response.message().empty());
  EXPECT_EQ(response.bundle_name(), "counter");
  ASSERT_FALSE(response.events().empty());
  const v1::ReloadPhaseEvent& last = *response.events().rbegin();
  EXPECT_EQ(Describe(last), "FAILED counter");
  EXPECT_EQ(last.reason(), v1::FAILURE_REASON_ARTIFACT_NOT_LOADABLE);
  EXPECT_FALSE(last.message().empty());
  for (const v1::ReloadPhaseEvent& e : response.events()) {
    EXPECT_NE(e.phase(), v1::PHASE_RELOADED) << e.ShortDebugString();
  }

  // v1 is still live and found.
  auto found = FindContract("test.counter@1");
  ASSERT_TRUE(found.status.ok()) << ToString(found.status);
  EXPECT_EQ(VersionString(found.response.provider_version()), "1.0.0");
  const v1::ListBundlesResponse list = ListBundles();
  const v1::Bundle* bundle = FindBundle(list, "counter");
  ASSERT_NE(bundle, nullptr) << list.ShortDebugString();
  EXPECT_EQ(VersionString(bundle->version()), "1.0.0");
  EXPECT_EQ(bundle->reload_count(), 0u);
  EXPECT_EQ(HostInfo().bundle_count(), before.bundle_count());
  EXPECT_TRUE(HasLogLine(host().Stderr(), {"FAILED", "counter", "ARTIFACT_NOT_LOADABLE"}))
      << host().Stderr();
  // A FAILED terminal ends an until_next_terminal stream too.
  const auto streamed = sub->ReadToEnd();
  EXPECT_TRUE(sub->Finish().ok()) << ToString(sub->Finish());
  ExpectSameEvents(streamed, EventsOf(response));
  // The bundle is healthy again: its previous version serves.
  grpc::health::v1::HealthCheckResponse health;
  const grpc::Status health_status = HealthCheck(host().channel(), "counter", &health);
  EXPECT_TRUE(health_status.ok()) << ToString(health_status);
  EXPECT_EQ(health.status(), grpc::health::v1::HealthCheckResponse::SERVING);

  // The host keeps serving: a good rebuild then reloads.
  OverwriteArtifact(TestBundleDir("counter_v2"), counter);
  const v1::ReloadResponse fixed = ReloadOk("counter");
  EXPECT_THAT(Describe(fixed.events()), ElementsAre("PREPARING counter", "RELOADED counter"));
}

// A reload whose cascade leaves a dependent behind is not RELOADED on the wire: a CI check of
// `outcome` alone must fail. The bundle's new version is live; the dependent keeps its old.
TEST_F(HostProcessTest, AReloadWhoseDependentFailsIsDependentsFailed) {
  Copy("chain_a");
  const fs::path chain_b = Copy("chain_b");
  Copy("chain_c");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  ASSERT_TRUE(ReplaceInFile(chain_b / "manifest.toml", DecimalId(core::BundleId("chain_b")),
                            "12345"));  // its cascaded reload fails validation
  auto result = ReloadByName("chain_a");
  ASSERT_TRUE(result.status.ok()) << ToString(result.status);
  const v1::ReloadResponse& response = result.response;
  EXPECT_EQ(response.outcome(), v1::RELOAD_OUTCOME_DEPENDENTS_FAILED)
      << response.ShortDebugString();
  EXPECT_THAT(response.failed_dependents(), ElementsAre("chain_b"));
  EXPECT_THAT(Describe(response.events()),
              ElementsAre("PREPARING chain_a", "FAILED chain_b", "RELOADED chain_a"));
  EXPECT_EQ(response.reason(), v1::FAILURE_REASON_UNSPECIFIED) << "the bundle itself reloaded";
}

TEST_F(HostProcessTest, ReloadCascadesThroughOptedInDependents) {
  Copy("chain_a");
  Copy("chain_b");
  Copy("chain_c");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  std::vector<v1::ReloadPhaseEvent> snapshot;
  v1::SubscribeReloadPhasesRequest request;
  request.set_include_snapshot(true);
  Subscription sub(host().stub(), request, host().NewContext());
  ASSERT_TRUE(sub.ReadSnapshot(&snapshot)) << ToString(sub.Finish());
  EXPECT_THAT(Describe(snapshot),
              UnorderedElementsAre("SNAPSHOT chain_a", "SNAPSHOT chain_b", "SNAPSHOT chain_c"));

  const v1::ReloadResponse response = ReloadOk("chain_a");
  ASSERT_THAT(Describe(response.events()),
              ElementsAre("PREPARING chain_a", "PREPARING chain_b", "PREPARING chain_c",
                          "RELOADED chain_c", "RELOADED chain_b", "RELOADED chain_a"));
  const auto& events = response.events();
  for (int i = 1; i < events.size(); ++i) {
    EXPECT_EQ(events[i].seq(), events[i - 1].seq() + 1) << "seqs of one reload are consecutive";
  }
  // reload ids: a is the primary; b is a cascade of a; c a cascade of b.
  const uint64_t a_id = events[0].reload_id();
  const uint64_t b_id = events[1].reload_id();
  const uint64_t c_id = events[2].reload_id();
  EXPECT_EQ(response.reload_id(), a_id);
  EXPECT_EQ(std::set<uint64_t>({a_id, b_id, c_id}).size(), 3u) << "each bundle has its own id";
  EXPECT_EQ(events[0].parent_reload_id(), 0u);
  EXPECT_EQ(events[1].parent_reload_id(), a_id);
  EXPECT_EQ(events[2].parent_reload_id(), b_id);
  EXPECT_EQ(events[3].reload_id(), c_id);
  EXPECT_EQ(events[4].reload_id(), b_id);
  EXPECT_EQ(events[5].reload_id(), a_id);
  for (const v1::ReloadPhaseEvent& e : events) EXPECT_EQ(e.root_reload_id(), a_id);

  ExpectSameEvents(sub.ReadPhases(6), EventsOf(response));
  const std::string log = host().Stderr();
  EXPECT_TRUE(HasLogLine(log, {"RELOADED", "chain_c"})) << log;
}

TEST_F(HostProcessTest, ConcurrentReloadsAreSerialized) {
  Copy("counter_v1");
  Copy("chain_a");
  Copy("chain_b");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto sub = SubscribeSynced();
  ASSERT_NE(sub, nullptr);
  const uint64_t start_seq = HostInfo().last_seq();

  constexpr int kThreads = 4;
  constexpr int kReloadsPerThread = 10;
  std::vector<std::vector<CallResult<v1::ReloadResponse>>> results(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([this, t, &results] {
      // Each thread has its own connection.
      auto stub = host().NewStub();
      for (int i = 0; i < kReloadsPerThread; ++i) {
        v1::ReloadRequest request;
        request.set_name(t % 2 == 0 ? "counter" : "chain_a");
        CallResult<v1::ReloadResponse> result;
        auto context = host().NewContext();
        result.status = stub->Reload(context.get(), request, &result.response);
        results[t].push_back(std::move(result));
      }
    });
  }
  for (std::thread& thread : threads) thread.join();

  size_t total_events = 0;
  std::set<uint64_t> seqs;
  for (int t = 0; t < kThreads; ++t) {
    for (const auto& result : results[t]) {
      ASSERT_TRUE(result.status.ok()) << ToString(result.status);
      EXPECT_EQ(result.response.outcome(), v1::RELOAD_OUTCOME_RELOADED)
          << result.response.ShortDebugString();
      const auto& events = result.response.events();
      ASSERT_FALSE(events.empty());
      // Serialized: the events of one reload are never interleaved with another's.
      for (int i = 1; i < events.size(); ++i) {
        EXPECT_EQ(events[i].seq(), events[i - 1].seq() + 1) << result.response.ShortDebugString();
      }
      for (const auto& e : events) seqs.insert(e.seq());
      total_events += events.size();
    }
  }
  EXPECT_EQ(seqs.size(), total_events) << "no seq is reported twice";
  EXPECT_EQ(HostInfo().last_seq(), start_seq + total_events);
  // The subscriber saw all of them in seq order.
  const auto streamed = sub->ReadPhases(total_events);
  ASSERT_EQ(streamed.size(), total_events);
  for (size_t i = 0; i < streamed.size(); ++i) EXPECT_EQ(streamed[i].seq(), start_seq + 1 + i);
}

// CI reloads the build it means or nothing: expected_sha256 is checked against the bytes
// that would load, before anything happens.
TEST_F(HostProcessTest, AReloadExpectingAnotherBuildReloadsNothing) {
  const fs::path counter = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  fs::path library;
  for (const auto& entry : fs::directory_iterator(counter)) {
    if (entry.path().extension() == ".so") library = entry.path();
  }
  ASSERT_FALSE(library.empty());
  const std::string v1_sha = Sha256OfFile(library);
  OverwriteArtifact(TestBundleDir("counter_v2"), counter);
  const std::string v2_sha = Sha256OfFile(library);
  ASSERT_NE(v1_sha, v2_sha);
  const uint64_t before = HostInfo().last_seq();

  v1::ReloadRequest request;
  request.set_name("counter");
  request.set_expected_sha256(v1_sha);  // CI built v1; v2 is on disk
  auto refused = Reload(request);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << ToString(refused.status);
  EXPECT_EQ(refused.trailing_reason, "EXPECTED_SHA256_MISMATCH");
  EXPECT_THAT(refused.status.error_message(), HasSubstr(v1_sha));
  EXPECT_THAT(refused.status.error_message(), HasSubstr(v2_sha));
  EXPECT_EQ(HostInfo().last_seq(), before) << "a refused precondition fired an event";

  request.set_expected_sha256("not-hex");
  EXPECT_EQ(Reload(request).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  request.set_expected_sha256(v2_sha);
  auto reloaded = Reload(request);
  ASSERT_TRUE(reloaded.status.ok()) << ToString(reloaded.status);
  EXPECT_EQ(reloaded.response.outcome(), v1::RELOAD_OUTCOME_RELOADED);
}

}  // namespace
}  // namespace polyplug::test
