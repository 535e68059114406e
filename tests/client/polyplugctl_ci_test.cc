// What a CI job relies on polyplugctl for, against a real polyplug-host (issue 19): request
// ids and the outcome of an operation whose response was lost, `operation`, the timeout exit
// code 4, `wait` (also for a host not up yet), the --json envelope of every command,
// $POLYPLUG_TOKEN, --version, the bash completion, and watch cursors as EPOCH:SEQ.
//
// A reload is held mid-way by a remote call in flight on the counter's "block" method, which
// the test releases through a FIFO (tests/host/host_fixture.h); a deadline that must pass
// passes against a host stopped with SIGSTOP (HostProcess::Freeze). Nothing sleeps: the test
// waits for what polyplugctl prints (its stderr merged into its stdout where that matters).
#include <future>
#include <optional>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/client_fixture.h"
#include "client/polyplugctl_json.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::polyplug::host::v1;
using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::SizeIs;

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

std::string Shown(const ProcessResult& r) {
  return absl::StrCat("exit ", r.exit_code, "\n--- stdout\n", r.out, "--- stderr\n", r.err);
}

// A string field of a google.protobuf.Struct, "" when absent.
std::string Field(const google::protobuf::Struct& s, const std::string& name) {
  auto it = s.fields().find(name);
  return it == s.fields().end() ? "" : it->second.string_value();
}

// Every command polyplugctl has, as `polyplugctl help` lists them.
const std::vector<std::string> kCommands = {"reload", "load",   "push",    "unload",    "operation",
                                            "find",   "list",   "watch",   "wait",      "call",
                                            "info",   "health", "id",      "keygen",    "sign",
                                            "verify", "digest", "version", "completion"};

class PolyplugctlCiTest : public ClientTest {
 protected:
  std::vector<std::string> CtlArgs(std::vector<std::string> args) {
    args.insert(args.begin(), {POLYPLUGCTL_BINARY, "--host", address()});
    return args;
  }
  ProcessResult Ctl(std::vector<std::string> args,
                    std::vector<std::pair<std::string, std::string>> env = {}) {
    return RunProcess(CtlArgs(std::move(args)), env);
  }
  // polyplugctl with its stderr merged into its stdout, so that ReadLine() sees its notes.
  std::vector<std::string> MergedCtlArgs(std::vector<std::string> args) {
    std::vector<std::string> argv = {"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1"};
    for (std::string& arg : CtlArgs(std::move(args))) argv.push_back(std::move(arg));
    return argv;
  }

  // Starts a remote call on the counter's "block" method, which holds any reload of the
  // counter at PREPARING (the host drains calls in flight first) until ReleaseBlockedCall.
  void BlockTheCounter() {
    fifos_ = dir_.path() / "fifos";
    ASSERT_NO_FATAL_FAILURE(MakeBlockFifos(fifos_));
    caller_ = Connect();
    blocked_ = std::async(std::launch::async, [this] {
      return caller_->InvokeOnce("test.counter@1", "block", fifos_.string()).status();
    });
    ASSERT_TRUE(WaitForBlockedCall(fifos_)) << "the blocking call did not start";
  }
  void Unblock() {
    ReleaseBlockedCall(fifos_);
    EXPECT_TRUE(blocked_.get().ok());
  }

  fs::path fifos_;
  std::unique_ptr<client::HostClient> caller_;
  std::future<absl::Status> blocked_;
};

