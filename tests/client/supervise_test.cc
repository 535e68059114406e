// polyplug-host --supervise against bundles that really crash the server process: SIGSEGV
// and abort() in polyplug_init (at start and on a reload), in a remote call, and on a thread
// of the bundle's own; a server killed from outside; the crash-loop limit. Clients of the
// client library see HostRestarted, a resync and the FAILED (CRASHED) event; polyplugctl
// turns a reload that crashed the host into a FAILED with exit code 1.
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "client/client_fixture.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "polyplug/client/live_instance.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
namespace v1 = host::v1;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

class SuperviseTest : public ClientTest {
 protected:
  static void SetUpTestSuite() {
    // Under ASan: let the bundles' faults reach the host's crash record handler and then
    // kill the process, rather than have ASan report them (they are on purpose).
    const char* asan = std::getenv("ASAN_OPTIONS");
    const std::string options = absl::StrCat(
        asan != nullptr ? asan : "", asan != nullptr && asan[0] != '\0' ? ":" : "",
        "handle_segv=0:handle_sigbus=0:handle_sigfpe=0:handle_sigill=0:handle_abort=0");
    setenv("ASAN_OPTIONS", options.c_str(), 1);
  }

  // A root with counter (v1) and crasher (v1), served by a supervised host.
  void StartSupervised(std::vector<std::string> extra_args = {}) {
    Copy("counter_v1");
    CopyCrasher("crasher_v1");
    extra_args.insert(extra_args.begin(), "--supervise");
    StartHost(extra_args);
  }

  // The crasher build `target` as root()/crasher, over what is there.
  fs::path CopyCrasher(absl::string_view target) {
    const fs::path dir = root() / "crasher";
    if (fs::exists(dir)) {
      OverwriteArtifact(TestBundleDir(target), dir);
    } else {
      CopyBundle(TestBundleDir(target), dir);
    }
    return dir;
  }

  static std::string CrasherSha(absl::string_view target) {
    return Sha256OfFile(TestBundleDir(target) / "libcrasher.so");
  }

  // GetHostInfo once a host of another epoch than `epoch` answers (the restarted server).
  static v1::HostInfo InfoAfterRestart(client::HostClient& client, uint64_t epoch) {
    client::CallOptions wait;
    wait.wait_for_ready = true;
    for (int attempt = 0; attempt < 100; ++attempt) {
      auto info = client.GetHostInfo(wait);
      if (info.ok() && info->host_epoch() != epoch) return *info;
      EXPECT_TRUE(info.ok() || absl::IsUnavailable(info.status())) << info.status();
    }
    ADD_FAILURE() << "the host did not come back with a new epoch";
    return {};
  }

  // The pid of the server the supervisor runs.
  pid_t ServerPid() {
    std::ifstream children(
        absl::StrCat("/proc/", host().pid(), "/task/", host().pid(), "/children"));
    pid_t pid = 0;
    children >> pid;
    return pid;
  }

  // kill -9 of the server (not the supervisor), and waits until it is gone.
  void KillServer() {
    const pid_t server = ServerPid();
    ASSERT_GT(server, 0);
    const int fd = static_cast<int>(syscall(SYS_pidfd_open, server, 0));
    ASSERT_GE(fd, 0);
    ASSERT_EQ(kill(server, SIGKILL), 0);
    pollfd exited{fd, POLLIN, 0};
    EXPECT_EQ(poll(&exited, 1, static_cast<int>(kCallDeadline.count() * 1000)), 1);
    close(fd);
  }

  static std::vector<std::string> BundleVersions(client::HostClient& client) {
    std::vector<std::string> out;
    auto bundles = client.ListBundles();
    EXPECT_TRUE(bundles.ok()) << bundles.status();
    if (!bundles.ok()) return out;
    for (const v1::Bundle& b : bundles->bundles()) {
      out.push_back(absl::StrCat(b.name(), " ", VersionString(b.version())));
    }
    return out;
  }

  static std::string Answer(client::HostClient& client, absl::string_view method = "version") {
    auto response = client.InvokeOnce("test.crasher@1", method, "");
    return response.ok() ? response->response() : response.status().ToString();
  }
};

