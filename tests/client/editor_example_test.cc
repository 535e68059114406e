// examples/editor (polyplug-editor) against a real polyplug-host: it follows reloads of the
// bundle behind its contract and calls it again after each, keeps answering with the last
// good version after a failed reload, follows a host restart, answers its commands, and
// exits with 2 on bad flags and 3 when the host cannot be reached. Every wait is on a line
// of the editor's output (the formats are documented at the top of editor.cc).
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "client/client_fixture.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::Not;
using ::testing::StartsWith;

constexpr char kV1Answer[] = "greet(\"editor\") -> Hello, editor! (greeter v1)";
constexpr char kV2Answer[] = "greet(\"editor\") -> Hi there, editor! (greeter v2)";

bool IsAnswer(const std::string& line) { return absl::StartsWith(line, "greet(\""); }

// A running polyplug-editor with its stdin from the test, and everything it printed so far.
class Editor {
 public:
  explicit Editor(std::vector<std::string> args)
      : child_(WithBinary(std::move(args)), {}, ChildStdin::kFromTest) {}

  // Reads lines until one satisfies `matches` and returns it; nullopt (and a test failure
  // showing the transcript) when the output ends or kCallDeadline passes first.
  template <typename Predicate>
  std::optional<std::string> ReadUntil(absl::string_view what, Predicate matches) {
    while (std::optional<std::string> line = child_.ReadLine()) {
      transcript_.push_back(*line);
      if (matches(*line)) return line;
    }
    ADD_FAILURE() << "the editor's output ended before " << what << "; it printed:\n  "
                  << absl::StrJoin(transcript_, "\n  ");
    return std::nullopt;
  }
  std::optional<std::string> ReadUntilLine(const std::string& wanted) {
    return ReadUntil(absl::StrCat("\"", wanted, "\""),
                     [&](const std::string& line) { return line == wanted; });
  }
  std::optional<std::string> ReadUntilMatch(const std::string& pattern) {
    // gtest's regex, not std::regex: GCC 12 warns inside <regex> under ASan (-Werror).
    return ReadUntil(absl::StrCat("a line matching ", pattern), [&](const std::string& line) {
      return ::testing::Matches(MatchesRegex(pattern))(line);
    });
  }
  // The next answer line (after a call, a reload or a failed reload).
  std::optional<std::string> ReadAnswer() { return ReadUntil("an answer line", IsAnswer); }

  bool Send(absl::string_view command) { return child_.WriteLine(command); }
  void CloseInput() { child_.CloseStdin(); }

  // Closes stdin, waits for the exit; the transcript gets the rest of the output.
  ProcessResult Wait() {
    CloseInput();
    while (std::optional<std::string> line = child_.ReadLine()) transcript_.push_back(*line);
    ProcessResult result = child_.Wait();
    result.out = absl::StrJoin(transcript_, "\n");
    return result;
  }

  const std::vector<std::string>& transcript() const { return transcript_; }

 private:
  static std::vector<std::string> WithBinary(std::vector<std::string> args) {
    args.insert(args.begin(), POLYPLUG_EDITOR_BINARY);
    return args;
  }

  ChildProcess child_;
  std::vector<std::string> transcript_;
};

std::string Shown(const ProcessResult& r) {
  return absl::StrCat("exit ", r.exit_code, "\n--- stdout\n", r.out, "\n--- stderr\n", r.err);
}

class EditorExampleTest : public ClientTest {
 protected:
  Editor StartEditor(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--host", address()};
    args.insert(args.end(), extra.begin(), extra.end());
    return Editor(std::move(args));
  }
};

