// HostProcessTest, the host's life and what it tells: SIGTERM and SIGINT end it cleanly,
// GetHostInfo, ListBundles, ListContracts and FindContract describe it, bundles load and
// unload (with a cascade) and load again, and an unknown bundle or contract is NOT_FOUND.
//
// Each test starts its own host on a temporary bundle root holding copies of the test
// bundles it needs (HostProcessTest, host_process_fixture.h), so reloads can rewrite files
// freely. Nothing sleeps: the tests wait on stream reads, call completions and process exit.
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "host/host_calls.h"
#include "host/host_fixture.h"
#include "host/host_process_fixture.h"
#include "polyplug/host/v1/host.grpc.pb.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::polyplug::host::v1;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using ::testing::UnorderedElementsAre;

// ---------------------------------------------------------------------------------------
// Shutdown

TEST_F(HostProcessTest, SigtermEndsStreamsWithUnavailableAndExitsZero) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto sub = SubscribeSynced();
  ASSERT_NE(sub, nullptr);
  host().Kill(SIGTERM);
  const auto rest = sub->ReadToEnd();
  EXPECT_THAT(Describe(rest), IsEmpty());
  const grpc::Status status = sub->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << ToString(status);
  const int exit_status = host().WaitExit();
  EXPECT_TRUE(WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0)
      << DescribeWaitStatus(exit_status) << "; stderr:\n"
      << host().Stderr();
  EXPECT_FALSE(fs::exists(host().dir() / "host.sock")) << "the socket should be removed";
}

TEST_F(HostProcessTest, SigintExitsZero) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  host().Kill(SIGINT);
  const int exit_status = host().WaitExit();
  EXPECT_TRUE(WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0)
      << DescribeWaitStatus(exit_status) << "; stderr:\n"
      << host().Stderr();
}

// ---------------------------------------------------------------------------------------
// Introspection