// A deadline that passes without an answer is exit code 4, not "unreachable" (3).
TEST_F(PolyplugctlCiTest, ADeadlineWithoutAnAnswerIsExitCode4) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  host().Freeze();  // it accepts connections and answers nothing
  absl::Cleanup thaw = [this] { host().Thaw(); };
  ProcessResult info = Ctl({"info", "--timeout", "300ms"});
  EXPECT_EQ(info.exit_code, 4) << Shown(info);
  EXPECT_THAT(info.err, HasSubstr("DEADLINE_EXCEEDED"));
  ProcessResult json = Ctl({"list", "bundles", "--timeout", "300ms", "--json"});
  EXPECT_EQ(json.exit_code, 4) << Shown(json);
  EXPECT_EQ(Field(ParseCtlObject(json.out, "error"), "code"), "DEADLINE_EXCEEDED");
  // A reload that gets no answer, and whose outcome the host cannot be asked for either.
  ProcessResult reload = Ctl({"reload", "counter", "--timeout", "300ms", "--recover-timeout",
                              "300ms", "--request-id", "frozen-1"});
  EXPECT_EQ(reload.exit_code, 4) << Shown(reload);
  EXPECT_THAT(reload.err, HasSubstr("request id: frozen-1"));
  EXPECT_THAT(reload.err, HasSubstr("no outcome for request id frozen-1"));
  std::move(thaw).Invoke();

  // watch and wait ended by --timeout before their condition: 4 as well.
  ProcessResult watch = Ctl({"watch", "--count", "1", "--timeout", "300ms", "--json"});
  EXPECT_EQ(watch.exit_code, 4) << Shown(watch);
  EXPECT_EQ(Field(ParseCtlObject(Lines(watch.out).back(), "error"), "code"), "DEADLINE_EXCEEDED");
  ProcessResult wait =
      Ctl({"wait", "--bundle", "counter", "--version", "9.9.9", "--timeout", "300ms"});
  EXPECT_EQ(wait.exit_code, 4) << Shown(wait);
  EXPECT_THAT(wait.err, HasSubstr("counter is at 1.0.0"));
}

// The CI case: the job's --timeout passes while the reload waits for a call to drain. The
// host goes on with it; polyplugctl asks the host for the outcome under its request id and
// reports the real one. A retry with the same id gets the same outcome and reloads nothing.
TEST_F(PolyplugctlCiTest, AReloadWhoseResponseWasLostReportsTheRealOutcome) {
  const fs::path counter = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost({"--drain-timeout", "10m"}));
  ASSERT_NO_FATAL_FAILURE(BlockTheCounter());
  absl::Cleanup unblock = [this] { ReleaseBlockedCallIfWaiting(fifos_); };
  OverwriteArtifact(TestBundleDir("counter_v2"), counter);

  ChildProcess reload(MergedCtlArgs({"reload", "counter", "--timeout", "2s", "--recover-timeout",
                                     "10m", "--request-id", "ci-job-7"}));
  // Its deadline passed; the reload runs on in the host, and polyplugctl waits for it.
  std::vector<std::string> seen;
  while (true) {
    std::optional<std::string> line = reload.ReadLine();
    ASSERT_TRUE(line.has_value()) << "polyplugctl ended first:\n" << absl::StrJoin(seen, "\n");
    seen.push_back(*line);
    if (absl::StrContains(*line, "waiting for its outcome")) break;
  }
  EXPECT_THAT(seen.front(), HasSubstr("request id: ci-job-7"));
  EXPECT_THAT(seen.back(), HasSubstr("DEADLINE_EXCEEDED"));
  Unblock();
  ProcessResult r = reload.Wait();
  ASSERT_EQ(r.exit_code, 0) << Shown(r) << absl::StrJoin(seen, "\n");
  EXPECT_THAT(r.out, HasSubstr("RELOADED counter 2.0.0 (was 1.0.0)"));

  auto client = Connect();
  const uint64_t last_seq = client->GetHostInfo()->last_seq();
  ProcessResult retry = Ctl({"reload", "counter", "--request-id", "ci-job-7", "--json"});
  ASSERT_EQ(retry.exit_code, 0) << Shown(retry);
  EXPECT_EQ(SplitCtlEnvelope(retry.out).request_id, "ci-job-7");
  const auto first = ParseCtlJson<v1::ReloadResponse>(retry.out);
  EXPECT_EQ(first.outcome(), v1::RELOAD_OUTCOME_RELOADED);
  EXPECT_EQ(client->GetHostInfo()->last_seq(), last_seq) << "the retry reloaded again";

  // `operation` prints what the host remembers.
  ProcessResult op = Ctl({"operation", "ci-job-7", "--json"});
  ASSERT_EQ(op.exit_code, 0) << Shown(op);
  const auto operation = ParseCtlJson<v1::Operation>(op.out);
  EXPECT_TRUE(operation.done());
  EXPECT_EQ(operation.method(), "Reload");
  EXPECT_EQ(operation.reload().reload_id(), first.reload_id());
  ProcessResult human = Ctl({"operation", "ci-job-7"});
  EXPECT_EQ(human.exit_code, 0) << Shown(human);
  EXPECT_THAT(human.out, HasSubstr("Reload, request id ci-job-7, done"));
  EXPECT_THAT(human.out, HasSubstr("RELOADED counter 2.0.0"));
  ProcessResult unknown = Ctl({"operation", "never-sent", "--json"});
  EXPECT_EQ(unknown.exit_code, 1) << Shown(unknown);
  EXPECT_EQ(Field(ParseCtlObject(unknown.out, "error"), "reason"), "OPERATION_NOT_FOUND");

  // Without --request-id polyplugctl makes one (16 hex digits) and says which.
  ProcessResult fresh = Ctl({"reload", "counter"});
  EXPECT_EQ(fresh.exit_code, 0) << Shown(fresh);
  EXPECT_THAT(fresh.err, ContainsRegex("request id: [0-9a-f]{16}\n"));
  EXPECT_GT(client->GetHostInfo()->last_seq(), last_seq);
}

