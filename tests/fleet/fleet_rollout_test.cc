// Fleets (docs/FLEET.md) with real processes on loopback: a three-member etcd cluster and
// five polyplug-host processes (--fleet), rolled out to by polyplugctl rollout. Every wait
// ends on an event: a line of a process's output, or a change of the fleet's records seen
// through an etcd watch.
#include <signal.h>

#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/client_fixture.h"
#include "fleet/etcd_cluster.h"
#include "fleet/src/etcd_client.h"
#include "fleet/src/fleet_follower.h"
#include "fleet/src/fleet_keys.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "host/host_fixture.h"
#include "host/test_pki.h"
#include "polyplug/core/bundle_signature.h"
#include "support/bundle_fixture.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
namespace fv1 = ::polyplug::fleet::v1;
using ::testing::HasSubstr;

constexpr char kFleet[] = "studio";
constexpr int kHosts = 5;
// How long a test waits for the fleet to reach a state: a safety net, not an expectation.
constexpr absl::Duration kFleetDeadline = absl::Seconds(60);

class FleetRolloutTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto cluster = EtcdCluster::Start(dir_.path() / "etcd", 3);
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    etcd_cluster_ = *std::move(cluster);
    fleet::EtcdOptions options;
    options.endpoints = absl::StrSplit(etcd_cluster_->endpoints(), ',');
    options.call_timeout = absl::Seconds(20);
    auto etcd = fleet::EtcdClient::Create(options);
    ASSERT_TRUE(etcd.ok()) << etcd.status();
    etcd_ = *std::move(etcd);
    follower_ = std::make_unique<fleet::FleetFollower>(*etcd_, keys_);
    ASSERT_TRUE(follower_->Start().ok());
  }

  static std::string HostId(int i) { return absl::StrCat("host-", i); }

  // The flags of host i (1-based) of the fleet, with its deploy root kept across restarts
  // and a short lease (a killed host drops out soon), then `extra`.
  std::vector<std::string> HostArgs(int i, const std::vector<std::string>& extra = {}) const {
    std::vector<std::string> args = {"--deploy-root",
                                     (dir_.path() / absl::StrCat("deploy-", i)).string(),
                                     "--fleet",
                                     kFleet,
                                     "--etcd",
                                     etcd_cluster_->endpoints(),
                                     "--fleet-host-id",
                                     HostId(i),
                                     "--fleet-lease-ttl",
                                     "2s"};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }

  // Starts host i with HostArgs(i, extra) and waits until it registered.
  HostProcess& StartHost(int i, std::vector<std::string> extra = {}) {
    auto host = std::make_unique<HostProcess>(HostArgs(i, extra));
    const absl::Status started = host->Start();
    EXPECT_TRUE(started.ok()) << started;
    hosts_[i] = std::move(host);
    EXPECT_TRUE(WaitFor(absl::StrCat(HostId(i), " registered"), [&](const fleet::FleetState& s) {
      return s.hosts().count(HostId(i)) > 0;
    }));
    return *hosts_[i];
  }

  void StartFleet() {
    for (int i = 1; i <= kHosts; ++i) StartHost(i);
  }

  bool WaitFor(absl::string_view what, const std::function<bool(const fleet::FleetState&)>& done) {
    const bool reached = follower_->WaitUntil(absl::Now() + kFleetDeadline, done);
    if (!reached) ADD_FAILURE() << "the fleet never reached: " << what;
    return reached;
  }

  // polyplugctl rollout DIR --fleet --etcd [more], run to its end.
  ProcessResult Rollout(const fs::path& dir, std::vector<std::string> more = {}) {
    std::vector<std::string> argv = {
        POLYPLUGCTL_BINARY,         "rollout", dir.string(), "--fleet", kFleet, "--etcd",
        etcd_cluster_->endpoints(), "--color", "never"};
    argv.insert(argv.end(), more.begin(), more.end());
    return RunProcess(argv);
  }

  // Reads a running `polyplugctl rollout`'s output until it wrote the desired state.
  static bool WroteTheDesiredState(ChildProcess& rollout) {
    for (std::optional<std::string> line = rollout.ReadLine(); line; line = rollout.ReadLine()) {
      if (absl::StrContains(*line, "desired state written")) return true;
    }
    ADD_FAILURE() << "the rollout ended before writing the desired state";
    return false;
  }

  // The version of `bundle` host i runs, as the host itself says (ListBundles).
  std::string RunningVersion(int i, const std::string& bundle) {
    host::v1::ListBundlesRequest request;
    host::v1::ListBundlesResponse response;
    const grpc::Status status =
        hosts_.at(i)->stub().ListBundles(hosts_.at(i)->NewContext().get(), request, &response);
    EXPECT_TRUE(status.ok()) << ToString(status);
    for (const host::v1::Bundle& b : response.bundles()) {
      if (b.name() == bundle) {
        return absl::StrCat(b.version().major(), ".", b.version().minor(), ".",
                            b.version().patch());
      }
    }
    return "";
  }

  // Every live host answered the desired record of `bundle` with APPLIED.
  bool AllApplied(const fleet::FleetState& state, const std::string& bundle) {
    auto desired = state.desired().find(bundle);
    if (desired == state.desired().end()) return false;
    for (const auto& [id, record] : state.hosts()) {
      const fv1::BundleStatus* status = state.StatusOf(id, bundle);
      if (status == nullptr || status->desired_revision() != desired->second.mod_revision ||
          status->state() != fv1::APPLY_STATE_APPLIED) {
        return false;
      }
    }
    return true;
  }

  // A copy of a test bundle signed with `key`.
  fs::path Signed(absl::string_view target, const core::SigningKey& key, absl::string_view as) {
    const fs::path copy = CopyBundle(TestBundleDir(target), dir_.path() / std::string(as));
    auto signed_bundle = core::SignBundle(copy, key);
    EXPECT_TRUE(signed_bundle.ok()) << signed_bundle.status();
    return copy;
  }

  TempDir dir_;
  std::unique_ptr<EtcdCluster> etcd_cluster_;
  std::unique_ptr<fleet::EtcdClient> etcd_;
  const fleet::FleetKeys keys_{kFleet};
  std::unique_ptr<fleet::FleetFollower> follower_;
  std::map<int, std::unique_ptr<HostProcess>> hosts_;
};

