// examples/game_runtime (polyplug-game), the real process, against a scratch bundle root
// holding gameplay v1: reloaded by the real polyplugctl, polyplug-editor and --watch, it
// prints the frame where the new version took over, never switches mid-frame, and exits 0
// on SIGTERM/SIGINT; a reload that fails leaves the old version running and the host
// serving; an unloaded gameplay does not stop the game. Every wait is on a line of the
// game's (or the editor's) output, whose formats are documented at the top of game.cc, or on
// a process's exit.
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "client/client_fixture.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::Not;
using ::testing::StartsWith;

constexpr char kFirstFrame[] = "frame 1: gameplay 1.0.0 running (generation 1)";
// The end of the lines that report a frame's time (regex).
constexpr char kTiming[] = R"(frame time [0-9]+\.[0-9]{3} ms, p50 [0-9]+\.[0-9]{3} ms\))";
// "frame N: gameplay 2.0.0 took over (generation 2, frame time ...)" (regex).
std::string TookOverV2() {
  return absl::StrCat(R"(frame [0-9]+: gameplay 2\.0\.0 took over \(generation 2, )", kTiming);
}

// A running child process whose stdout is read line by line; keeps what it printed.
class Running {
 public:
  Running(std::string name, std::vector<std::string> argv, ChildStdin in = ChildStdin::kInherit)
      : name_(std::move(name)), child_(argv, {}, in) {}

  // Reads lines until one satisfies `matches` and returns it; nullopt (and a test failure
  // showing the transcript) when the output ends or kCallDeadline passes first (also when
  // the process keeps printing other lines).
  template <typename Predicate>
  std::optional<std::string> ReadUntil(absl::string_view what, Predicate matches) {
    const auto deadline = std::chrono::steady_clock::now() + kCallDeadline;
    while (std::optional<std::string> line = child_.ReadLine()) {
      transcript_.push_back(*line);
      if (matches(*line)) return line;
      if (std::chrono::steady_clock::now() > deadline) break;
    }
    ADD_FAILURE() << name_ << "'s output ended before " << what << "; it printed:\n  "
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

  bool Send(absl::string_view line) { return child_.WriteLine(line); }
  void Signal(int signal) { child_.Signal(signal); }

  // Waits for the exit (closing stdin first when the test writes it); the transcript gets
  // the rest of the output.
  ProcessResult Wait() {
    while (std::optional<std::string> line = child_.ReadLine()) transcript_.push_back(*line);
    ProcessResult result = child_.Wait();
    result.out = absl::StrJoin(transcript_, "\n");
    return result;
  }

  const std::vector<std::string>& transcript() const { return transcript_; }

 private:
  const std::string name_;
  ChildProcess child_;
  std::vector<std::string> transcript_;
};

std::string Shown(const ProcessResult& r) {
  return absl::StrCat("exit ", r.exit_code, "\n--- stdout\n", r.out, "\n--- stderr\n", r.err);
}

// The frame number of a "frame N: ..." line; -1 when it has none.
int64_t FrameOf(absl::string_view line) {
  int64_t frame = -1;
  if (!absl::ConsumePrefix(&line, "frame ")) return -1;
  const size_t colon = line.find(':');
  if (colon == line.npos || !absl::SimpleAtoi(line.substr(0, colon), &frame)) return -1;
  return frame;
}

class GameRuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(root_);
    CopyBundle(POLYPLUG_GAMEPLAY_V1_DIR, gameplay_);
  }

  std::string address() const { return "unix:" + (dir_.path() / "game.sock").string(); }

  // Starts polyplug-game on the scratch root and reads its start-up lines: "ready", then
  // frame 1 running gameplay v1.
  std::unique_ptr<Running> StartGame(std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {POLYPLUG_GAME_BINARY,
                                     "--listen",
                                     address(),
                                     "--bundles",
                                     root_.string(),
                                     "--state-dir",
                                     (dir_.path() / "state").string()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto game = std::make_unique<Running>("polyplug-game", std::move(argv));
    EXPECT_TRUE(game->ReadUntilLine(absl::StrCat("ready: serving on ", address())));
    EXPECT_TRUE(game->ReadUntilLine(kFirstFrame));
    return game;
  }

  ProcessResult Ctl(std::vector<std::string> args) {
    args.insert(args.begin(), {POLYPLUGCTL_BINARY, "--host", address()});
    return RunProcess(args);
  }

  // Stops the game with `signal` and checks the clean exit: the "stopping" line, the
  // summary, no error line, exit code 0, no sanitizer report. Returns the summary line.
  std::string StopGame(Running& game, int signal = SIGTERM) {
    game.Signal(signal);
    ProcessResult r = game.Wait();
    EXPECT_EQ(r.exit_code, 0) << Shown(r);
    EXPECT_THAT(game.transcript(),
                Contains(MatchesRegex(absl::StrCat(
                    "stopping: ", signal == SIGINT ? "SIGINT" : "SIGTERM", " at frame [0-9]+"))))
        << Shown(r);
    for (const std::string& line : game.transcript()) {
      EXPECT_THAT(line, Not(StartsWith("error:"))) << Shown(r);
    }
    EXPECT_THAT(r.err, Not(HasSubstr("Sanitizer"))) << Shown(r);
    EXPECT_THAT(r.err, Not(HasSubstr("runtime error:"))) << Shown(r);
    if (game.transcript().empty()) return "";
    const std::string& summary = game.transcript().back();
    EXPECT_THAT(summary, StartsWith("summary: ")) << Shown(r);
    EXPECT_THAT(summary, HasSubstr(" 0 mid-frame switches, 0 failed calls; ")) << Shown(r);
    return summary;
  }

  TempDir dir_;
  const fs::path root_ = dir_.path() / "bundles";
  const fs::path gameplay_ = root_ / "gameplay";
};