TEST_F(SuperviseTest, CrashInInitOnReloadRestartsWithTheLastHealthyVersionAndQuarantines) {
  ASSERT_NO_FATAL_FAILURE(StartSupervised());
  auto client = Connect();
  SubscriptionLog log;
  auto subscription = client->Subscribe(log.Handlers());
  ASSERT_TRUE(log.WaitForLine("RESYNCED INITIAL counter,crasher"));
  auto live = client->MakeLiveInstance("test.crasher@1");
  auto first = live->Invoke("version", "");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->response(), "v1");
  const uint64_t epoch = host().epoch();

  CopyCrasher("crasher_init_segv");
  auto crashed = client->Reload("crasher");
  ASSERT_FALSE(crashed.ok()) << "the reload should have taken the server down";

  // The client sees the restart, the resync, and the reload's FAILED as the new host tells it.
  ASSERT_TRUE(log.WaitForLine("FAILED crasher"));
  const std::vector<std::string> lines = log.lines();
  const auto restarted = std::find(lines.begin(), lines.end(), "HOST_RESTARTED");
  ASSERT_NE(restarted, lines.end());
  ASSERT_NE(restarted + 1, lines.end());
  EXPECT_EQ(*(restarted + 1), "RESYNCED HOST_RESTARTED counter,crasher");
  const client::PhaseEvent failed = log.events().back();
  EXPECT_EQ(failed.reason, v1::FAILURE_REASON_CRASHED);
  EXPECT_EQ(failed.bundle_version.ToString(), "3.0.0");
  EXPECT_EQ(failed.artifact_sha256, CrasherSha("crasher_init_segv"));
  EXPECT_THAT(failed.message, HasSubstr("SIGSEGV in polyplug_init"));
  EXPECT_NE(failed.host_epoch, epoch);
  const client::Resynced resync = log.resyncs().back();
  ASSERT_EQ(resync.quarantined.size(), 1u);
  EXPECT_EQ(resync.quarantined[0].artifact_sha256, CrasherSha("crasher_init_segv"));

  // The same socket path; the version that ran before; its calls and live instances go on.
  const v1::HostInfo info = InfoAfterRestart(*client, epoch);
  EXPECT_TRUE(info.supervised());
  EXPECT_EQ(info.restarts(), 1u);
  ASSERT_EQ(info.quarantined_size(), 1);
  EXPECT_EQ(info.quarantined(0).bundle_name(), "crasher");
  EXPECT_EQ(VersionString(info.quarantined(0).version()), "3.0.0");
  EXPECT_EQ(info.quarantined(0).signal(), "SIGSEGV");
  EXPECT_EQ(info.quarantined(0).during(), "polyplug_init");
  EXPECT_EQ(info.quarantined(0).restart(), 1u);
  EXPECT_THAT(BundleVersions(*client), ElementsAre("counter 1.0.0", "crasher 1.0.0"));
  auto bundles = client->ListBundles();
  ASSERT_TRUE(bundles.ok());
  EXPECT_EQ(bundles->bundles(1).artifact_sha256(), CrasherSha("crasher_v1"));
  EXPECT_EQ(bundles->bundles(1).dir(), fs::canonical(root() / "crasher").string());
  EXPECT_EQ(Answer(*client), "v1");
  auto again = live->Invoke("version", "");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->response(), "v1");

  // The quarantined build is refused, not retried: FAILED before PREPARING, same server.
  auto refused = client->Reload("crasher");
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_EQ(refused->outcome(), v1::RELOAD_OUTCOME_FAILED);
  EXPECT_EQ(refused->reason(), v1::FAILURE_REASON_CRASHED);
  EXPECT_THAT(refused->message(), HasSubstr("is quarantined"));
  EXPECT_THAT(refused->message(),
              HasSubstr(fs::canonical(root() / "crasher" / "libcrasher.so").string()));
  ASSERT_EQ(refused->events_size(), 1);
  EXPECT_EQ(refused->events(0).phase(), v1::PHASE_FAILED);
  EXPECT_EQ(refused->host_epoch(), info.host_epoch());

  // A new build lifts it.
  CopyCrasher("crasher_v2");
  auto fixed = client->Reload("crasher");
  ASSERT_TRUE(fixed.ok()) << fixed.status();
  EXPECT_EQ(fixed->outcome(), v1::RELOAD_OUTCOME_RELOADED) << fixed->message();
  EXPECT_EQ(Answer(*client), "v2");
  auto info_after = client->GetHostInfo();
  ASSERT_TRUE(info_after.ok());
  EXPECT_EQ(info_after->host_epoch(), info.host_epoch());
  EXPECT_EQ(info_after->restarts(), 1u);
}