TEST_F(FleetRolloutTest, ARolloutReachesAllFiveHostsAndTheNextOneReplacesIt) {
  StartFleet();
  ProcessResult first = Rollout(TestBundleDir("counter_v1"));
  ASSERT_EQ(first.exit_code, 0) << first.out << first.err;
  EXPECT_THAT(first.out, HasSubstr("SUCCEEDED counter 1.0.0 on fleet studio: 5 hosts run it"));
  for (int i = 1; i <= kHosts; ++i) EXPECT_EQ(RunningVersion(i, "counter"), "1.0.0") << i;

  ProcessResult second = Rollout(TestBundleDir("counter_v2"), {"--json"});
  ASSERT_EQ(second.exit_code, 0) << second.out << second.err;
  // One progress line per host, then the report.
  for (int i = 1; i <= kHosts; ++i) {
    EXPECT_THAT(second.out,
                HasSubstr(absl::StrCat("\"host_id\":\"", HostId(i), "\",\"event\":\"APPLIED\"")));
  }
  EXPECT_THAT(second.out, HasSubstr("\"outcome\":\"SUCCEEDED\""));
  for (int i = 1; i <= kHosts; ++i) EXPECT_EQ(RunningVersion(i, "counter"), "2.0.0") << i;

  // fleet status: every host in step, no error.
  ProcessResult status = RunProcess({POLYPLUGCTL_BINARY, "fleet", "status", "--fleet", kFleet,
                                     "--etcd", etcd_cluster_->endpoints(), "--color", "never"});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  EXPECT_THAT(status.out, HasSubstr("5 live hosts"));
  for (int i = 1; i <= kHosts; ++i) {
    EXPECT_THAT(status.out, ::testing::ContainsRegex(
                                absl::StrCat(HostId(i), " .* counter +2\\.0\\.0 +APPLIED +0")));
  }
}