// A connection that breaks mid-reload is exit code 3 (the host could not be asked either);
// the reload goes on in the host, and `operation ID --wait` finds its outcome later.
TEST_F(PolyplugctlCiTest, AConnectionBrokenMidReloadIsExitCode3AndTheOutcomeStaysFindable) {
  const fs::path counter = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost({"--drain-timeout", "10m"}));
  ASSERT_NO_FATAL_FAILURE(BlockTheCounter());
  absl::Cleanup unblock = [this] { ReleaseBlockedCallIfWaiting(fifos_); };
  OverwriteArtifact(TestBundleDir("counter_v2"), counter);
  TcpProxy proxy(socket_path());
  ChildProcess reload({POLYPLUGCTL_BINARY, "--host", proxy.address(), "reload", "counter",
                       "--request-id", "sever-1"});
  // The reload runs (and waits for the blocked call): cut polyplugctl off.
  ASSERT_TRUE(host().WaitForStderrLine("PREPARING counter").ok());
  proxy.Sever();
  ProcessResult r = reload.Wait();
  EXPECT_EQ(r.exit_code, 3) << Shown(r);
  EXPECT_THAT(r.err, HasSubstr("request id: sever-1"));
  proxy.Restore();
  ChildProcess follow(
      {POLYPLUGCTL_BINARY, "--host", proxy.address(), "operation", "sever-1", "--wait"});
  Unblock();
  ProcessResult done = follow.Wait();
  EXPECT_EQ(done.exit_code, 0) << Shown(done);
  EXPECT_THAT(done.out, HasSubstr("RELOADED counter 2.0.0 (was 1.0.0)"));
}

// Still running when polyplugctl stops waiting: exit code 4, and `operation ID --wait`
// follows it to its end.
TEST_F(PolyplugctlCiTest, AnOperationStillRunningIsExitCode4UntilItEnds) {
  const fs::path counter = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost({"--drain-timeout", "10m"}));
  ASSERT_NO_FATAL_FAILURE(BlockTheCounter());
  absl::Cleanup unblock = [this] { ReleaseBlockedCallIfWaiting(fifos_); };
  OverwriteArtifact(TestBundleDir("counter_v2"), counter);

  ProcessResult reload = Ctl({"reload", "counter", "--timeout", "1s", "--recover-timeout", "1s",
                              "--request-id", "slow-1", "--json"});
  EXPECT_EQ(reload.exit_code, 4) << Shown(reload);
  const CtlEnvelope error = SplitCtlEnvelope(reload.out);
  EXPECT_EQ(error.type, "error");
  EXPECT_EQ(error.request_id, "slow-1");
  EXPECT_THAT(reload.err, HasSubstr("still running"));
  EXPECT_THAT(reload.err, HasSubstr("polyplugctl operation slow-1 --wait"));

  ProcessResult running = Ctl({"operation", "slow-1"});
  EXPECT_EQ(running.exit_code, 4) << Shown(running);
  EXPECT_THAT(running.out, HasSubstr("RUNNING  Reload"));
  ProcessResult waited = Ctl({"operation", "slow-1", "--wait", "--timeout", "500ms"});
  EXPECT_EQ(waited.exit_code, 4) << Shown(waited);

  ChildProcess follow(CtlArgs({"operation", "slow-1", "--wait", "--json"}));
  Unblock();
  ProcessResult done = follow.Wait();
  ASSERT_EQ(done.exit_code, 0) << Shown(done);
  const auto operation = ParseCtlJson<v1::Operation>(done.out);
  EXPECT_TRUE(operation.done());
  EXPECT_EQ(operation.reload().outcome(), v1::RELOAD_OUTCOME_RELOADED);
}

