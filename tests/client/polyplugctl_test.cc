// polyplugctl against a real polyplug-host: every command's exit code (0 success, 1 the
// operation failed, 2 usage, 3 unreachable or unauthenticated, 4 timeout) and its --json
// output, whose envelope's object must parse as the host.proto message its type names.
// polyplugctl_ci_test.cc has request ids, operation, wait, version, completion and the
// timeout exit code.
#include <signal.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/client_fixture.h"
#include "client/polyplugctl_json.h"
#include "gmock/gmock.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "host/test_pki.h"
#include "polyplug/core/ids.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::polyplug::host::v1;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;

// The non-empty lines of `text`.
std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

// The object of the --json line `json` as a `Message`, the envelope's type; a test failure
// (naming the text) when it does not parse, e.g. because a field name is not host.proto's.
template <typename Message>
Message Parse(const std::string& json) {
  return ParseCtlJson<Message>(json);
}

// A string field of a google.protobuf.Struct, "" when absent.
std::string Field(const google::protobuf::Struct& s, const std::string& name) {
  auto it = s.fields().find(name);
  return it == s.fields().end() ? "" : it->second.string_value();
}

class PolyplugctlTest : public ClientTest {
 protected:
  // Runs polyplugctl --host <address()> `args`.
  ProcessResult Ctl(std::vector<std::string> args,
                    std::vector<std::pair<std::string, std::string>> env = {}) {
    args.insert(args.begin(), {POLYPLUGCTL_BINARY, "--host", address()});
    return RunProcess(args, env);
  }
  std::vector<std::string> CtlArgs(std::vector<std::string> args) {
    args.insert(args.begin(), {POLYPLUGCTL_BINARY, "--host", address()});
    return args;
  }
};

// Prints the process's output on failure.
std::string Shown(const ProcessResult& r) {
  return absl::StrCat("exit ", r.exit_code, "\n--- stdout\n", r.out, "--- stderr\n", r.err);
}