TEST_F(EditorExampleTest, CallsAgainAfterEveryReloadAndKeepsV2AfterAFailedOne) {
  const fs::path greeter = CopyExample("greeter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  Editor editor = StartEditor();

  // Start-up: connection, bundles, snapshot, handle, then the first answer, in this order.
  ASSERT_TRUE(editor.ReadUntilLine(kV1Answer));
  const std::vector<std::string> start = editor.transcript();
  ASSERT_GE(start.size(), 6u) << absl::StrJoin(start, "\n");
  EXPECT_THAT(start[0], StartsWith(absl::StrCat("connected to polyplug-host ")));
  EXPECT_THAT(start[0], HasSubstr(absl::StrCat(" at ", address(), " (epoch ")));
  EXPECT_EQ(start[1], "bundle greeter 1.0.0 provides example.greeter@1");
  EXPECT_EQ(start[2], "listed 1 bundles");
  EXPECT_THAT(start,
              Contains(MatchesRegex(R"(\[resync\] INITIAL at seq [0-9]+: greeter 1\.0\.0)")));
  EXPECT_THAT(
      start,
      Contains(MatchesRegex(
          R"(handle example\.greeter@1: greeter 1\.0\.0 \(slot [0-9]+, generation [0-9]+\))")));

  // A rebuild: v2's files over the loaded v1, and a reload from the editor's prompt. The
  // phase line comes first, then the call it triggers answers with v2.
  OverwriteArtifact(fs::path(POLYPLUG_EXAMPLE_BUNDLES_DIR) / "greeter_v2", greeter);
  ASSERT_TRUE(editor.Send("reload greeter"));
  ASSERT_TRUE(editor.ReadUntilMatch(R"(\[phase\] seq [0-9]+ RELOADED greeter 1\.0\.0 -> 2\.0\.0)"));
  std::optional<std::string> after_reload = editor.ReadAnswer();
  ASSERT_TRUE(after_reload);
  EXPECT_EQ(*after_reload, kV2Answer);

  // A broken build: FAILED, and the answer is still v2's.
  WriteFile(greeter / "libgreeter.so", "not an ELF file");
  ASSERT_TRUE(editor.Send("reload greeter"));
  std::optional<std::string> failed =
      editor.ReadUntilMatch(R"(\[phase\] seq [0-9]+ FAILED greeter .*)");
  ASSERT_TRUE(failed);
  EXPECT_THAT(*failed, MatchesRegex(R"(.* FAILED greeter [0-9.]+ \[[A-Z_]+\] .+)"));
  std::optional<std::string> after_failure = editor.ReadAnswer();
  ASSERT_TRUE(after_failure);
  EXPECT_EQ(*after_failure, kV2Answer);

  ASSERT_TRUE(editor.Send("quit"));
  ProcessResult r = editor.Wait();
  EXPECT_EQ(r.exit_code, 0) << Shown(r);
  // The outcomes of both reload commands, and nothing but whole lines (no prompt on a pipe).
  EXPECT_THAT(editor.transcript(),
              Contains(MatchesRegex(R"(reload greeter: RELOADED \(reload [0-9]+\))")));
  EXPECT_THAT(editor.transcript(),
              Contains(MatchesRegex(R"(reload greeter: FAILED \[[A-Z_]+\] .+)")));
  EXPECT_EQ(editor.transcript().back(), "bye") << Shown(r);
  for (const std::string& line : editor.transcript()) EXPECT_THAT(line, Not(StartsWith("> ")));
}

TEST_F(EditorExampleTest, AReloadFromAnotherClientIsFollowedToo) {
  const fs::path greeter = CopyExample("greeter_v1");
  CopyExample("shouter");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  Editor editor = StartEditor();
  ASSERT_TRUE(editor.ReadUntilLine(kV1Answer));

  OverwriteArtifact(fs::path(POLYPLUG_EXAMPLE_BUNDLES_DIR) / "greeter_v2", greeter);
  auto client = Connect();
  auto reloaded = client->Reload("greeter");
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  ASSERT_TRUE(editor.ReadUntilMatch(R"(\[phase\] seq [0-9]+ RELOADED greeter 1\.0\.0 -> 2\.0\.0)"));
  std::optional<std::string> answer = editor.ReadAnswer();
  ASSERT_TRUE(answer);
  EXPECT_EQ(*answer, kV2Answer);
  // shouter follows greeter by cascade; it does not provide the contract.
  EXPECT_THAT(
      editor.transcript(),
      Contains(MatchesRegex(R"(\[phase\] seq [0-9]+ PREPARING shouter 1\.0\.0 \(cascade\).*)")));
  editor.CloseInput();  // end of input is a quit
  ProcessResult r = editor.Wait();
  EXPECT_EQ(r.exit_code, 0) << Shown(r);
  EXPECT_EQ(editor.transcript().back(), "bye");
}

TEST_F(EditorExampleTest, AnswersItsCommands) {
  CopyExample("greeter_v1");
  CopyExample("shouter");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  Editor editor = StartEditor();
  ASSERT_TRUE(editor.ReadUntilLine(kV1Answer));

  ASSERT_TRUE(editor.Send("help"));
  ASSERT_TRUE(editor.ReadUntilLine("commands:"));
  ASSERT_TRUE(editor.ReadUntil("the help for reload", [](const std::string& line) {
    return absl::StartsWith(line, "  reload BUNDLE");
  }));

  ASSERT_TRUE(editor.Send("list"));
  ASSERT_TRUE(editor.ReadUntilLine("bundle greeter 1.0.0 provides example.greeter@1"));
  ASSERT_TRUE(editor.ReadUntilLine("bundle shouter 1.0.0 provides example.shouter@1"));
  ASSERT_TRUE(editor.ReadUntilLine("listed 2 bundles"));

  ASSERT_TRUE(editor.Send("handle"));
  ASSERT_TRUE(editor.ReadUntilMatch(
      R"(handle example\.greeter@1: greeter 1\.0\.0 \(slot [0-9]+, generation [0-9]+\))"));

  ASSERT_TRUE(editor.Send("call  level designer "));
  ASSERT_TRUE(
      editor.ReadUntilLine("greet(\"level designer\") -> Hello, level designer! (greeter v1)"));
  ASSERT_TRUE(editor.Send("call"));
  ASSERT_TRUE(editor.ReadUntilLine(kV1Answer));

  ASSERT_TRUE(editor.Send("frobnicate now"));
  ASSERT_TRUE(editor.ReadUntilLine("error: unknown command \"frobnicate\" (try help)"));
  ASSERT_TRUE(editor.Send("reload"));
  ASSERT_TRUE(editor.ReadUntilLine("error: usage: reload BUNDLE"));
  ASSERT_TRUE(editor.Send("reload nosuch"));
  std::optional<std::string> refused = editor.ReadUntil(
      "the refused reload",
      [](const std::string& line) { return absl::StartsWith(line, "reload nosuch: "); });
  ASSERT_TRUE(refused);
  EXPECT_THAT(*refused, HasSubstr("reload nosuch: error NOT_FOUND: "));
  EXPECT_THAT(*refused, HasSubstr("BUNDLE_NOT_FOUND"));

  ASSERT_TRUE(editor.Send(""));  // an empty line is no command
  ASSERT_TRUE(editor.Send("quit"));
  ProcessResult r = editor.Wait();
  EXPECT_EQ(r.exit_code, 0) << Shown(r);
  EXPECT_EQ(editor.transcript().back(), "bye");
}

TEST_F(EditorExampleTest, CallsAgainAfterAHostRestart) {
  CopyExample("greeter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  Editor editor = StartEditor();
  ASSERT_TRUE(editor.ReadUntilLine(kV1Answer));

  KillHost();
  ASSERT_TRUE(editor.ReadUntil("the connection lost", [](const std::string& line) {
    return absl::StartsWith(line, "[connection] lost: ");
  }));
  ASSERT_NO_FATAL_FAILURE(StartHost());
  ASSERT_TRUE(editor.ReadUntilMatch(R"(\[host\] restarted: epoch [0-9]+ -> [0-9]+)"));
  ASSERT_TRUE(editor.ReadUntilMatch(R"(\[resync\] HOST_RESTARTED at seq [0-9]+: greeter 1\.0\.0)"));
  std::optional<std::string> answer = editor.ReadAnswer();
  ASSERT_TRUE(answer);
  EXPECT_EQ(*answer, kV1Answer);

  ASSERT_TRUE(editor.Send("quit"));
  ProcessResult r = editor.Wait();
  EXPECT_EQ(r.exit_code, 0) << Shown(r);
}

TEST_F(EditorExampleTest, AnUnreachableHostIsExitCode3NamingTheTarget) {
  // No host: nobody listens on address().
  ProcessResult flag = RunProcess({POLYPLUG_EDITOR_BINARY, "--host", address()});
  EXPECT_EQ(flag.exit_code, 3) << Shown(flag);
  EXPECT_THAT(flag.err, HasSubstr(address())) << Shown(flag);
  EXPECT_EQ(flag.out, "") << Shown(flag);

  // The same target from $POLYPLUG_HOST.
  ProcessResult env = RunProcess({POLYPLUG_EDITOR_BINARY}, {{"POLYPLUG_HOST", address()}});
  EXPECT_EQ(env.exit_code, 3) << Shown(env);
  EXPECT_THAT(env.err, HasSubstr(address())) << Shown(env);
}

TEST_F(EditorExampleTest, BadFlagsAreExitCode2AndHelpIsUsage) {
  for (std::vector<std::string> args :
       std::vector<std::vector<std::string>>{{"--bogus"},
                                             {"--host"},
                                             {"--contract", "no-major"},
                                             {"--contract", "x@one"},
                                             {"--method", ""},
                                             {"stray"}}) {
    args.insert(args.begin(), POLYPLUG_EDITOR_BINARY);
    ProcessResult r = RunProcess(args);
    EXPECT_EQ(r.exit_code, 2) << args[1] << "\n" << Shown(r);
    EXPECT_THAT(r.err, HasSubstr("polyplug-editor: ")) << args[1];
    EXPECT_THAT(r.err, HasSubstr("usage: polyplug-editor")) << args[1];
  }
  ProcessResult help = RunProcess({POLYPLUG_EDITOR_BINARY, "--help"});
  EXPECT_EQ(help.exit_code, 0) << Shown(help);
  EXPECT_THAT(help.out, StartsWith("usage: polyplug-editor"));
}

}  // namespace
}  // namespace polyplug::test
