// The callback-equivalence scenario: load, a reload that succeeds, one that fails, a
// cascade, an unload. Written once and run by callback_equivalence_test (in process and
// through polyplug-host) and by inprocess_recorder (in process, for the Python client's
// tests, which replay the very same steps against a host).
//
// Every step is here so that the sides cannot drift apart: a change to the scenario changes
// what each of them runs. The phase messages name files under the bundle root and the state
// directory, so the sides agree only when they use the same paths for both.
#ifndef POLYPLUG_TESTS_CLIENT_EQUIVALENCE_SCENARIO_H_
#define POLYPLUG_TESTS_CLIENT_EQUIVALENCE_SCENARIO_H_

#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "polyplug/core/phase_event.h"
#include "polyplug/core/runtime.h"
#include "support/bundle_fixture.h"

namespace polyplug::test {

// What the scenario does, however it is done (a core::Runtime, a client, polyplugctl).
struct Operations {
  // Loads the bundle in `dir`.
  std::function<void(const std::filesystem::path& dir)> load;
  // Reloads the bundle called `name`; `expect_reloaded` tells whether the primary should
  // reach RELOADED (true) or FAILED (false).
  std::function<void(const std::string& name, bool expect_reloaded)> reload;
  // Unloads the bundle called `name` and, first, every bundle that depends on it.
  std::function<void(const std::string& name)> unload_with_dependents;
};

// A fresh bundle root at `root` (removed first, with everything in it) holding the
// chain_a <- chain_b <- chain_c dependency chain, as <root>/chain_a, <root>/chain_b and
// <root>/chain_c.
inline void PrepareRoot(const std::filesystem::path& root) {
  std::filesystem::remove_all(root);
  std::filesystem::create_directories(root);
  for (const char* target : {"chain_a", "chain_b", "chain_c"}) CopyTestBundle(target, root);
}

// Runs after the host (or runtime) loaded `root` as PrepareRoot left it:
//   1. copies counter_v1 to <root>/counter_v1 and loads it (bundle "counter");
//   2. copies counter_v2's manifest and library over it, reloads "counter": RELOADED;
//   3. overwrites <root>/counter_v1/libcounter.so with "not an ELF file", reloads
//      "counter": FAILED;
//   4. reloads "chain_a": RELOADED, by cascade chain_b and chain_c too;
//   5. unloads "chain_a" with its dependents.
inline void RunScenario(const std::filesystem::path& root, const Operations& ops) {
  const std::filesystem::path counter = CopyTestBundle("counter_v1", root);
  ops.load(counter);
  OverwriteArtifact(TestBundleDir("counter_v2"), counter);
  ops.reload("counter", true);
  WriteFile(counter / "libcounter.so", "not an ELF file");
  ops.reload("counter", false);
  ops.reload("chain_a", true);  // cascades to chain_b, then chain_c
  ops.unload_with_dependents("chain_a");
}

// The in-process half: PrepareRoot(root), a core::Runtime (state in `state_dir`) with a
// phase callback recording every event, DiscoverAndLoad of the root, RunScenario. Returns
// the events the scenario fired, in order; those the runtime's destruction fires (it unloads
// what is left) are not part of it. Each step that goes wrong is passed to `fail` (and the
// scenario goes on, as far as it can); when the runtime cannot even be created or the root
// loaded, the result is empty.
inline std::vector<core::PhaseEvent> RecordInProcess(
    const std::filesystem::path& root, const std::filesystem::path& state_dir,
    const std::function<void(const std::string& what)>& fail) {
  PrepareRoot(root);
  // Declared before the runtime: its destructor unloads what is left and fires events.
  std::mutex mu;
  std::vector<core::PhaseEvent> recorded;
  core::RuntimeOptions options;
  options.state_dir = state_dir;
  auto runtime = core::Runtime::Create(options);
  if (!runtime.ok()) {
    fail(absl::StrCat("core::Runtime::Create: ", runtime.status().ToString()));
    return {};
  }
  (*runtime)->AddPhaseCallback([&](const PolyplugReloadPhase&, const core::PhaseEvent& e) {
    std::lock_guard<std::mutex> lock(mu);
    recorded.push_back(e);
  });
  if (auto loaded = (*runtime)->DiscoverAndLoad({root}); !loaded.ok()) {
    fail(absl::StrCat("DiscoverAndLoad(", root.string(), "): ", loaded.status().ToString()));
    return {};
  }
  core::Runtime& rt = **runtime;
  RunScenario(root, {
                        .load =
                            [&](const std::filesystem::path& dir) {
                              if (auto info = rt.LoadBundle(dir); !info.ok()) {
                                fail(absl::StrCat("LoadBundle(", dir.string(),
                                                  "): ", info.status().ToString()));
                              }
                            },
                        .reload =
                            [&](const std::string& name, bool expect_reloaded) {
                              auto outcome = rt.ReloadBundleByName(name);
                              if (!outcome.ok()) {
                                fail(absl::StrCat("ReloadBundleByName(", name,
                                                  "): ", outcome.status().ToString()));
                              } else if (outcome->ok() != expect_reloaded) {
                                fail(absl::StrCat("reload of ", name, ": expected ",
                                                  expect_reloaded ? "RELOADED" : "FAILED", ", got ",
                                                  outcome->status.ToString()));
                              }
                            },
                        .unload_with_dependents =
                            [&](const std::string& name) {
                              if (auto unloaded = rt.UnloadBundle(name, core::UnloadMode::kCascade);
                                  !unloaded.ok()) {
                                fail(absl::StrCat("UnloadBundle(", name,
                                                  ", kCascade): ", unloaded.status().ToString()));
                              }
                            },
                    });
  // Destroying the runtime unloads the rest; those events are not part of the scenario.
  std::lock_guard<std::mutex> lock(mu);
  return recorded;
}

}  // namespace polyplug::test

#endif  // POLYPLUG_TESTS_CLIENT_EQUIVALENCE_SCENARIO_H_