TEST_F(PolyplugctlTest, InfoListFindAndHealthWithJson) {
  Copy("chain_a");
  Copy("chain_b");
  ASSERT_NO_FATAL_FAILURE(StartHost());

  ProcessResult info = Ctl({"info", "--json"});
  ASSERT_EQ(info.exit_code, 0) << Shown(info);
  ASSERT_THAT(Lines(info.out), SizeIs(1));
  EXPECT_EQ(Parse<v1::HostInfo>(info.out).host_epoch(), host().epoch());
  ProcessResult human = Ctl({"info"});
  ASSERT_EQ(human.exit_code, 0) << Shown(human);
  EXPECT_THAT(human.out, HasSubstr(absl::StrCat(host().epoch())));
  EXPECT_THAT(human.out, Not(HasSubstr("\033["))) << "no colour when stdout is not a terminal";

  ProcessResult bundles = Ctl({"list", "bundles", "--json"});
  ASSERT_EQ(bundles.exit_code, 0) << Shown(bundles);
  std::vector<std::string> lines = Lines(bundles.out);
  ASSERT_THAT(lines, SizeIs(3));
  EXPECT_EQ(Parse<v1::Bundle>(lines[0]).name(), "chain_a");
  EXPECT_EQ(Parse<v1::Bundle>(lines[1]).name(), "chain_b");
  // Last, the cursor the listing is current at: `watch --from EPOCH:SEQ` follows on.
  const v1::Cursor cursor = Parse<v1::Cursor>(lines[2]);
  EXPECT_EQ(cursor.host_epoch(), host().epoch());
  ProcessResult table = Ctl({"list", "bundles"});
  ASSERT_EQ(table.exit_code, 0) << Shown(table);
  ASSERT_THAT(Lines(table.out), SizeIs(3));
  EXPECT_THAT(Lines(table.out)[0], HasSubstr("NAME"));
  EXPECT_THAT(table.err,
              HasSubstr(absl::StrCat("watch --from ", cursor.host_epoch(), ":", cursor.seq())));

  ProcessResult contracts = Ctl({"list", "contracts", "--bundle", "chain_b", "--json"});
  ASSERT_EQ(contracts.exit_code, 0) << Shown(contracts);
  ASSERT_THAT(Lines(contracts.out), SizeIs(2));
  EXPECT_EQ(Parse<v1::ContractHandle>(Lines(contracts.out)[0]).contract_name(), "chain.b");

  ProcessResult find = Ctl({"find", "chain.a@1", "--json"});
  ASSERT_EQ(find.exit_code, 0) << Shown(find);
  EXPECT_EQ(Parse<v1::ContractHandle>(find.out).provider_bundle_name(), "chain_a");
  ProcessResult find_human = Ctl({"find", "chain.a@1"});
  EXPECT_THAT(find_human.out, HasSubstr("chain.a@1 -> chain_a 1.0.0"));

  ProcessResult missing = Ctl({"find", "nothing.here@1", "--json"});
  EXPECT_EQ(missing.exit_code, 1) << Shown(missing);
  const auto fields = ParseCtlObject(missing.out, "error");
  EXPECT_EQ(Field(fields, "code"), "NOT_FOUND");
  EXPECT_EQ(Field(fields, "reason"), "CONTRACT_NOT_FOUND");
  EXPECT_THAT(Field(fields, "message"), HasSubstr("nothing.here@1"));
  EXPECT_THAT(missing.err, HasSubstr("CONTRACT_NOT_FOUND"));
  ProcessResult too_new = Ctl({"find", "chain.a@1", "--min-version", "2"});
  EXPECT_EQ(too_new.exit_code, 1) << Shown(too_new);

  ProcessResult health = Ctl({"health", "--json"});
  ASSERT_EQ(health.exit_code, 0) << Shown(health);
  EXPECT_EQ(Field(ParseCtlObject(health.out, "polyplugctl.Health"), "status"), "SERVING");
  EXPECT_EQ(Ctl({"health", "--bundle", "chain_a"}).exit_code, 0);
  ProcessResult unknown = Ctl({"health", "--bundle", "nope", "--json"});
  EXPECT_EQ(unknown.exit_code, 1) << Shown(unknown);
  EXPECT_EQ(Field(ParseCtlObject(unknown.out, "polyplugctl.Health"), "status"), "SERVICE_UNKNOWN");
}

TEST_F(PolyplugctlTest, ReloadExitCodeTellsSuccessFromFailure) {
  const fs::path counter = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  OverwriteArtifact(TestBundleDir("counter_v2"), counter);

  ProcessResult ok = Ctl({"reload", "counter", "--json"});
  ASSERT_EQ(ok.exit_code, 0) << Shown(ok);
  const auto response = Parse<v1::ReloadResponse>(ok.out);
  EXPECT_EQ(response.outcome(), v1::RELOAD_OUTCOME_RELOADED);
  EXPECT_THAT(response.events(), SizeIs(2));

  ProcessResult human = Ctl({"reload", "counter"});
  ASSERT_EQ(human.exit_code, 0) << Shown(human);
  EXPECT_THAT(Lines(human.out)[0], HasSubstr("RELOADED counter 2.0.0"));

  ProcessResult by_path = Ctl({"reload", counter.string()});
  EXPECT_EQ(by_path.exit_code, 0) << Shown(by_path);

  WriteFile(counter / "libcounter.so", "not an ELF file");
  ProcessResult failed = Ctl({"reload", "counter", "--json"});
  EXPECT_EQ(failed.exit_code, 1) << Shown(failed);
  const auto failure = Parse<v1::ReloadResponse>(failed.out);
  EXPECT_EQ(failure.outcome(), v1::RELOAD_OUTCOME_FAILED);
  EXPECT_EQ(failure.reason(), v1::FAILURE_REASON_ARTIFACT_NOT_LOADABLE);
  ProcessResult failed_human = Ctl({"reload", "counter"});
  EXPECT_EQ(failed_human.exit_code, 1) << Shown(failed_human);
  EXPECT_THAT(failed_human.out, HasSubstr("FAILED counter: [ARTIFACT_NOT_LOADABLE]"));
  EXPECT_THAT(failed_human.out, HasSubstr("2.0.0 is still live"));

  ProcessResult unknown = Ctl({"reload", "nope"});
  EXPECT_EQ(unknown.exit_code, 1) << Shown(unknown);
  EXPECT_THAT(unknown.err, HasSubstr("BUNDLE_NOT_FOUND"));
}