TEST_F(GameRuntimeTest, APolyplugctlReloadTakesOverAtAFrameBoundary) {
  std::unique_ptr<Running> game = StartGame();
  ASSERT_FALSE(HasFailure());

  // A rebuild (v2's files over the loaded v1) and a reload over gRPC. polyplugctl returns
  // once the game ran the reload at a frame boundary.
  OverwriteArtifact(POLYPLUG_GAMEPLAY_V2_DIR, gameplay_);
  ProcessResult reload = Ctl({"reload", "gameplay"});
  EXPECT_EQ(reload.exit_code, 0) << Shown(reload);
  EXPECT_THAT(reload.out, HasSubstr("RELOADED gameplay 2.0.0")) << Shown(reload);
  std::optional<std::string> took_over = game->ReadUntilMatch(TookOverV2());
  ASSERT_TRUE(took_over);
  EXPECT_GT(FrameOf(*took_over), 1) << *took_over;

  // The host serves the new code to other processes too.
  ProcessResult call = Ctl({"call", "example.gameplay@1", "describe"});
  EXPECT_EQ(call.exit_code, 0) << Shown(call);
  EXPECT_EQ(call.out, "gameplay generation 2\n") << Shown(call);

  const std::string summary = StopGame(*game);
  EXPECT_THAT(
      summary,
      MatchesRegex(R"(summary: [0-9]+ frames, 1 reloads, 0 failed reloads, 0 mid-frame switches, )"
                   R"(0 failed calls; gameplay 2\.0\.0 \(generation 2\), score [0-9]+; )"
                   R"(frame time p50 [0-9.]+ ms, p99 [0-9.]+ ms, worst [0-9.]+ ms over the last )"
                   R"([0-9]+ frames)"));
}

TEST_F(GameRuntimeTest, AFailedReloadLeavesTheOldVersionRunningAndTheHostServing) {
  std::unique_ptr<Running> game = StartGame();
  ASSERT_FALSE(HasFailure());

  // A build whose init fails: the manifest is fine, so the reload gets to PREPARING (the
  // game drops its instance) and fails in init; v1 keeps running.
  OverwriteArtifact(POLYPLUG_GAMEPLAY_BROKEN_DIR, gameplay_);
  ProcessResult reload = Ctl({"reload", "gameplay"});
  EXPECT_EQ(reload.exit_code, 1) << Shown(reload);
  EXPECT_THAT(reload.out + reload.err, HasSubstr("INIT_FAILED")) << Shown(reload);
  std::optional<std::string> failed = game->ReadUntilMatch(
      absl::StrCat(R"(frame [0-9]+: gameplay reload FAILED \[INIT_FAILED\] .*broken on purpose.* )",
                   R"(\(1\.0\.0 keeps running, )", kTiming));
  ASSERT_TRUE(failed);

  // The host keeps serving, v1 answers.
  ProcessResult health = Ctl({"health"});
  EXPECT_EQ(health.exit_code, 0) << Shown(health);
  ProcessResult call = Ctl({"call", "example.gameplay@1", "describe"});
  EXPECT_EQ(call.exit_code, 0) << Shown(call);
  EXPECT_EQ(call.out, "gameplay generation 1\n") << Shown(call);

  // The next good build takes over, after the failure.
  OverwriteArtifact(POLYPLUG_GAMEPLAY_V2_DIR, gameplay_);
  ProcessResult good = Ctl({"reload", "gameplay"});
  EXPECT_EQ(good.exit_code, 0) << Shown(good);
  std::optional<std::string> took_over = game->ReadUntilMatch(TookOverV2());
  ASSERT_TRUE(took_over);
  EXPECT_GT(FrameOf(*took_over), FrameOf(*failed));

  // Every frame between ran v1 with a new instance (no failed call).
  const std::string summary = StopGame(*game);
  EXPECT_THAT(summary, StartsWith("summary: "));
  EXPECT_THAT(summary, HasSubstr(" 1 reloads, 1 failed reloads, 0 mid-frame switches, 0 failed "
                                 "calls; gameplay 2.0.0 (generation 2), "));
}