// A failed reload found through its request id is exit code 1, as the reload was.
TEST_F(PolyplugctlCiTest, OperationExitCodeFollowsTheOutcome) {
  const fs::path counter = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  WriteFile(counter / "libcounter.so", "not an ELF file");
  EXPECT_EQ(Ctl({"reload", "counter", "--request-id", "broken-1"}).exit_code, 1);
  ProcessResult op = Ctl({"operation", "broken-1"});
  EXPECT_EQ(op.exit_code, 1) << Shown(op);
  EXPECT_THAT(op.out, HasSubstr("FAILED counter: [ARTIFACT_NOT_LOADABLE]"));
  EXPECT_EQ(Ctl({"unload", "nope", "--request-id", "unload-1"}).exit_code, 1);
  ProcessResult failed_call = Ctl({"operation", "unload-1"});
  EXPECT_EQ(failed_call.exit_code, 1) << Shown(failed_call);
  EXPECT_THAT(failed_call.out, HasSubstr("BUNDLE_NOT_FOUND"));
  // The same id for another request is refused.
  ProcessResult reused = Ctl({"unload", "counter", "--request-id", "broken-1"});
  EXPECT_EQ(reused.exit_code, 1) << Shown(reused);
  EXPECT_THAT(reused.err, HasSubstr("REQUEST_ID_REUSED"));
}

// wait started before the host: it waits for the host to come up, then for the bundle.
TEST_F(PolyplugctlCiTest, WaitWaitsForTheHostAndTheBundle) {
  const fs::path counter = Copy("counter_v1");
  ChildProcess early(CtlArgs({"wait", "--bundle", "counter", "--version", "1.0.0", "--json"}));
  ChildProcess host_only(CtlArgs({"wait"}));
  ASSERT_NO_FATAL_FAILURE(StartHost({"--hash-artifacts"}));
  ProcessResult r = early.Wait();
  ASSERT_EQ(r.exit_code, 0) << Shown(r);
  const auto met = ParseCtlObject(r.out, "polyplugctl.Wait");
  EXPECT_EQ(Field(met, "status"), "SERVING");
  EXPECT_EQ(Field(met, "host_epoch"), absl::StrCat(host().epoch()));
  EXPECT_EQ(Field(met.fields().at("bundle").struct_value(), "version"), "1.0.0");
  ProcessResult serving = host_only.Wait();
  EXPECT_EQ(serving.exit_code, 0) << Shown(serving);
  EXPECT_THAT(serving.out, HasSubstr("SERVING"));

  // A version that is not there yet: the wait ends with the reload that brings it.
  OverwriteArtifact(TestBundleDir("counter_v2"), counter);
  const std::string sha = Sha256OfFile(counter / "libcounter.so");
  ChildProcess upgrade(
      CtlArgs({"wait", "--bundle", "counter", "--version", "2.0.0", "--sha256", sha}));
  auto client = Connect();
  ReloadOk(*client, "counter");
  ProcessResult upgraded = upgrade.Wait();
  EXPECT_EQ(upgraded.exit_code, 0) << Shown(upgraded);
  EXPECT_THAT(upgraded.out, HasSubstr("LOADED counter 2.0.0 (artifact sha256 " + sha + ")"));

  ProcessResult missing = Ctl({"wait", "--bundle", "nope", "--timeout", "300ms"});
  EXPECT_EQ(missing.exit_code, 4) << Shown(missing);
  EXPECT_THAT(missing.err, HasSubstr("nope is not loaded"));
}