// A reload whose dependent fails to follow it exits 1, says which, and --json carries the
// outcome DEPENDENTS_FAILED (what a script checking only `outcome` sees).
TEST_F(PolyplugctlTest, AReloadWhoseDependentFailsExits1) {
  Copy("chain_a");
  const fs::path chain_b = Copy("chain_b");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  ASSERT_TRUE(
      ReplaceInFile(chain_b / "manifest.toml", DecimalId(core::BundleId("chain_b")), "12345"));
  ProcessResult json = Ctl({"reload", "chain_a", "--json"});
  EXPECT_EQ(json.exit_code, 1) << Shown(json);
  const auto response = Parse<v1::ReloadResponse>(json.out);
  EXPECT_EQ(response.outcome(), v1::RELOAD_OUTCOME_DEPENDENTS_FAILED);
  EXPECT_THAT(response.failed_dependents(), ElementsAre("chain_b"));
  ProcessResult human = Ctl({"reload", "chain_a"});
  EXPECT_EQ(human.exit_code, 1) << Shown(human);
  EXPECT_THAT(human.out, HasSubstr("RELOADED chain_a"));
  EXPECT_THAT(human.err + human.out, HasSubstr("dependents failed to follow the reload: chain_b"));
}

TEST_F(PolyplugctlTest, LoadAndUnload) {
  Copy("chain_a");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const fs::path chain_b = Copy("chain_b");

  ProcessResult load = Ctl({"load", chain_b.string(), "--json"});
  ASSERT_EQ(load.exit_code, 0) << Shown(load);
  EXPECT_EQ(Parse<v1::LoadBundleResponse>(load.out).bundle().name(), "chain_b");
  ProcessResult again = Ctl({"load", chain_b.string()});
  EXPECT_EQ(again.exit_code, 1) << Shown(again);
  EXPECT_THAT(again.err, HasSubstr("BUNDLE_ALREADY_LOADED"));
  ProcessResult outside = Ctl({"load", dir_.path().string()});
  EXPECT_EQ(outside.exit_code, 1) << Shown(outside);
  EXPECT_THAT(outside.err, HasSubstr("PERMISSION_DENIED"));

  ProcessResult refused = Ctl({"unload", "chain_a", "--json"});
  EXPECT_EQ(refused.exit_code, 1) << Shown(refused);
  EXPECT_EQ(Field(ParseCtlObject(refused.out, "error"), "reason"), "DEPENDENCY_IN_USE");
  ProcessResult cascade = Ctl({"unload", "chain_a", "--cascade", "--json"});
  ASSERT_EQ(cascade.exit_code, 0) << Shown(cascade);
  EXPECT_THAT(Parse<v1::UnloadBundleResponse>(cascade.out).unloaded(),
              ElementsAre("chain_b", "chain_a"));
}

