// Helpers for tests that load the real test bundles (tests/bundles) into a Runtime.
//
// Tests never load a bundle from the build tree: reloads rewrite files, so every test works
// on a copy inside a TempDir. Phase events are delivered synchronously on the mutating
// thread, so after LoadBundle/ReloadBundle/UnloadBundle returns, the EventRecorder already
// holds everything the call fired; no test needs to wait or sleep.
#ifndef POLYPLUG_TESTS_SUPPORT_BUNDLE_FIXTURE_H_
#define POLYPLUG_TESTS_SUPPORT_BUNDLE_FIXTURE_H_

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "polyplug/abi.h"
#include "polyplug/core/error.h"
#include "polyplug/core/event_journal.h"
#include "polyplug/core/ids.h"
#include "polyplug/core/phase_event.h"
#include "polyplug/core/registry.h"
#include "polyplug/core/runtime.h"

namespace polyplug::test {

// Status matchers: EXPECT_THAT(result.status(), HasReason(core::ErrorReason::kInitFailed)).
MATCHER(IsOk, "is OK") {
  *result_listener << "status: " << arg;
  return arg.ok();
}
MATCHER_P(HasReason, reason,
          std::string(negation ? "does not fail" : "fails") + " with reason " +
              std::string(::polyplug::core::ReasonToken(reason))) {
  *result_listener << "status: " << arg << ", reason "
                   << ::polyplug::core::ReasonToken(::polyplug::core::ReasonOf(arg));
  return !arg.ok() && ::polyplug::core::ReasonOf(arg) == reason;
}

// A fresh directory under the system temp dir, removed with everything in it at the end.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(absl::string_view child) const {
    return path_ / std::string(child);
  }

 private:
  std::filesystem::path path_;
};

// POLYPLUG_TEST_BUNDLES_DIR/<target>: the bundle directory CMake built for a test bundle.
std::filesystem::path TestBundleDir(absl::string_view target);

// Copies src's manifest.toml and shared libraries into dst_dir (created; must not exist
// yet) and returns dst_dir.
std::filesystem::path CopyBundle(const std::filesystem::path& src,
                                 const std::filesystem::path& dst_dir);

// Copies the built bundle `target` to <parent>/<target> and returns that directory.
std::filesystem::path CopyTestBundle(absl::string_view target, const std::filesystem::path& parent);

// A bundle shaped by its manifest around the graph_node library (tests/bundles/graph_node.cc):
// it registers exactly what `provides` lists, so a test builds any dependency graph.
struct GraphNode {
  explicit GraphNode(std::string name_, std::vector<std::string> depends_ = {},
                     bool needs_reinit_on_dep_reload_ = true,
                     std::vector<std::string> provides_ = {})
      : name(std::move(name_)),
        depends(std::move(depends_)),
        provides(std::move(provides_)),
        needs_reinit_on_dep_reload(needs_reinit_on_dep_reload_) {}

  std::string name;
  std::vector<std::string> depends;   // contracts used, "x@1": one [[dependency]] each
  std::vector<std::string> provides;  // empty: {"node.<name>@1"}
  bool needs_reinit_on_dep_reload = true;
  std::string version = "1.0.0";
};

// "node.<name>@1", the contract a GraphNode provides by default.
std::string NodeContract(absl::string_view name);

// Writes the node into <parent>/<name> (the library is copied once; the manifest is
// rewritten every time, so a test changes a loaded node and reloads it) and returns the
// directory.
std::filesystem::path WriteGraphNode(const std::filesystem::path& parent, const GraphNode& node);

// Replaces every occurrence of `from` by `to` in the file. False (with a test failure
// recorded) when the file cannot be read or does not contain `from`.
bool ReplaceInFile(const std::filesystem::path& path, absl::string_view from, absl::string_view to);

// Overwrites the file with `contents` in place (same inode).
void WriteFile(const std::filesystem::path& path, absl::string_view contents);
std::string ReadFile(const std::filesystem::path& path);

// Copies the manifest and libraries of src_bundle over those of dst_bundle in place, the
// way a rebuild of the bundle would (e.g. counter_v2 over a loaded copy of counter_v1).
void OverwriteArtifact(const std::filesystem::path& src_bundle,
                       const std::filesystem::path& dst_bundle);

// SHA-256 of a file's bytes, lowercase hex (what `sha256sum` prints); "" when unreadable.
std::string Sha256OfFile(const std::filesystem::path& path);

// Regular files anywhere under `dir` (0 when it does not exist).
size_t CountFilesUnder(const std::filesystem::path& dir);

// Case-insensitive substring test (absl 20220623 has no StrContainsIgnoreCase).
bool ContainsIgnoreCase(absl::string_view haystack, absl::string_view needle);