TEST_F(SuperviseTest, CrashInARemoteCallFallsBackToTheVersionBeforeIt) {
  ASSERT_NO_FATAL_FAILURE(StartSupervised());
  auto client = Connect();
  CopyCrasher("crasher_v2");
  auto reloaded = client->Reload("crasher");
  ASSERT_TRUE(reloaded.ok() && reloaded->outcome() == v1::RELOAD_OUTCOME_RELOADED);
  ASSERT_EQ(Answer(*client), "v2");
  SubscriptionLog log;
  auto subscription = client->Subscribe(log.Handlers());
  ASSERT_TRUE(log.WaitForLine("RESYNCED INITIAL counter,crasher"));

  auto call = client->InvokeOnce("test.crasher@1", "segv", "");
  ASSERT_FALSE(call.ok());
  ASSERT_TRUE(log.WaitForLine("FAILED crasher"));
  const client::PhaseEvent failed = log.events().back();
  EXPECT_EQ(failed.reason, v1::FAILURE_REASON_CRASHED);
  EXPECT_EQ(failed.bundle_version.ToString(), "2.0.0");
  EXPECT_EQ(failed.artifact_sha256, CrasherSha("crasher_v2"));
  EXPECT_THAT(failed.message, HasSubstr("SIGSEGV in method \"segv\""));

  // v2 crashed in a call: the restarted server runs v1, the healthy version before it.
  const v1::HostInfo info = InfoAfterRestart(*client, host().epoch());
  EXPECT_EQ(info.restarts(), 1u);
  EXPECT_THAT(BundleVersions(*client), ElementsAre("counter 1.0.0", "crasher 1.0.0"));
  EXPECT_EQ(Answer(*client), "v1");
}

TEST_F(SuperviseTest, AbortInACallWithNoEarlierVersionLeavesOnlyThatBundleOut) {
  ASSERT_NO_FATAL_FAILURE(StartSupervised());
  auto client = Connect();
  ASSERT_FALSE(client->InvokeOnce("test.crasher@1", "abort", "").ok());
  const v1::HostInfo info = InfoAfterRestart(*client, host().epoch());
  ASSERT_EQ(info.quarantined_size(), 1);
  EXPECT_EQ(info.quarantined(0).signal(), "SIGABRT");
  EXPECT_EQ(info.quarantined(0).during(), "method \"abort\"");
  EXPECT_EQ(info.quarantined(0).artifact_sha256(), CrasherSha("crasher_v1"));

  // Everything else serves; the crasher's only version is out, and refused.
  EXPECT_THAT(BundleVersions(*client), ElementsAre("counter 1.0.0"));
  auto counter = client->InvokeOnce("test.counter@1", "version", "");
  ASSERT_TRUE(counter.ok()) << counter.status();
  EXPECT_EQ(counter->response(), "v1");
  EXPECT_EQ(client::FailureReasonOf(client->FindContract("test.crasher@1").status()),
            v1::FAILURE_REASON_CONTRACT_NOT_FOUND);
  auto load = client->LoadBundle((root() / "crasher").string());
  EXPECT_EQ(load.status().code(), absl::StatusCode::kFailedPrecondition) << load.status();
  EXPECT_EQ(client::FailureReasonOf(load.status()), v1::FAILURE_REASON_CRASHED);
  EXPECT_THAT(std::string(load.status().message()), HasSubstr("SIGABRT in method \"abort\""));
  auto health = client->CheckHealth("crasher");
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(*health, client::ServingStatus::kServiceUnknown);

  // A snapshot lists the quarantined version next to the loaded bundles.
  SubscriptionLog log;
  auto subscription = client->Subscribe(log.Handlers());
  ASSERT_TRUE(log.WaitForLine("RESYNCED INITIAL counter"));
  const client::Resynced resync = log.resyncs().back();
  ASSERT_EQ(resync.quarantined.size(), 1u);
  EXPECT_EQ(resync.quarantined[0].bundle_name, "crasher");
  EXPECT_EQ(resync.quarantined[0].reason, v1::FAILURE_REASON_CRASHED);
  EXPECT_THAT(log.events(), IsEmpty()) << "a crash before this client connected is state, "
                                          "not an event to replay";
}