TEST_F(PolyplugctlCiTest, WaitForAHostThatNeverComesIsExitCode4) {
  ProcessResult r = Ctl({"wait", "--timeout", "300ms"});
  EXPECT_EQ(r.exit_code, 4) << Shown(r);
  EXPECT_THAT(r.err, HasSubstr("did not come up"));
}

// Every --json line is {"type", ["request_id",] "object"}; the type is the proto message's
// full name, polyplugctl's own object type, or "error".
TEST_F(PolyplugctlCiTest, EveryJsonLineIsAnEnvelope) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"info"}, "polyplug.host.v1.HostInfo"},
      {{"list", "bundles"}, "polyplug.host.v1.Bundle"},
      {{"list", "contracts"}, "polyplug.host.v1.ContractHandle"},
      {{"find", "test.counter@1"}, "polyplug.host.v1.ContractHandle"},
      {{"call", "test.counter@1", "version"}, "polyplug.host.v1.InvokeResponse"},
      {{"health"}, "polyplugctl.Health"},
      {{"wait"}, "polyplugctl.Wait"},
      {{"version"}, "polyplugctl.Version"},
      {{"id", "counter"}, "polyplugctl.Id"},
      {{"reload", "counter", "--request-id", "env-1"}, "polyplug.host.v1.ReloadResponse"},
      {{"operation", "env-1"}, "polyplug.host.v1.Operation"},
      {{"unload", "counter", "--request-id", "env-2"}, "polyplug.host.v1.UnloadBundleResponse"},
      {{"load", (root() / "counter_v1").string(), "--request-id", "env-3"},
       "polyplug.host.v1.LoadBundleResponse"},
      {{"find", "nothing@1"}, "error"},
  };
  for (const auto& [args, type] : cases) {
    std::vector<std::string> json = args;
    json.push_back("--json");
    ProcessResult r = Ctl(json);
    const std::vector<std::string> lines = Lines(r.out);
    ASSERT_FALSE(lines.empty()) << args[0] << "\n" << Shown(r);
    for (const std::string& line : lines) {
      const CtlEnvelope envelope = SplitCtlEnvelope(line);
      // A listing ends with the cursor it is current at.
      const bool cursor = args[0] == "list" && &line == &lines.back();
      EXPECT_EQ(envelope.type, cursor ? "polyplug.host.v1.Cursor" : type) << line;
      const bool sends_id = args[0] == "reload" || args[0] == "load" || args[0] == "unload";
      EXPECT_EQ(envelope.request_id.empty(), !sends_id) << line;
    }
  }
  // The version's object: polyplugctl's, and the host's with --host.
  const auto version = ParseCtlObject(Ctl({"version", "--json"}).out, "polyplugctl.Version");
  EXPECT_EQ(Field(version, "host"), host().info_at_start().version());
  // watch: events, the resync and a timeout's error.
  ChildProcess watch(CtlArgs({"watch", "--count", "2", "--json"}));
  auto first = watch.ReadLine();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(Field(ParseCtlObject(*first, "polyplugctl.Resynced"), "host_epoch"),
            absl::StrCat(host().epoch()));
  auto client = Connect();
  ReloadOk(*client, "counter");
  ProcessResult watched = watch.Wait();
  ASSERT_EQ(watched.exit_code, 0) << Shown(watched);
  ASSERT_THAT(Lines(watched.out), SizeIs(3));
  const auto event = ParseCtlJson<v1::ReloadPhaseEvent>(Lines(watched.out)[2]);
  EXPECT_EQ(event.phase(), v1::PHASE_RELOADED);
  EXPECT_EQ(event.host_epoch(), host().epoch());
}