TEST_F(PolyplugctlTest, WatchPrintsEventsAndEndsOnCountOrTerminal) {
  const fs::path counter = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  {
    ChildProcess watch(CtlArgs({"watch", "--count", "2", "--json"}));
    auto first = watch.ReadLine();  // the initial resync: the watch is subscribed
    ASSERT_TRUE(first.has_value());
    auto resync = ParseCtlObject(*first, "polyplugctl.Resynced");
    EXPECT_EQ(Field(resync, "cause"), "INITIAL");
    ASSERT_TRUE(client->Reload("counter").ok());
    ProcessResult r = watch.Wait();
    EXPECT_EQ(r.exit_code, 0) << Shown(r);
    std::vector<std::string> lines = Lines(r.out);
    ASSERT_THAT(lines, SizeIs(3));
    EXPECT_EQ(Parse<v1::ReloadPhaseEvent>(lines[1]).phase(), v1::PHASE_PREPARING);
    EXPECT_EQ(Parse<v1::ReloadPhaseEvent>(lines[2]).phase(), v1::PHASE_RELOADED);
  }
  {
    ChildProcess watch(CtlArgs({"watch", "--until-terminal", "--json"}));
    ASSERT_TRUE(watch.ReadLine().has_value());
    WriteFile(counter / "libcounter.so", "not an ELF file");
    ASSERT_TRUE(client->Reload("counter").ok());
    ProcessResult r = watch.Wait();
    EXPECT_EQ(r.exit_code, 1) << "the reload FAILED\n" << Shown(r);
    std::vector<std::string> lines = Lines(r.out);
    ASSERT_THAT(lines, SizeIs(3));
    EXPECT_EQ(Parse<v1::ReloadPhaseEvent>(lines[2]).reason(),
              v1::FAILURE_REASON_ARTIFACT_NOT_LOADABLE);
  }
  {
    OverwriteArtifact(TestBundleDir("counter_v2"), counter);
    ChildProcess watch(CtlArgs({"watch", "--until-terminal", "--json"}));
    ASSERT_TRUE(watch.ReadLine().has_value());
    ASSERT_TRUE(client->Reload("counter").ok());
    ProcessResult r = watch.Wait();
    EXPECT_EQ(r.exit_code, 0) << "the reload RELOADED\n" << Shown(r);
    EXPECT_THAT(Lines(r.out), SizeIs(3));
  }
}

TEST_F(PolyplugctlTest, WatchFromASeqReplaysAndAnOldOneFails) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost({"--journal-size", "4"}));
  const uint64_t start = host().info_at_start().last_seq();
  auto client = Connect();
  ASSERT_TRUE(client->Reload("counter").ok());
  ProcessResult replay =
      Ctl({"watch", "--from", absl::StrCat(start + 1), "--count", "2", "--json"});
  ASSERT_EQ(replay.exit_code, 0) << Shown(replay);
  std::vector<std::string> lines = Lines(replay.out);
  ASSERT_THAT(lines, SizeIs(2));
  EXPECT_EQ(Parse<v1::ReloadPhaseEvent>(lines[0]).seq(), start + 1);
  ProcessResult with_epoch =
      Ctl({"watch", "--from", absl::StrCat(host().epoch(), ":", start + 2), "--count", "1"});
  EXPECT_EQ(with_epoch.exit_code, 0) << Shown(with_epoch);
  EXPECT_THAT(with_epoch.out, HasSubstr("RELOADED"));
  // The journal keeps 4 events; after two more reloads seq start+1 is gone.
  ASSERT_TRUE(client->Reload("counter").ok());
  ASSERT_TRUE(client->Reload("counter").ok());
  ProcessResult gone = Ctl({"watch", "--from", absl::StrCat(start + 1), "--count", "1"});
  EXPECT_EQ(gone.exit_code, 1) << Shown(gone);
  EXPECT_THAT(gone.err, HasSubstr("OUT_OF_RANGE"));
}