// A dependent of a bundle the crash left with no healthy version cannot come back either:
// a subscriber learns that from the stream (a FAILED with its reason, after the crash's
// own), and every later snapshot lists it until it loads again.
TEST_F(SuperviseTest, ADependentLeftOutByTheRestartIsAFailureOnTheStream) {
  WriteGraphNode(root(), GraphNode("needs_crasher", {"test.crasher@1"}, false));
  ASSERT_NO_FATAL_FAILURE(StartSupervised());
  auto client = Connect();
  SubscriptionLog log;
  auto subscription = client->Subscribe(log.Handlers());
  ASSERT_TRUE(log.WaitForLine("RESYNCED INITIAL counter,crasher,needs_crasher"));
  ASSERT_FALSE(client->InvokeOnce("test.crasher@1", "abort", "").ok());
  (void)InfoAfterRestart(*client, host().epoch());
  ASSERT_TRUE(log.WaitForLine("FAILED needs_crasher"));
  const std::vector<client::PhaseEvent> events = log.events();
  ASSERT_GE(events.size(), 2u);
  const client::PhaseEvent& crashed = events[events.size() - 2];
  const client::PhaseEvent& left_out = events.back();
  EXPECT_EQ(crashed.bundle_name, "crasher");
  EXPECT_EQ(crashed.reason, v1::FAILURE_REASON_CRASHED);
  EXPECT_EQ(left_out.reason, v1::FAILURE_REASON_UNSATISFIED_DEPENDENCY);
  EXPECT_THAT(left_out.message, HasSubstr("not restored after the host restarted"));
  EXPECT_THAT(left_out.message, HasSubstr("test.crasher@1"));
  EXPECT_THAT(BundleVersions(*client), ElementsAre("counter 1.0.0"));

  // A new subscriber's snapshot has it as state.
  SubscriptionLog later;
  auto second = client->Subscribe(later.Handlers());
  ASSERT_TRUE(later.WaitForLine("RESYNCED INITIAL counter"));
  const client::Resynced resync = later.resyncs().back();
  ASSERT_EQ(resync.quarantined.size(), 2u);
  EXPECT_EQ(resync.quarantined[0].reason, v1::FAILURE_REASON_CRASHED);
  EXPECT_EQ(resync.quarantined[1].bundle_name, "needs_crasher");
  EXPECT_EQ(resync.quarantined[1].reason, v1::FAILURE_REASON_UNSATISFIED_DEPENDENCY);
}

TEST_F(SuperviseTest, CrashInInitAtStartIsQuarantinedOnceAndTheRestServes) {
  Copy("counter_v1");
  CopyCrasher("crasher_init_abort");
  ASSERT_NO_FATAL_FAILURE(StartHost({"--supervise"}));
  auto client = Connect();
  auto info = client->GetHostInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->restarts(), 1u) << "one crash at start, then no loop";
  ASSERT_EQ(info->quarantined_size(), 1);
  EXPECT_EQ(info->quarantined(0).signal(), "SIGABRT");
  EXPECT_EQ(info->quarantined(0).during(), "polyplug_init");
  EXPECT_THAT(BundleVersions(*client), ElementsAre("counter 1.0.0"));
  // The crash is the first event of the restarted server's journal.
  auto events = host().Stderr();
  EXPECT_THAT(events, HasSubstr("[seq 1] FAILED crasher 4.0.0 reason=CRASHED"));
  EXPECT_THAT(events, HasSubstr("running polyplug_init of bundle \"crasher\""));

  // A good build loads.
  CopyCrasher("crasher_v1");
  auto loaded = client->LoadBundle((root() / "crasher").string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(Answer(*client), "v1");
}