// Canaries host-1 and host-2 go first. host-2 trusts only key B; the new version is signed
// with key A, so host-2 refuses it (a NACK): the rollout restores the previous desired state
// and waits until every host runs it again, host-1 (which had applied it) included.
TEST_F(FleetRolloutTest, ACanaryThatFailsOnOneHostRollsBackEverywhere) {
  auto key_a = core::GenerateSigningKey();
  auto key_b = core::GenerateSigningKey();
  ASSERT_TRUE(key_a.ok() && key_b.ok());
  ASSERT_TRUE(core::WriteKeyPair(dir_.path() / "key-b", *key_b).ok());
  for (int i = 1; i <= kHosts; ++i) {
    if (i == 2) {
      StartHost(i, {"--signature-policy", "required", "--trusted-key",
                    (dir_.path() / "key-b" / "verifying.key").string()});
    } else {
      StartHost(i);
    }
  }
  ProcessResult first = Rollout(Signed("counter_v1", *key_b, "v1-signed-b"));
  ASSERT_EQ(first.exit_code, 0) << first.out << first.err;

  ProcessResult canary = Rollout(Signed("counter_v2", *key_a, "v2-signed-a"), {"--canary", "2"});
  EXPECT_EQ(canary.exit_code, 1) << canary.out << canary.err;
  EXPECT_THAT(canary.out, HasSubstr("canaries host-1, host-2"));
  EXPECT_THAT(canary.out,
              ::testing::ContainsRegex("canary +host-2 +FAILED \\[UNTRUSTED_SIGNING_KEY\\]"));
  EXPECT_THAT(canary.out, HasSubstr("rolling back to 1.0.0"));
  EXPECT_THAT(canary.out, HasSubstr("ROLLED BACK counter 2.0.0 on fleet studio"));
  EXPECT_THAT(canary.out, HasSubstr("failed on host-2: [UNTRUSTED_SIGNING_KEY]"));
  // Hosts 3 to 5 were never asked to apply it.
  EXPECT_THAT(canary.out, ::testing::Not(HasSubstr("canary  host-3")));
  for (int i = 1; i <= kHosts; ++i) EXPECT_EQ(RunningVersion(i, "counter"), "1.0.0") << i;
  WaitFor("every host acknowledged the rollback",
          [&](const fleet::FleetState& state) { return AllApplied(state, "counter"); });
}

// host-5 dies once the desired state is written: the rollout completes without it when its
// lease ends, and the host converges when it starts again.
TEST_F(FleetRolloutTest, AHostKilledMidRolloutDropsOutAndConvergesWhenRestarted) {
  StartFleet();
  ASSERT_EQ(Rollout(TestBundleDir("counter_v1")).exit_code, 0);
  ChildProcess rollout({POLYPLUGCTL_BINARY, "rollout", TestBundleDir("counter_v2").string(),
                        "--fleet", kFleet, "--etcd", etcd_cluster_->endpoints(), "--color",
                        "never"});
  ASSERT_TRUE(WroteTheDesiredState(rollout));
  hosts_.at(5)->Kill(SIGKILL);
  hosts_.at(5)->WaitExit();
  ProcessResult result = rollout.Wait();
  EXPECT_EQ(result.exit_code, 0) << result.out << result.err;
  EXPECT_THAT(result.out, HasSubstr("SUCCEEDED counter 2.0.0"));
  for (int i = 1; i <= 4; ++i) EXPECT_EQ(RunningVersion(i, "counter"), "2.0.0") << i;

  StartHost(5);
  WaitFor("host-5 converged", [&](const fleet::FleetState& state) {
    return state.hosts().count("host-5") && AllApplied(state, "counter");
  });
  EXPECT_EQ(RunningVersion(5, "counter"), "2.0.0");
}