TEST_F(PolyplugctlTest, CallRunsAMethodInsideTheHost) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  ProcessResult version = Ctl({"call", "test.counter@1", "version"});
  ASSERT_EQ(version.exit_code, 0) << Shown(version);
  EXPECT_EQ(version.out, "v1\n");
  ProcessResult echo = Ctl({"call", "test.counter@1", "echo", "--data", "hello there"});
  EXPECT_EQ(echo.out, "hello there\n") << Shown(echo);
  WriteFile(dir_.path() / "request.bin", "from a file");
  ProcessResult from_file = Ctl(
      {"call", "test.counter@1", "echo", "--data", "@" + (dir_.path() / "request.bin").string()});
  EXPECT_EQ(from_file.out, "from a file\n") << Shown(from_file);
  ProcessResult json = Ctl({"call", "test.counter@1", "echo", "--data", "abc", "--json"});
  ASSERT_EQ(json.exit_code, 0) << Shown(json);
  const auto response = Parse<v1::InvokeResponse>(json.out);
  EXPECT_EQ(response.response(), "abc");
  EXPECT_EQ(response.handle().provider_bundle_name(), "counter");

  ProcessResult unknown = Ctl({"call", "test.counter@1", "nope"});
  EXPECT_EQ(unknown.exit_code, 1) << Shown(unknown);
  EXPECT_THAT(unknown.err, HasSubstr("METHOD_NOT_FOUND"));
  ProcessResult failing = Ctl({"call", "test.counter@1", "fail"});
  EXPECT_EQ(failing.exit_code, 1) << Shown(failing);
  EXPECT_THAT(failing.err, HasSubstr("failed on purpose"));
  EXPECT_EQ(Ctl({"call", "test.counter@1"}).exit_code, 2);
  EXPECT_EQ(Ctl({"call", "test.counter@1", "echo", "--data", "@/nonexistent/file"}).exit_code, 2);
}

TEST_F(PolyplugctlTest, WatchEndsWith130OnSigint) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  ChildProcess watch(CtlArgs({"watch", "--json"}));
  ASSERT_TRUE(watch.ReadLine().has_value());  // subscribed
  watch.Signal(SIGINT);
  ProcessResult r = watch.Wait();
  EXPECT_EQ(r.exit_code, 130) << Shown(r);
}

TEST_F(PolyplugctlTest, UnreachableHostIsExitCode3) {
  for (std::vector<std::string> args :
       std::vector<std::vector<std::string>>{{"info"},
                                             {"reload", "x"},
                                             {"list", "bundles"},
                                             {"watch"},
                                             {"health"},
                                             {"call", "a@1", "m"}}) {
    ProcessResult r = Ctl(args);
    EXPECT_EQ(r.exit_code, 3) << args[0] << "\n" << Shown(r);
    EXPECT_THAT(r.err, HasSubstr(address())) << args[0];
  }
}

TEST_F(PolyplugctlTest, TokenFileIsSentAndItsAbsenceIsExitCode3) {
  WriteFile(dir_.path() / "token", "s3cret\n");
  WriteFile(dir_.path() / "wrong", "guess\n");
  WriteFile(dir_.path() / "empty", "");
  ASSERT_NO_FATAL_FAILURE(
      StartHost({"--auth-token-file", (dir_.path() / "token").string()}, "s3cret"));
  EXPECT_EQ(Ctl({"info"}).exit_code, 3);
  EXPECT_EQ(Ctl({"info", "--token-file", (dir_.path() / "wrong").string()}).exit_code, 3);
  ProcessResult ok = Ctl({"info", "--token-file", (dir_.path() / "token").string()});
  EXPECT_EQ(ok.exit_code, 0) << Shown(ok);
  EXPECT_EQ(Ctl({"info", "--token-file", (dir_.path() / "empty").string()}).exit_code, 2);
  EXPECT_EQ(Ctl({"info", "--token-file", (dir_.path() / "missing").string()}).exit_code, 2);
}