// The decimal text the manifest uses for a bundle's id, and "0x..." as errors print it.
std::string DecimalId(uint64_t id);
std::string HexId(uint64_t id);

// One phase event as delivered to a Runtime phase callback, with the ABI view copied.
struct RecordedPhase {
  core::PhaseEvent event;
  PolyplugReloadPhaseType abi_phase_type = 0;
  uint64_t abi_bundle_id = 0;
  std::string abi_bundle_name;
  std::optional<std::string> abi_reason;  // nullopt when the view's reason was absent
};

// Registers a phase callback on `runtime` and records every event (thread-safe). Must be
// destroyed before the runtime.
class EventRecorder {
 public:
  explicit EventRecorder(core::Runtime& runtime);
  ~EventRecorder();
  EventRecorder(const EventRecorder&) = delete;
  EventRecorder& operator=(const EventRecorder&) = delete;

  std::vector<core::PhaseEvent> events() const;
  std::vector<RecordedPhase> recorded() const;
  size_t size() const;
  void Clear();
  // The events recorded so far, which are then forgotten.
  std::vector<core::PhaseEvent> Take();

 private:
  core::Runtime& runtime_;
  core::EventJournal::ListenerId id_;
  // std::mutex rather than absl::Mutex: TSan sees through it even with an uninstrumented
  // Abseil (the distribution's), which absl::Mutex needs.
  mutable std::mutex mu_;
  std::vector<RecordedPhase> recorded_;  // guarded by mu_
};

// "PREPARING chain_a": compact, readable form for sequence assertions.
std::string Describe(const core::PhaseEvent& event);
std::vector<std::string> Describe(const std::vector<core::PhaseEvent>& events);

struct LogLine {
  core::LogLevel level;
  std::string scope;
  std::string message;
};

void PrintTo(const LogLine& line, std::ostream* os);

// A RuntimeOptions::log_sink that keeps every line (thread-safe). Must outlive the runtime.
class LogRecorder {
 public:
  core::LogSink Sink();
  std::vector<LogLine> lines() const;
  // Lines at `level` whose scope or message contains `needle` (case-insensitive).
  std::vector<LogLine> Matching(core::LogLevel level, absl::string_view needle) const;
  // Every line at Warn or Error.
  std::vector<LogLine> Warnings() const;
  void Clear();

 private:
  mutable std::mutex mu_;
  std::vector<LogLine> lines_;  // guarded by mu_
};

std::string ToString(const std::vector<LogLine>& lines);

// Calls functions[0] of the provider behind `handle` under a Pin and returns the int32 it
// writes (the test bundles' get_version / found-during-init flag).
absl::StatusOr<int32_t> CallFn0(const core::Runtime& runtime, core::ContractHandle handle);
// Find(contract_id, min_major) then the above.
absl::StatusOr<int32_t> CallFn0(const core::Runtime& runtime, uint64_t contract_id,
                                uint32_t min_major = 1);
// Same, naming the contract: CallFn0(runtime, "test.counter", 1).
absl::StatusOr<int32_t> CallFn0(const core::Runtime& runtime, absl::string_view contract_name,
                                uint32_t major);

// Base fixture: a bundle TempDir, a state TempDir, a LogRecorder, a runtime and an
// EventRecorder, declared so that they are destroyed in a safe order.
class RuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // (Re)creates the runtime; the previous one (if any) is destroyed first. `admit` becomes
  // RuntimeOptions::admit_artifact.
  void CreateRuntime(bool hot_reload_enabled = true,
                     decltype(core::RuntimeOptions::admit_artifact) admit = nullptr);
  // (Re)creates the runtime with `options`; an empty state_dir or log_sink is the fixture's.
  void CreateRuntimeWith(core::RuntimeOptions options);
  void DestroyRuntime();

  core::Runtime& runtime() { return *runtime_; }
  EventRecorder& recorder() { return *events_; }
  LogRecorder& log() { return log_; }
  const TempDir& bundles() const { return bundles_; }
  const TempDir& state() const { return state_; }

  // Copies the built bundle into the bundle TempDir (as <bundles>/<target>).
  std::filesystem::path Copy(absl::string_view target) {
    return CopyTestBundle(target, bundles_.path());
  }
  // Copies and loads; records a fatal failure if the load fails, so call it as
  // ASSERT_NO_FATAL_FAILURE(dir = CopyAndLoad("chain_a")).
  std::filesystem::path CopyAndLoad(absl::string_view target);

 private:
  TempDir bundles_;
  TempDir state_;
  LogRecorder log_;
  std::unique_ptr<core::Runtime> runtime_;
  std::unique_ptr<EventRecorder> events_;
};

}  // namespace polyplug::test

#endif  // POLYPLUG_TESTS_SUPPORT_BUNDLE_FIXTURE_H_