// An etcd member dies once the desired state is written: the rollout completes on the
// remaining two (a quorum), hosts and polyplugctl failing over to them.
TEST_F(FleetRolloutTest, AnEtcdMemberKilledMidRolloutLeavesAQuorumThatCompletesIt) {
  StartFleet();
  ASSERT_EQ(Rollout(TestBundleDir("counter_v1")).exit_code, 0);
  ChildProcess rollout({POLYPLUGCTL_BINARY, "rollout", TestBundleDir("counter_v2").string(),
                        "--fleet", kFleet, "--etcd", etcd_cluster_->endpoints(), "--color",
                        "never"});
  ASSERT_TRUE(WroteTheDesiredState(rollout));
  etcd_cluster_->Kill(0);
  ProcessResult result = rollout.Wait();
  EXPECT_EQ(result.exit_code, 0) << result.out << result.err;
  // A host whose lease ended during the election drops out, registers again and converges.
  WaitFor("every host runs 2.0.0", [&](const fleet::FleetState& state) {
    return state.hosts().size() == kHosts && AllApplied(state, "counter");
  });
  for (int i = 1; i <= kHosts; ++i) EXPECT_EQ(RunningVersion(i, "counter"), "2.0.0") << i;
}

// Two rollouts of one bundle at once: the first holds the bundle's claim while it waits for
// a host that cannot answer (stopped, with a long lease); the second is told and changes
// nothing. Then the first completes.
TEST_F(FleetRolloutTest, OfTwoConcurrentRolloutsOneWinsAndTheOtherIsTold) {
  for (int i = 1; i < kHosts; ++i) StartHost(i);
  StartHost(kHosts, {"--fleet-lease-ttl", "60s"});
  ASSERT_EQ(Rollout(TestBundleDir("counter_v1")).exit_code, 0);
  hosts_.at(kHosts)->Freeze();
  ChildProcess winner({POLYPLUGCTL_BINARY, "rollout", TestBundleDir("counter_v2").string(),
                       "--fleet", kFleet, "--etcd", etcd_cluster_->endpoints(), "--color",
                       "never"});
  ASSERT_TRUE(WroteTheDesiredState(winner));
  auto key = core::GenerateSigningKey();
  ASSERT_TRUE(key.ok());
  ProcessResult loser = Rollout(Signed("counter_v2", *key, "v2-other"), {"--json"});
  EXPECT_EQ(loser.exit_code, 5) << loser.out << loser.err;
  EXPECT_THAT(loser.out, HasSubstr("\"outcome\":\"CONFLICT\""));
  EXPECT_THAT(loser.out, HasSubstr("another rollout of counter is in progress"));
  hosts_.at(kHosts)->Thaw();
  ProcessResult won = winner.Wait();
  EXPECT_EQ(won.exit_code, 0) << won.out << won.err;
  for (int i = 1; i <= kHosts; ++i) EXPECT_EQ(RunningVersion(i, "counter"), "2.0.0") << i;
}

TEST_F(FleetRolloutTest, AHostThatJoinsAfterTheRolloutConverges) {
  for (int i = 1; i < kHosts; ++i) StartHost(i);
  ProcessResult result = Rollout(TestBundleDir("counter_v2"));
  ASSERT_EQ(result.exit_code, 0) << result.out << result.err;
  EXPECT_THAT(result.out, HasSubstr("4 hosts run it"));
  StartHost(kHosts);  // with an empty deploy root
  WaitFor("host-5 converged", [&](const fleet::FleetState& state) {
    return state.hosts().size() == kHosts && AllApplied(state, "counter");
  });
  EXPECT_EQ(RunningVersion(kHosts, "counter"), "2.0.0");
}