TEST_F(PolyplugctlTest, HostComesFromTheFlagTheEnvironmentOrTheDefaultSocket) {
  Copy("counter_v1");
  // No --listen: the host serves on $XDG_RUNTIME_DIR/polyplug-host.sock.
  host_ = std::make_unique<HostProcess>(std::vector<std::string>{"--bundles", root().string()});
  host_->UseDefaultListenAddress();
  ASSERT_TRUE(host_->Start().ok());
  const std::string xdg = host_->dir().string();
  ProcessResult by_default =
      RunProcess({POLYPLUGCTL_BINARY, "info"}, {{"XDG_RUNTIME_DIR", xdg}, {"POLYPLUG_HOST", ""}});
  EXPECT_EQ(by_default.exit_code, 0) << Shown(by_default);
  ProcessResult by_env =
      RunProcess({POLYPLUGCTL_BINARY, "info"},
                 {{"POLYPLUG_HOST", host_->address()}, {"XDG_RUNTIME_DIR", "/nonexistent"}});
  EXPECT_EQ(by_env.exit_code, 0) << Shown(by_env);
  ProcessResult flag_wins =
      RunProcess({POLYPLUGCTL_BINARY, "--host", "unix:/nonexistent/x.sock", "info"},
                 {{"POLYPLUG_HOST", host_->address()}});
  EXPECT_EQ(flag_wins.exit_code, 3) << Shown(flag_wins);
}

TEST_F(PolyplugctlTest, UsageErrorsAreExitCode2AndHelpIsExitCode0) {
  const std::vector<std::vector<std::string>> usage_errors = {
      {},
      {"bogus"},
      {"reload"},
      {"reload", "a", "b"},
      {"info", "--bogus"},
      {"info", "--cascade"},
      {"list", "things"},
      {"watch", "--count", "0"},
      {"watch", "--from", "x"},
      {"info", "--timeout", "soon"},
      {"info", "--color", "sometimes"},
      {"info", "--host"},
      {"reload", "x", "--request-id", "has space"},
      {"reload", "x", "--request-id", std::string(129, 'x')},
      {"reload", "x", "--recover-timeout", "soon"},
      {"info", "--request-id", "x"},
      {"operation"},
      {"wait", "--version", "1.0.0"},
      {"wait", "--bundle", "x", "--version", "1.0"},
      {"wait", "--bundle", "x", "--sha256", "abc"},
      {"wait", "--bundle", "x", "--version"},
      {"completion"},
      {"completion", "zsh"},
  };
  for (const auto& args : usage_errors) {
    std::vector<std::string> argv = {POLYPLUGCTL_BINARY};
    argv.insert(argv.end(), args.begin(), args.end());
    ProcessResult r = RunProcess(argv, {{"POLYPLUG_HOST", "unix:/nonexistent/x.sock"}});
    EXPECT_EQ(r.exit_code, 2) << absl::StrJoin(args, " ") << "\n" << Shown(r);
    EXPECT_THAT(r.err, HasSubstr("usage")) << absl::StrJoin(args, " ");
  }
  for (const char* command : {"reload", "load", "unload", "find", "list", "watch", "info", "health",
                              "call", "id", "push", "operation", "wait", "version", "completion"}) {
    ProcessResult r = RunProcess({POLYPLUGCTL_BINARY, command, "--help"});
    EXPECT_EQ(r.exit_code, 0) << command;
    EXPECT_THAT(r.out, HasSubstr(absl::StrCat("usage: polyplugctl ", command))) << command;
    ProcessResult help = RunProcess({POLYPLUGCTL_BINARY, "help", command});
    EXPECT_EQ(help.out, r.out) << command;
  }
  ProcessResult top = RunProcess({POLYPLUGCTL_BINARY, "--help"});
  EXPECT_EQ(top.exit_code, 0);
  EXPECT_THAT(top.out, HasSubstr("exit codes"));
  EXPECT_THAT(top.out, HasSubstr("4 timeout"));
  EXPECT_THAT(top.out, HasSubstr("\n  id NAME|CONTRACT@MAJOR..."));
}

// `id` connects to nothing: a --host that every other command refuses as malformed (exit 2)
// and an unreachable $POLYPLUG_HOST do not matter to it.
const std::vector<std::string> kNoHost = {POLYPLUGCTL_BINARY, "--host", "unix:"};
const std::vector<std::pair<std::string, std::string>> kNoHostEnv = {
    {"POLYPLUG_HOST", "unix:/nonexistent/x.sock"}};

ProcessResult Id(std::vector<std::string> args) {
  args.insert(args.begin(), kNoHost.begin(), kNoHost.end());
  return RunProcess(args, kNoHostEnv);
}