TEST_F(GameRuntimeTest, AFailedReloadAtTheEndKeepsV1InTheSummary) {
  std::unique_ptr<Running> game = StartGame();
  ASSERT_FALSE(HasFailure());
  OverwriteArtifact(POLYPLUG_GAMEPLAY_BROKEN_DIR, gameplay_);
  ProcessResult reload = Ctl({"reload", "gameplay"});
  EXPECT_EQ(reload.exit_code, 1) << Shown(reload);
  ASSERT_TRUE(game->ReadUntilMatch(R"(frame [0-9]+: gameplay reload FAILED \[INIT_FAILED\] .*)"));
  const std::string summary = StopGame(*game, SIGINT);
  EXPECT_THAT(summary, HasSubstr(" 0 reloads, 1 failed reloads, 0 mid-frame switches, 0 failed "
                                 "calls; gameplay 1.0.0 (generation 1), "));
}

TEST_F(GameRuntimeTest, WithWatchARebuildIsPickedUpAndABrokenOneFails) {
  std::unique_ptr<Running> game = StartGame({"--watch"});
  ASSERT_FALSE(HasFailure());

  // The build writes v2 over the bundle directory: no request, --watch reloads it.
  OverwriteArtifact(POLYPLUG_GAMEPLAY_V2_DIR, gameplay_);
  std::optional<std::string> took_over = game->ReadUntilMatch(TookOverV2());
  ASSERT_TRUE(took_over);

  // A library that is not one: FAILED, v2 keeps running.
  WriteFile(gameplay_ / "libgameplay.so", "not an ELF file");
  ASSERT_TRUE(game->ReadUntilMatch(
      absl::StrCat(R"(frame [0-9]+: gameplay reload FAILED \[ARTIFACT_NOT_LOADABLE\] .* )",
                   R"(\(2\.0\.0 keeps running, )", kTiming)));

  const std::string summary = StopGame(*game, SIGINT);
  EXPECT_THAT(summary, HasSubstr(" 1 reloads, 1 failed reloads, 0 mid-frame switches, 0 failed "
                                 "calls; gameplay 2.0.0 (generation 2), "));
}

TEST_F(GameRuntimeTest, TheEditorReloadsTheGameAndSeesTheNewAnswer) {
  std::unique_ptr<Running> game = StartGame();
  ASSERT_FALSE(HasFailure());
  Running editor("polyplug-editor",
                 {POLYPLUG_EDITOR_BINARY, "--host", address(), "--contract", "example.gameplay@1",
                  "--method", "describe", "--data", "game"},
                 ChildStdin::kFromTest);
  ASSERT_TRUE(editor.ReadUntilLine("describe(\"game\") -> gameplay generation 1"));

  OverwriteArtifact(POLYPLUG_GAMEPLAY_V2_DIR, gameplay_);
  ASSERT_TRUE(editor.Send("reload gameplay"));
  ASSERT_TRUE(
      editor.ReadUntilMatch(R"(\[phase\] seq [0-9]+ RELOADED gameplay 1\.0\.0 -> 2\.0\.0)"));
  ASSERT_TRUE(editor.ReadUntilLine("describe(\"game\") -> gameplay generation 2"));
  ASSERT_TRUE(game->ReadUntilMatch(TookOverV2()));

  ASSERT_TRUE(editor.Send("quit"));
  ProcessResult quit = editor.Wait();
  EXPECT_EQ(quit.exit_code, 0) << Shown(quit);
  EXPECT_THAT(editor.transcript(),
              Contains(MatchesRegex(R"(reload gameplay: RELOADED \(reload [0-9]+\))")));
  StopGame(*game);
}