TEST_F(SuperviseTest, CrashOnABundleThreadIsBlamedOnTheBundle) {
  ASSERT_NO_FATAL_FAILURE(StartSupervised());
  auto client = Connect();
  ASSERT_FALSE(client->InvokeOnce("test.crasher@1", "segv_on_thread", "").ok());
  const v1::HostInfo info = InfoAfterRestart(*client, host().epoch());
  ASSERT_EQ(info.quarantined_size(), 1);
  EXPECT_EQ(info.quarantined(0).bundle_name(), "crasher");
  EXPECT_EQ(info.quarantined(0).signal(), "SIGSEGV");
  EXPECT_THAT(info.quarantined(0).during(), HasSubstr("its code"));
}

TEST_F(SuperviseTest, AServerKilledFromOutsideComesBackWithTheSetThatRanNotTheDisk) {
  ASSERT_NO_FATAL_FAILURE(StartSupervised());
  auto client = Connect();
  CopyCrasher("crasher_v2");
  auto reloaded = client->Reload("crasher");
  ASSERT_TRUE(reloaded.ok() && reloaded->outcome() == v1::RELOAD_OUTCOME_RELOADED);
  // On disk now, but never reloaded: the restart must not pick it up.
  CopyCrasher("crasher_v1");
  SubscriptionLog log;
  auto subscription = client->Subscribe(log.Handlers());
  ASSERT_TRUE(log.WaitForLine("RESYNCED INITIAL counter,crasher"));

  ASSERT_NO_FATAL_FAILURE(KillServer());
  ASSERT_TRUE(log.WaitForLine("RESYNCED HOST_RESTARTED counter,crasher"));
  const v1::HostInfo info = InfoAfterRestart(*client, host().epoch());
  EXPECT_EQ(info.restarts(), 1u);
  EXPECT_EQ(info.quarantined_size(), 0) << "a SIGKILL from outside blames no bundle";
  EXPECT_THAT(BundleVersions(*client), ElementsAre("counter 1.0.0", "crasher 2.0.0"));
  EXPECT_EQ(Answer(*client), "v2");
  EXPECT_THAT(host().Stderr(), HasSubstr("died of SIGKILL (no thread was running bundle code)"));
}

TEST_F(SuperviseTest, ATcpPortChosenByTheKernelStaysTheSameAcrossRestarts) {
  Copy("counter_v1");
  CopyCrasher("crasher_v1");
  host_ = std::make_unique<HostProcess>(
      std::vector<std::string>{"--bundles", root().string(), "--supervise"});
  host_->SetAddress(address());
  host_->AddListenAddress("127.0.0.1:0");
  ASSERT_TRUE(host_->Start().ok());
  auto client = Connect();
  auto before = client->GetHostInfo();
  ASSERT_TRUE(before.ok());
  ASSERT_EQ(before->listen_addresses_size(), 2);
  const std::string tcp = before->listen_addresses(1);
  ASSERT_FALSE(absl::EndsWith(tcp, ":0"));

  ASSERT_FALSE(client->InvokeOnce("test.crasher@1", "segv", "").ok());
  const v1::HostInfo after = InfoAfterRestart(*client, before->host_epoch());
  EXPECT_THAT(after.listen_addresses(), ElementsAre(address(), tcp));
  auto over_tcp = Connect(FastOptions(), tcp);
  auto info = over_tcp->GetHostInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->host_epoch(), after.host_epoch());
}