// Whitespace-separated fields of `line`.
std::vector<std::string> Words(const std::string& line) {
  return absl::StrSplit(line, ' ', absl::SkipEmpty());
}

TEST(PolyplugctlIdTest, PrintsBundleAndContractIdsInDecimalAndHexWithoutAHost) {
  std::vector<std::string> info = kNoHost;
  info.push_back("info");
  ASSERT_EQ(RunProcess(info, kNoHostEnv).exit_code, 2) << "the --host is unusable";

  ProcessResult r = Id({"id", "greeter", "example.greeter@1", "my-bundle", "test.counter@12", "x@0",
                        "x@007", "x@4294967295"});
  ASSERT_EQ(r.exit_code, 0) << Shown(r);
  EXPECT_THAT(r.out, Not(HasSubstr("\033[")));
  const std::vector<std::string> lines = Lines(r.out);
  ASSERT_THAT(lines, SizeIs(7)) << Shown(r);
  auto bundle = [](absl::string_view name) {
    return std::vector<std::string>{std::string(name), "bundle", absl::StrCat(core::BundleId(name)),
                                    core::FormatBundleId(core::BundleId(name))};
  };
  auto contract = [](absl::string_view name, uint32_t major) {
    const uint64_t id = core::GuestContractId(name, major);
    return std::vector<std::string>{absl::StrCat(name, "@", major), "contract", absl::StrCat(id),
                                    core::FormatContractId(id)};
  };
  EXPECT_EQ(Words(lines[0]), bundle("greeter"));
  EXPECT_EQ(Words(lines[1]), contract("example.greeter", 1));
  EXPECT_EQ(Words(lines[2]), bundle("my-bundle"));
  EXPECT_EQ(Words(lines[3]), contract("test.counter", 12));
  EXPECT_EQ(Words(lines[4]), contract("x", 0));
  EXPECT_EQ(Words(lines[5]), contract("x", 7)) << "MAJOR is a number: 007 is 7";
  EXPECT_EQ(Words(lines[6]), contract("x", 4294967295u));
  // The values docs/WRITING_BUNDLES.md shows in manifests, and a reference golden value.
  EXPECT_EQ(Words(lines[0])[2], "8256090817518882973");
  EXPECT_EQ(Words(lines[1])[2], "13594414881126601513");
  EXPECT_EQ(Words(lines[2])[3], "0xfe6226876e3a35b2");
  // The columns line up.
  EXPECT_EQ(lines[0].find("bundle"), lines[1].find("contract"));
}

TEST(PolyplugctlIdTest, JsonIsOneObjectPerOperand) {
  ProcessResult r = Id({"id", "--json", "greeter", "example.greeter@1"});
  ASSERT_EQ(r.exit_code, 0) << Shown(r);
  const std::vector<std::string> lines = Lines(r.out);
  ASSERT_THAT(lines, SizeIs(2)) << Shown(r);

  const auto bundle = ParseCtlObject(lines[0], "polyplugctl.Id");
  EXPECT_EQ(Field(bundle, "kind"), "BUNDLE");
  EXPECT_EQ(Field(bundle, "name"), "greeter");
  EXPECT_EQ(Field(bundle, "id"), absl::StrCat(core::BundleId("greeter")));
  EXPECT_EQ(Field(bundle, "id_hex"), core::FormatBundleId(core::BundleId("greeter")));
  EXPECT_FALSE(bundle.fields().contains("major"));

  const auto contract = ParseCtlObject(lines[1], "polyplugctl.Id");
  const uint64_t id = core::GuestContractId("example.greeter", 1);
  EXPECT_EQ(Field(contract, "kind"), "GUEST_CONTRACT");
  EXPECT_EQ(Field(contract, "name"), "example.greeter@1");
  EXPECT_EQ(Field(contract, "contract_name"), "example.greeter");
  ASSERT_TRUE(contract.fields().contains("major"));
  EXPECT_EQ(contract.fields().at("major").number_value(), 1);
  EXPECT_EQ(Field(contract, "id"), absl::StrCat(id)) << "a string: a JSON number loses digits";
  EXPECT_EQ(Field(contract, "id_hex"), core::FormatContractId(id));
}