TEST_F(GameRuntimeTest, AnUnloadedGameplayDoesNotStopTheGameAndALoadTakesOver) {
  std::unique_ptr<Running> game = StartGame();
  ASSERT_FALSE(HasFailure());

  ProcessResult unload = Ctl({"unload", "gameplay"});
  EXPECT_EQ(unload.exit_code, 0) << Shown(unload);
  std::optional<std::string> unloaded =
      game->ReadUntil("the unloaded line", [](const std::string& line) {
        return ::testing::Matches(MatchesRegex(R"(frame [0-9]+: gameplay 1\.0\.0 unloaded)"))(line);
      });
  ASSERT_TRUE(unloaded);
  ASSERT_TRUE(game->ReadUntilLine(absl::StrCat("frame ", FrameOf(*unloaded),
                                               ": no provider of example.gameplay@1, running "
                                               "without gameplay")));
  ProcessResult call = Ctl({"call", "example.gameplay@1", "describe"});
  EXPECT_EQ(call.exit_code, 1) << Shown(call);

  // Loaded again (as v2): the game finds it and it takes over.
  OverwriteArtifact(POLYPLUG_GAMEPLAY_V2_DIR, gameplay_);
  ProcessResult load = Ctl({"load", gameplay_.string()});
  EXPECT_EQ(load.exit_code, 0) << Shown(load);
  std::optional<std::string> took_over = game->ReadUntilMatch(TookOverV2());
  ASSERT_TRUE(took_over);
  EXPECT_GT(FrameOf(*took_over), FrameOf(*unloaded));

  const std::string summary = StopGame(*game);
  EXPECT_THAT(summary, HasSubstr(" 0 reloads, 0 failed reloads, 0 mid-frame switches, 0 failed "
                                 "calls; gameplay 2.0.0 (generation 2), "));
}

TEST_F(GameRuntimeTest, StopsAfterFramesByItself) {
  Running game("polyplug-game", {POLYPLUG_GAME_BINARY, "--listen", address(), "--bundles",
                                 root_.string(), "--frames", "30", "--hz", "1000"});
  ProcessResult r = game.Wait();
  EXPECT_EQ(r.exit_code, 0) << Shown(r);
  ASSERT_GE(game.transcript().size(), 3u) << Shown(r);
  EXPECT_EQ(game.transcript()[0], absl::StrCat("ready: serving on ", address()));
  EXPECT_EQ(game.transcript()[1], kFirstFrame);
  EXPECT_THAT(game.transcript().back(),
              AllOf(StartsWith("summary: 30 frames, 0 reloads, 0 failed reloads, 0 mid-frame "
                               "switches, 0 failed calls; gameplay 1.0.0 (generation 1), score "),
                    HasSubstr(" over the last 30 frames")))
      << Shown(r);
  EXPECT_FALSE(fs::exists(dir_.path() / "game.sock")) << "the socket is removed at exit";
}

TEST_F(GameRuntimeTest, BadFlagsAreExitCode2AndAHostThatCannotStartIs3) {
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{{"--bogus"},
                                                                             {"--listen"},
                                                                             {"--hz", "0"},
                                                                             {"--hz", "fast"},
                                                                             {"--frames", "-1"},
                                                                             {"--watch=yes"},
                                                                             {"stray"}}) {
    args.insert(args.begin(), POLYPLUG_GAME_BINARY);
    ProcessResult r = RunProcess(args);
    EXPECT_EQ(r.exit_code, 2) << args[1] << "\n" << Shown(r);
    EXPECT_THAT(r.err, HasSubstr("polyplug-game: ")) << args[1];
    EXPECT_THAT(r.err, HasSubstr("usage: polyplug-game")) << args[1];
  }
  ProcessResult help = RunProcess({POLYPLUG_GAME_BINARY, "--help"});
  EXPECT_EQ(help.exit_code, 0) << Shown(help);
  EXPECT_THAT(help.out, StartsWith("usage: polyplug-game"));

  ProcessResult no_root = RunProcess({POLYPLUG_GAME_BINARY, "--listen", address(), "--bundles",
                                      (dir_.path() / "missing").string()});
  EXPECT_EQ(no_root.exit_code, 3) << Shown(no_root);
  EXPECT_THAT(no_root.err, HasSubstr("polyplug-game: cannot serve: ")) << Shown(no_root);
  EXPECT_THAT(no_root.err, HasSubstr("missing")) << Shown(no_root);
}

}  // namespace
}  // namespace polyplug::test