TEST_F(HostProcessTest, GetHostInfoListBundlesAndListContractsDescribeTheHost) {
  const fs::path counter = Copy("counter_v1");
  Copy("chain_a");
  Copy("chain_b");
  ASSERT_NO_FATAL_FAILURE(StartHost({"--journal-size", "64"}));

  const v1::HostInfo info = HostInfo();
  EXPECT_FALSE(info.version().empty());
  EXPECT_NE(info.host_epoch(), 0u);
  EXPECT_EQ(info.host_epoch(), host().epoch());
  EXPECT_GT(info.registry_revision(), 0u);
  EXPECT_THAT(info.bundle_roots(), ElementsAre(root().string()));
  EXPECT_TRUE(info.hot_reload_enabled());
  EXPECT_TRUE(info.has_uptime());
  EXPECT_EQ(info.bundle_count(), 3u);
  EXPECT_EQ(info.contract_count(), 3u);
  EXPECT_EQ(info.subscriber_count(), 0u);
  EXPECT_EQ(info.last_seq(), 3u) << "one LOADED event per bundle";
  EXPECT_EQ(info.earliest_seq(), 1u);
  EXPECT_EQ(info.journal_capacity(), 64u);
  EXPECT_THAT(info.listen_addresses(), ElementsAre(host().address()));

  const v1::ListBundlesResponse list = ListBundles();
  EXPECT_THAT(BundleNames(list), ElementsAre("chain_a", "chain_b", "counter"));
  EXPECT_EQ(list.host_epoch(), host().epoch());
  EXPECT_EQ(list.registry_revision(), info.registry_revision());
  const v1::Bundle* c = FindBundle(list, "counter");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(VersionString(c->version()), "1.0.0");
  EXPECT_EQ(fs::path(c->dir()), counter);
  EXPECT_EQ(c->loader(), "native");
  EXPECT_THAT(c->provides(), ElementsAre("test.counter@1"));
  EXPECT_FALSE(c->needs_reinit_on_dep_reload());
  EXPECT_EQ(c->reload_count(), 0u);
  ASSERT_THAT(c->contracts(), SizeIs(1));
  EXPECT_EQ(c->contracts(0).contract_name(), "test.counter");
  EXPECT_TRUE(c->contracts(0).invocable());
  const v1::Bundle* b = FindBundle(list, "chain_b");
  ASSERT_NE(b, nullptr);
  EXPECT_TRUE(b->needs_reinit_on_dep_reload());
  EXPECT_THAT(b->declared_dependencies(), SizeIs(1));

  const auto contracts = ListContracts();
  ASSERT_TRUE(contracts.status.ok()) << ToString(contracts.status);
  std::vector<std::string> names;
  for (const v1::ContractHandle& h : contracts.response.contracts()) {
    names.push_back(h.contract_name());
    EXPECT_EQ(h.host_epoch(), host().epoch());
    EXPECT_NE(h.contract_id(), 0u);
    EXPECT_FALSE(h.provider_bundle_name().empty());
  }
  EXPECT_THAT(names, UnorderedElementsAre("chain.a", "chain.b", "test.counter"));
  std::vector<uint32_t> indexes;
  for (const v1::ContractHandle& h : contracts.response.contracts()) indexes.push_back(h.index());
  EXPECT_TRUE(std::is_sorted(indexes.begin(), indexes.end())) << "registry slot order";

  const auto only_counter = ListContracts("counter");
  ASSERT_TRUE(only_counter.status.ok()) << ToString(only_counter.status);
  ASSERT_THAT(only_counter.response.contracts(), SizeIs(1));
  const v1::ContractHandle& listed = only_counter.response.contracts(0);
  EXPECT_EQ(listed.provider_bundle_name(), "counter");
  EXPECT_EQ(VersionString(listed.provider_version()), "1.0.0");
  const auto unknown = ListContracts("no_such_bundle");
  EXPECT_EQ(unknown.status.error_code(), grpc::StatusCode::NOT_FOUND) << ToString(unknown.status);

  // FindContract by "name@major", by name plus major and by id agree with the listing.
  const auto by_name = FindContract("test.counter@1");
  ASSERT_TRUE(by_name.status.ok()) << ToString(by_name.status);
  v1::FindContractRequest split;
  split.set_name("test.counter");
  split.set_major(1);
  const auto by_split = FindContract(split);
  ASSERT_TRUE(by_split.status.ok()) << ToString(by_split.status);
  v1::FindContractRequest by_id_request;
  by_id_request.set_contract_id(listed.contract_id());
  const auto by_id = FindContract(by_id_request);
  ASSERT_TRUE(by_id.status.ok()) << ToString(by_id.status);
  for (const auto* found : {&by_name.response, &by_split.response, &by_id.response}) {
    EXPECT_EQ(found->contract_id(), listed.contract_id());
    EXPECT_EQ(found->index(), listed.index());
    EXPECT_EQ(found->generation(), listed.generation());
    EXPECT_EQ(found->provider_bundle_name(), "counter");
    EXPECT_EQ(found->host_epoch(), host().epoch());
  }
  v1::FindContractRequest in_bundle = split;
  in_bundle.set_bundle("chain_a");
  EXPECT_EQ(FindContract(in_bundle).status.error_code(), grpc::StatusCode::NOT_FOUND);
  v1::FindContractRequest too_new = split;
  too_new.set_min_version(2);
  EXPECT_EQ(FindContract(too_new).status.error_code(), grpc::StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------------------------------
// Load, unload, and what is not there

TEST_F(HostProcessTest, LoadAndUnloadBundlesRoundTrip) {
  Copy("chain_a");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const v1::HostInfo start = HostInfo();
  auto sub = SubscribeSynced();
  ASSERT_NE(sub, nullptr);
  const auto handle_a = FindContract("chain.a@1");
  ASSERT_TRUE(handle_a.status.ok()) << ToString(handle_a.status);

  // Load a bundle that appeared in the root after start.
  const fs::path chain_b = Copy("chain_b");
  const auto loaded = LoadBundle(chain_b.string());
  ASSERT_TRUE(loaded.status.ok()) << ToString(loaded.status);
  EXPECT_EQ(loaded.response.bundle().name(), "chain_b");
  EXPECT_EQ(VersionString(loaded.response.bundle().version()), "1.0.0");
  EXPECT_EQ(Describe(loaded.response.event()), "LOADED chain_b");
  EXPECT_EQ(loaded.response.event().seq(), start.last_seq() + 1);
  EXPECT_GT(loaded.response.registry_revision(), start.registry_revision());
  EXPECT_TRUE(FindContract("chain.b@1").status.ok());

  const auto again = LoadBundle(chain_b.string());
  EXPECT_EQ(again.status.error_code(), grpc::StatusCode::ALREADY_EXISTS) << ToString(again.status);
  EXPECT_EQ(ReasonTokenOf(again.status), "BUNDLE_ALREADY_LOADED") << ToString(again.status);

  // A bundle whose init fails is an error naming the reason; the host keeps serving.
  const fs::path init_fails = Copy("init_fails");
  const auto failed = LoadBundle(init_fails.string());
  EXPECT_FALSE(failed.status.ok());
  EXPECT_EQ(ReasonTokenOf(failed.status), "INIT_FAILED") << ToString(failed.status);
  EXPECT_EQ(failed.trailing_reason, "INIT_FAILED");

  // Unload refuses while chain_b depends on chain_a, unless cascading.
  const auto refused = UnloadBundle("chain_a", false);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << ToString(refused.status);
  EXPECT_EQ(ReasonTokenOf(refused.status), "DEPENDENCY_IN_USE") << ToString(refused.status);
  EXPECT_THAT(BundleNames(ListBundles()), ElementsAre("chain_a", "chain_b"));

  const auto unloaded = UnloadBundle("chain_a", true);
  ASSERT_TRUE(unloaded.status.ok()) << ToString(unloaded.status);
  EXPECT_THAT(unloaded.response.unloaded(), ElementsAre("chain_b", "chain_a"));
  EXPECT_THAT(Describe(unloaded.response.events()),
              ElementsAre("UNLOADING chain_b", "UNLOADING chain_a"));
  EXPECT_GT(unloaded.response.registry_revision(), loaded.response.registry_revision());
  EXPECT_EQ(FindContract("chain.a@1").status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(BundleNames(ListBundles()), IsEmpty());
  EXPECT_EQ(HostInfo().bundle_count(), 0u);
  EXPECT_EQ(HostInfo().contract_count(), 0u);
  grpc::health::v1::HealthCheckResponse health;
  EXPECT_EQ(HealthCheck(host().channel(), "chain_a", &health).error_code(),
            grpc::StatusCode::NOT_FOUND)
      << "an unloaded bundle is no longer a health service";

  // Loading chain_a again gives a fresh handle: the old one went stale.
  const auto reloaded = LoadBundle((root() / "chain_a").string());
  ASSERT_TRUE(reloaded.status.ok()) << ToString(reloaded.status);
  const auto handle_a2 = FindContract("chain.a@1");
  ASSERT_TRUE(handle_a2.status.ok()) << ToString(handle_a2.status);
  EXPECT_FALSE(handle_a2.response.index() == handle_a.response.index() &&
               handle_a2.response.generation() == handle_a.response.generation())
      << "old " << handle_a.response.ShortDebugString() << "\nnew "
      << handle_a2.response.ShortDebugString();

  // The subscriber saw every operation, in the order they happened.
  std::vector<v1::ReloadPhaseEvent> expected = {loaded.response.event()};
  expected.insert(expected.end(), unloaded.response.events().begin(),
                  unloaded.response.events().end());
  expected.push_back(reloaded.response.event());
  const auto seen = sub->ReadPhases(expected.size());
  // init_fails may or may not announce itself; compare the events of the bundles that loaded.
  std::vector<v1::ReloadPhaseEvent> seen_chain;
  for (const v1::ReloadPhaseEvent& e : seen) {
    if (e.bundle_name() != "init_fails") seen_chain.push_back(e);
  }
  while (seen_chain.size() < expected.size()) {
    auto e = sub->NextPhase();
    if (!e) break;
    if (e->bundle_name() != "init_fails") seen_chain.push_back(*e);
  }
  ExpectSameEvents(seen_chain, expected);
}

TEST_F(HostProcessTest, UnknownBundleIsNotFound) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const auto reload = ReloadByName("no_such_bundle");
  EXPECT_EQ(reload.status.error_code(), grpc::StatusCode::NOT_FOUND) << ToString(reload.status);
  EXPECT_EQ(ReasonTokenOf(reload.status), "BUNDLE_NOT_FOUND") << ToString(reload.status);
  EXPECT_EQ(reload.trailing_reason, "BUNDLE_NOT_FOUND");
  EXPECT_TRUE(absl::StrContains(reload.status.error_message(), "no_such_bundle"))
      << ToString(reload.status);

  const auto unload = UnloadBundle("no_such_bundle", false);
  EXPECT_EQ(unload.status.error_code(), grpc::StatusCode::NOT_FOUND) << ToString(unload.status);
  EXPECT_EQ(ReasonTokenOf(unload.status), "BUNDLE_NOT_FOUND") << ToString(unload.status);

  const auto find = FindContract("no.such.contract@1");
  EXPECT_EQ(find.status.error_code(), grpc::StatusCode::NOT_FOUND) << ToString(find.status);
  EXPECT_EQ(ReasonTokenOf(find.status), "CONTRACT_NOT_FOUND") << ToString(find.status);
  EXPECT_EQ(find.trailing_reason, "CONTRACT_NOT_FOUND");

  // An empty request is a bad request, not a crash.
  const auto empty = Reload(v1::ReloadRequest());
  EXPECT_EQ(empty.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << ToString(empty.status);
  EXPECT_EQ(ReasonTokenOf(empty.status), "INVALID_ARGUMENT") << ToString(empty.status);
  EXPECT_THAT(BundleNames(ListBundles()), ElementsAre("counter"));
}

}  // namespace
}  // namespace polyplug::test