TEST_F(PolyplugctlCiTest, TokenFromTheEnvironment) {
  WriteFile(dir_.path() / "token", "s3cret\n");
  WriteFile(dir_.path() / "wrong", "guess\n");
  ASSERT_NO_FATAL_FAILURE(
      StartHost({"--auth-token-file", (dir_.path() / "token").string()}, "s3cret"));
  ProcessResult by_env = Ctl({"info"}, {{"POLYPLUG_TOKEN", "s3cret"}});
  EXPECT_EQ(by_env.exit_code, 0) << Shown(by_env);
  EXPECT_EQ(Ctl({"info"}, {{"POLYPLUG_TOKEN", "guess"}}).exit_code, 3);
  EXPECT_EQ(Ctl({"info"}, {{"POLYPLUG_TOKEN", ""}}).exit_code, 3) << "empty: no token";
  // The flag wins over the variable, either way.
  EXPECT_EQ(
      Ctl({"info", "--token-file", (dir_.path() / "token").string()}, {{"POLYPLUG_TOKEN", "guess"}})
          .exit_code,
      0);
  EXPECT_EQ(Ctl({"info", "--token-file", (dir_.path() / "wrong").string()},
                {{"POLYPLUG_TOKEN", "s3cret"}})
                .exit_code,
            3);
  // wait and watch use it too.
  EXPECT_EQ(Ctl({"wait", "--bundle", "none", "--timeout", "300ms"}, {{"POLYPLUG_TOKEN", "s3cret"}})
                .exit_code,
            4);
  EXPECT_EQ(Ctl({"wait", "--timeout", "5s"}, {{"POLYPLUG_TOKEN", "guess"}}).exit_code, 3);
}

TEST_F(PolyplugctlCiTest, VersionNeedsNoHostAndShowsTheHostsWithHost) {
  // No --host: connects to nothing (a malformed $POLYPLUG_HOST does not matter).
  for (const char* flag : {"--version", "version"}) {
    ProcessResult r = RunProcess({POLYPLUGCTL_BINARY, flag}, {{"POLYPLUG_HOST", "unix:"}});
    EXPECT_EQ(r.exit_code, 0) << Shown(r);
    EXPECT_THAT(r.out, ContainsRegex("^polyplugctl [0-9]+\\.[0-9]+\\.[0-9]+\n$"));
  }
  ProcessResult after = RunProcess({POLYPLUGCTL_BINARY, "info", "--version"});
  EXPECT_EQ(after.exit_code, 0) << Shown(after);
  EXPECT_THAT(after.out, HasSubstr("polyplugctl "));
  // Before `wait`, --version is polyplugctl's; after it, wait's own (a bundle version).
  ProcessResult before_wait = RunProcess({POLYPLUGCTL_BINARY, "--version", "wait"});
  EXPECT_EQ(before_wait.exit_code, 0) << Shown(before_wait);
  EXPECT_THAT(before_wait.out, HasSubstr("polyplugctl "));
  ProcessResult unreachable = Ctl({"version"});
  EXPECT_EQ(unreachable.exit_code, 3) << Shown(unreachable);
  ASSERT_NO_FATAL_FAILURE(StartHost());
  ProcessResult both = Ctl({"--version"});
  EXPECT_EQ(both.exit_code, 0) << Shown(both);
  EXPECT_THAT(both.out, HasSubstr("polyplug-host " + host().info_at_start().version()));
}

TEST_F(PolyplugctlCiTest, BashCompletionNamesEveryCommandAndCompletes) {
  ProcessResult script = RunProcess({POLYPLUGCTL_BINARY, "completion", "bash"});
  ASSERT_EQ(script.exit_code, 0) << Shown(script);
  for (const std::string& command : kCommands) {
    EXPECT_THAT(script.out, ContainsRegex(absl::StrCat("[\" ]", command, "[\" ]"))) << command;
  }
  // The global help lists the same commands.
  ProcessResult help = RunProcess({POLYPLUGCTL_BINARY, "help"});
  for (const std::string& command : kCommands) {
    EXPECT_THAT(help.out, HasSubstr(absl::StrCat("\n  ", command, " "))) << command;
  }
  const fs::path file = dir_.path() / "polyplugctl.bash";
  WriteFile(file, script.out);
  // Completes `polyplugctl <words>` and prints the candidates, one per line.
  auto complete = [&](const std::string& words) {
    const std::string program =
        absl::StrCat("source '", file.string(), "'; COMP_WORDS=(polyplugctl ", words,
                     "); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _polyplugctl; printf '%s\\n' "
                     "\"${COMPREPLY[@]}\"");
    ProcessResult r = RunProcess({"/bin/bash", "-c", program});
    EXPECT_EQ(r.exit_code, 0) << words << "\n" << Shown(r);
    return Lines(r.out);
  };
  EXPECT_THAT(complete("rel"), ::testing::ElementsAre("reload"));
  EXPECT_THAT(complete("--host unix:x op"), ::testing::ElementsAre("operation"));
  EXPECT_THAT(complete("reload x --req"), ::testing::ElementsAre("--request-id"));
  EXPECT_THAT(complete("wait --ver"), ::testing::ElementsAre("--version"));
  EXPECT_THAT(complete("list c"), ::testing::ElementsAre("contracts"));
  EXPECT_THAT(complete("--color a"), ::testing::ElementsAre("auto", "always"));
}