// Hosts that serve TCP with mutual TLS and a token: polyplugctl pushes to the first host
// over TLS with a client certificate, and the other host fetches from it over TLS, with its
// own certificate and the shared token.
TEST_F(FleetRolloutTest, PeersFetchOverMutualTlsWithTheSharedToken) {
  fs::create_directories(dir_.path() / "pki");
  auto pki = MakePki(dir_.path() / "pki");
  ASSERT_TRUE(pki.ok()) << pki.status();
  const fs::path token = dir_.path() / "token";
  std::ofstream(token) << "fleet-secret\n";
  for (int i = 1; i <= 2; ++i) {
    const std::vector<std::string> args = HostArgs(
        i, {"--tls-cert", pki->server_cert.string(), "--tls-key", pki->server_key.string(),
            "--tls-client-ca", pki->ca_cert.string(), "--auth-token-file", token.string()});
    hosts_[i] = std::make_unique<HostProcess>(args, "fleet-secret");
    hosts_[i]->AddListenAddress("127.0.0.1:0");
    const absl::Status started = hosts_[i]->Start();
    ASSERT_TRUE(started.ok()) << started;
  }
  WaitFor("both hosts registered with their TCP address", [&](const fleet::FleetState& state) {
    if (state.hosts().size() != 2) return false;
    for (const auto& [id, record] : state.hosts()) {
      if (!absl::StartsWith(record.address(), "127.0.0.1:")) return false;
    }
    return true;
  });
  ProcessResult result =
      RunProcess({POLYPLUGCTL_BINARY, "rollout", TestBundleDir("counter_v2").string(), "--fleet",
                  kFleet, "--etcd", etcd_cluster_->endpoints(), "--tls-ca", pki->ca_cert.string(),
                  "--tls-cert", pki->client_cert.string(), "--tls-key", pki->client_key.string()},
                 {{"POLYPLUG_TOKEN", "fleet-secret"}});
  ASSERT_EQ(result.exit_code, 0) << result.out << result.err;
  EXPECT_THAT(result.out, HasSubstr("2 hosts run it"));
  for (int i = 1; i <= 2; ++i) EXPECT_EQ(RunningVersion(i, "counter"), "2.0.0") << i;
  // The second host got the bytes from the first, over TLS.
  bool fetched = false;
  for (int i = 1; i <= 2; ++i) {
    fetched |= absl::StrContains(hosts_[i]->Stderr(), "fetch of counter: sent");
  }
  EXPECT_TRUE(fetched);
}

TEST_F(FleetRolloutTest, AnUnreachableEtcdAtStartIsReportedAndTheHostServesItsBundles) {
  // A port nothing listens on.
  CopyBundle(TestBundleDir("counter_v1"), dir_.path() / "local" / "counter");
  HostProcess host({"--bundles", (dir_.path() / "local").string(), "--deploy-root",
                    (dir_.path() / "deploy").string(), "--fleet", kFleet, "--etcd", "127.0.0.1:1",
                    "--fleet-host-id", "lonely"});
  const absl::Status started = host.Start();
  ASSERT_TRUE(started.ok()) << started;
  auto line = host.WaitForStderrLine("etcd unreachable at 127.0.0.1:1");
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_THAT(*line, HasSubstr("the host serves its local bundles and keeps trying"));
  host::v1::ListBundlesResponse listed;
  ASSERT_TRUE(host.stub()
                  .ListBundles(host.NewContext().get(), host::v1::ListBundlesRequest(), &listed)
                  .ok());
  ASSERT_EQ(listed.bundles_size(), 1);
  EXPECT_EQ(listed.bundles(0).name(), "counter");

  // polyplugctl: an unreachable etcd is exit code 3, naming it; a missing flag is usage.
  ProcessResult rollout =
      RunProcess({POLYPLUGCTL_BINARY, "rollout", TestBundleDir("counter_v2").string(), "--fleet",
                  kFleet, "--etcd", "127.0.0.1:1"});
  EXPECT_EQ(rollout.exit_code, 3) << rollout.out << rollout.err;
  EXPECT_THAT(rollout.err, HasSubstr("etcd unreachable at 127.0.0.1:1"));
  ProcessResult usage =
      RunProcess({POLYPLUGCTL_BINARY, "rollout", TestBundleDir("counter_v2").string()});
  EXPECT_EQ(usage.exit_code, 2);
  EXPECT_THAT(usage.err, HasSubstr("--fleet NAME is required"));
  ProcessResult canary =
      RunProcess({POLYPLUGCTL_BINARY, "rollout", TestBundleDir("counter_v2").string(), "--fleet",
                  kFleet, "--etcd", "127.0.0.1:1", "--canary", "150%"});
  EXPECT_EQ(canary.exit_code, 2);
  EXPECT_THAT(canary.err, HasSubstr("--canary wants a number of hosts"));
}

}  // namespace
}  // namespace polyplug::test