TEST_F(SuperviseTest, PolyplugctlReportsAReloadOrCallThatCrashedTheHostAsFailed) {
  ASSERT_NO_FATAL_FAILURE(StartSupervised());
  CopyCrasher("crasher_init_segv");
  const ProcessResult reload =
      RunProcess({POLYPLUGCTL_BINARY, "--host", address(), "reload", "crasher"});
  EXPECT_EQ(reload.exit_code, 1) << reload.out << reload.err;
  EXPECT_THAT(reload.out, HasSubstr("FAILED crasher: [CRASHED] bundle \"crasher\" 3.0.0 crashed "
                                    "the host with SIGSEGV in polyplug_init"));
  EXPECT_THAT(reload.err, HasSubstr("the host crashed; its supervisor restarted it (restart 1)"));

  const ProcessResult json =
      RunProcess({POLYPLUGCTL_BINARY, "--host", address(), "--json", "reload", "crasher"});
  EXPECT_EQ(json.exit_code, 1) << json.out << json.err;
  EXPECT_THAT(json.out, HasSubstr("\"outcome\":\"RELOAD_OUTCOME_FAILED\""));
  EXPECT_THAT(json.out, HasSubstr("\"reason\":\"FAILURE_REASON_CRASHED\""));

  // The same for a call (the restored v1's method that faults).
  const ProcessResult call =
      RunProcess({POLYPLUGCTL_BINARY, "--host", address(), "call", "test.crasher@1", "segv"});
  EXPECT_EQ(call.exit_code, 1) << call.out << call.err;
  EXPECT_THAT(call.err, HasSubstr("FAILED_PRECONDITION: [CRASHED] bundle \"crasher\" 1.0.0 "
                                  "crashed the host with SIGSEGV in method \"segv\""));

  const ProcessResult info = RunProcess({POLYPLUGCTL_BINARY, "--host", address(), "info"});
  EXPECT_EQ(info.exit_code, 0) << info.err;
  EXPECT_THAT(info.out, HasSubstr("yes, restarted 2 time(s)"));
  EXPECT_THAT(info.out, HasSubstr("quarantined: crasher 3.0.0"));
  EXPECT_THAT(info.out, HasSubstr("quarantined: crasher 1.0.0"));
}

TEST_F(SuperviseTest, CrashesNoBundleIsBlamedForEndTheSupervisorAtTheLimit) {
  ASSERT_NO_FATAL_FAILURE(StartSupervised({"--crash-loop-limit", "2"}));
  auto client = Connect();
  ASSERT_NO_FATAL_FAILURE(KillServer());
  InfoAfterRestart(*client, host().epoch());
  ASSERT_NO_FATAL_FAILURE(KillServer());
  const int status = host().WaitExit();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << DescribeWaitStatus(status);
  EXPECT_THAT(host().Stderr(), HasSubstr("2 crashes in a row that no bundle can be blamed for; "
                                         "giving up"));
}

TEST_F(SuperviseTest, AServerThatCannotStartIsNotRetried) {
  const ProcessResult run = RunProcess({POLYPLUG_HOST_BINARY, "--supervise", "--listen", "nonsense",
                                        "--state-dir", (dir_.path() / "state").string()});
  EXPECT_EQ(run.exit_code, 2) << run.err;
  EXPECT_THAT(run.err, HasSubstr("--listen nonsense: expected unix:PATH or HOST:PORT"));
  EXPECT_THAT(run.err, HasSubstr("the server did not start (exited with 2); not restarting it"));
}

TEST_F(SuperviseTest, SigtermStopsTheServerAndTheSupervisorCleanly) {
  ASSERT_NO_FATAL_FAILURE(StartSupervised());
  const pid_t server = ServerPid();
  ASSERT_GT(server, 0);
  host().Kill(SIGTERM);
  const int status = host().WaitExit();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << DescribeWaitStatus(status);
  EXPECT_NE(kill(server, 0), 0) << "the server outlived its supervisor";
  EXPECT_THAT(host().Stderr(), HasSubstr("SIGTERM received, stopping the server"));
  EXPECT_FALSE(fs::exists(socket_path()));
}

}  // namespace
}  // namespace polyplug::test