TEST(PolyplugctlIdTest, BadOperandsAreUsageErrors) {
  const std::vector<std::vector<std::string>> bad = {
      {"id"},
      {"id", ""},
      {"id", "x@notanumber"},
      {"id", "x@"},
      {"id", "@1"},
      {"id", "x@1.0"},
      {"id", "x@+1"},
      {"id", "x@4294967296"},
      {"id", "greeter", "x@notanumber"},
  };
  for (const auto& args : bad) {
    const std::string shown = absl::StrJoin(args, " ");
    ProcessResult r = Id(args);
    EXPECT_EQ(r.exit_code, 2) << shown << "\n" << Shown(r);
    EXPECT_EQ(r.out, "") << shown << ": nothing is printed when an operand is bad";
    EXPECT_THAT(r.err, HasSubstr("usage: polyplugctl id")) << shown;
    if (args.size() > 1 && !args.back().empty()) {
      EXPECT_THAT(r.err, HasSubstr(absl::StrCat("'", args.back(), "'"))) << shown;
    }
  }
  EXPECT_THAT(Id({"id", ""}).err, HasSubstr("empty"));
  EXPECT_THAT(Id({"id", "x@notanumber"}).err, HasSubstr("decimal number"));
}

TEST_F(PolyplugctlTest, TlsFlagsReachAMutualTlsHost) {
  const fs::path pki_dir = dir_.path() / "pki";
  fs::create_directories(pki_dir);
  absl::StatusOr<Pki> pki = MakePki(pki_dir);
  ASSERT_TRUE(pki.ok()) << pki.status();
  fs::create_directories(root());
  HostProcess tls_host({"--bundles", root().string(), "--tls-cert", pki->server_cert.string(),
                        "--tls-key", pki->server_key.string(), "--tls-client-ca",
                        pki->ca_cert.string()});
  tls_host.AddListenAddress("127.0.0.1:0");
  ASSERT_TRUE(tls_host.Start().ok());
  auto target = tls_host.ServingAddress("127.0.0.1:");
  ASSERT_TRUE(target.ok()) << target.status();
  const std::vector<std::string> base = {
      POLYPLUGCTL_BINARY, "--host", *target, "info", "--tls-ca", pki->ca_cert.string()};
  std::vector<std::string> mtls = base;
  mtls.insert(mtls.end(),
              {"--tls-cert", pki->client_cert.string(), "--tls-key", pki->client_key.string()});
  ProcessResult ok = RunProcess(mtls);
  EXPECT_EQ(ok.exit_code, 0) << Shown(ok);
  ProcessResult no_cert = RunProcess(base);
  EXPECT_EQ(no_cert.exit_code, 3) << Shown(no_cert);
  std::vector<std::string> half = base;
  half.insert(half.end(), {"--tls-cert", pki->client_cert.string()});
  ProcessResult usage = RunProcess(half);
  EXPECT_EQ(usage.exit_code, 2) << "a certificate without its key\n" << Shown(usage);
}

TEST_F(PolyplugctlTest, ColourOnlyWhenAskedOrOnATerminal) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  ProcessResult always = Ctl({"reload", "counter", "--color", "always"});
  ASSERT_EQ(always.exit_code, 0) << Shown(always);
  EXPECT_THAT(always.out, HasSubstr("\033[32mRELOADED"));
  ProcessResult never = Ctl({"reload", "counter", "--color", "never"});
  EXPECT_THAT(never.out, Not(HasSubstr("\033[")));
  ProcessResult json = Ctl({"reload", "counter", "--color", "always", "--json"});
  EXPECT_THAT(json.out, Not(HasSubstr("\033["))) << "JSON is never coloured";
}

}  // namespace
}  // namespace polyplug::test