// watch prints each event's EPOCH:SEQ, takes one back with --from, refuses one of another
// epoch, and warns that a bare SEQ is taken in the host's current epoch.
TEST_F(PolyplugctlCiTest, WatchCursorsCarryTheEpoch) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const uint64_t epoch = host().epoch();
  const uint64_t next = host().info_at_start().last_seq() + 1;
  ProcessResult info = Ctl({"info"});
  EXPECT_THAT(info.out, HasSubstr(absl::StrCat(epoch, ":", next)));
  auto client = Connect();
  ReloadOk(*client, "counter");

  const std::string cursor = absl::StrCat(epoch, ":", next);
  ProcessResult from = Ctl({"watch", "--from", cursor, "--count", "2"});
  ASSERT_EQ(from.exit_code, 0) << Shown(from);
  EXPECT_THAT(Lines(from.out)[0], HasSubstr(absl::StrCat(epoch, ":", next, "  PREPARING")));
  EXPECT_THAT(Lines(from.out)[1], HasSubstr(absl::StrCat(epoch, ":", next + 1, "  RELOADED")));
  EXPECT_THAT(from.err, Not(HasSubstr("warning")));

  ProcessResult bare = Ctl({"watch", "--from", absl::StrCat(next), "--count", "1"});
  EXPECT_EQ(bare.exit_code, 0) << Shown(bare);
  EXPECT_THAT(bare.err, HasSubstr(absl::StrCat("warning: --from ", next)));
  EXPECT_THAT(bare.err, HasSubstr(absl::StrCat("epoch the host is in now (", epoch, ")")));

  ProcessResult other =
      Ctl({"watch", "--from", absl::StrCat(epoch + 1, ":", next), "--count", "1"});
  EXPECT_EQ(other.exit_code, 1) << Shown(other);
  EXPECT_THAT(other.err, HasSubstr("OUT_OF_RANGE"));
}

// reload --expected-sha256: the build CI means, or nothing happens (exit 1 with the reason).
TEST_F(PolyplugctlCiTest, AReloadExpectingAnotherBuildFailsAndReloadsNothing) {
  const fs::path counter = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  fs::path library;
  for (const auto& entry : fs::directory_iterator(counter)) {
    if (entry.path().extension() == ".so") library = entry.path();
  }
  const std::string v1_sha = Sha256OfFile(library);
  OverwriteArtifact(TestBundleDir("counter_v2"), counter);
  const std::string v2_sha = Sha256OfFile(library);
  const ProcessResult refused = Ctl({"reload", "counter", "--expected-sha256", v1_sha});
  EXPECT_EQ(refused.exit_code, 1) << Shown(refused);
  EXPECT_THAT(refused.err, HasSubstr("EXPECTED_SHA256_MISMATCH"));
  EXPECT_THAT(refused.err, HasSubstr(v2_sha));
  const ProcessResult reloaded = Ctl({"reload", "counter", "--expected-sha256", v2_sha});
  EXPECT_EQ(reloaded.exit_code, 0) << Shown(reloaded);
  EXPECT_THAT(reloaded.out, HasSubstr("RELOADED counter"));
}

}  // namespace
}  // namespace polyplug::test
