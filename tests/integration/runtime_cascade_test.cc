// Cascade reload of dependents (docs/SEMANTICS.md §5): chain_a <- chain_b <- chain_c, the
// needs_reinit_on_dep_reload opt-in, failing dependents, and a dependency cycle.
#include <dlfcn.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "polyplug/core/ids.h"
#include "polyplug/core/runtime.h"
#include "support/bundle_fixture.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
using core::BundleId;
using core::ErrorReason;
using core::Phase;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;

class RuntimeCascadeTest : public RuntimeTest {
 protected:
  void LoadChain() {
    ASSERT_NO_FATAL_FAILURE(dir_a_ = CopyAndLoad("chain_a"));
    ASSERT_NO_FATAL_FAILURE(dir_b_ = CopyAndLoad("chain_b"));
    ASSERT_NO_FATAL_FAILURE(dir_c_ = CopyAndLoad("chain_c"));
    recorder().Clear();
  }

  // fn0 of chain.b / chain.c is 1 when the dependency was visible during (re)init.
  void ExpectChainWorks() {
    for (const char* contract : {"chain.a", "chain.b", "chain.c"}) {
      absl::StatusOr<int32_t> value = CallFn0(runtime(), contract, 1);
      ASSERT_THAT(value.status(), IsOk()) << contract;
      EXPECT_EQ(*value, 1) << contract;
    }
  }

  fs::path dir_a_, dir_b_, dir_c_;
};

TEST_F(RuntimeCascadeTest, DependentsReloadNestedInsideThePrimarysBracket) {
  ASSERT_NO_FATAL_FAILURE(LoadChain());
  absl::StatusOr<core::ContractHandle> handle_c =
      runtime().Find(core::GuestContractId("chain.c", 1), 1);
  ASSERT_THAT(handle_c.status(), IsOk());

  absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundle(dir_a_);
  ASSERT_THAT(outcome.status(), IsOk());
  ASSERT_TRUE(outcome->ok()) << outcome->status;

  const std::vector<core::PhaseEvent> events = recorder().events();
  ASSERT_THAT(Describe(events),
              ElementsAre("PREPARING chain_a", "PREPARING chain_b", "PREPARING chain_c",
                          "RELOADED chain_c", "RELOADED chain_b", "RELOADED chain_a"));
  const core::PhaseEvent& prep_a = events[0];
  const core::PhaseEvent& prep_b = events[1];
  const core::PhaseEvent& prep_c = events[2];
  const core::PhaseEvent& done_c = events[3];
  const core::PhaseEvent& done_b = events[4];
  const core::PhaseEvent& done_a = events[5];

  // Each bundle's reload has its own id, shared by its two phases.
  EXPECT_EQ(prep_a.reload_id, outcome->reload_id);
  EXPECT_EQ(done_a.reload_id, prep_a.reload_id);
  EXPECT_EQ(done_b.reload_id, prep_b.reload_id);
  EXPECT_EQ(done_c.reload_id, prep_c.reload_id);
  EXPECT_NE(prep_b.reload_id, prep_a.reload_id);
  EXPECT_NE(prep_c.reload_id, prep_b.reload_id);
  EXPECT_NE(prep_c.reload_id, prep_a.reload_id);
  // a is the primary; b was triggered by a, c by b; all share a's root.
  for (const core::PhaseEvent& e : events) {
    SCOPED_TRACE(Describe(e));
    EXPECT_EQ(e.root_reload_id, prep_a.reload_id);
    EXPECT_EQ(e.reason, ErrorReason::kUnspecified);
  }
  EXPECT_EQ(prep_a.parent_reload_id, 0u);
  EXPECT_EQ(done_a.parent_reload_id, 0u);
  EXPECT_EQ(prep_b.parent_reload_id, prep_a.reload_id);
  EXPECT_EQ(done_b.parent_reload_id, prep_a.reload_id);
  EXPECT_EQ(prep_c.parent_reload_id, prep_b.reload_id);
  EXPECT_EQ(done_c.parent_reload_id, prep_b.reload_id);
  for (size_t i = 1; i < events.size(); ++i) EXPECT_EQ(events[i].seq, events[i - 1].seq + 1);

  // The outcome reports the whole cascade.
  ASSERT_THAT(outcome->events, SizeIs(6));
  for (size_t i = 0; i < events.size(); ++i) EXPECT_EQ(outcome->events[i].seq, events[i].seq);

  // The reinitialised dependents found their (reloaded) dependencies again.
  ASSERT_NO_FATAL_FAILURE(ExpectChainWorks());
  absl::StatusOr<int32_t> through_old_handle = CallFn0(runtime(), *handle_c);
  ASSERT_THAT(through_old_handle.status(), IsOk());
  EXPECT_EQ(*through_old_handle, 1);
  EXPECT_EQ(runtime().GetBundle("chain_b")->reload_count, 1u);
  EXPECT_EQ(runtime().GetBundle("chain_c")->reload_count, 1u);
}

TEST_F(RuntimeCascadeTest, ReloadingALeafCascadesToNobody) {
  ASSERT_NO_FATAL_FAILURE(LoadChain());
  absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundleByName("chain_c");
  ASSERT_THAT(outcome.status(), IsOk());
  ASSERT_TRUE(outcome->ok()) << outcome->status;
  EXPECT_THAT(Describe(recorder().events()), ElementsAre("PREPARING chain_c", "RELOADED chain_c"));
}

TEST_F(RuntimeCascadeTest, ReloadingTheMiddleCascadesOnlyDownstream) {
  ASSERT_NO_FATAL_FAILURE(LoadChain());
  absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundle(dir_b_);
  ASSERT_THAT(outcome.status(), IsOk());
  ASSERT_TRUE(outcome->ok()) << outcome->status;
  EXPECT_THAT(Describe(recorder().events()), ElementsAre("PREPARING chain_b", "PREPARING chain_c",
                                                         "RELOADED chain_c", "RELOADED chain_b"));
  ASSERT_NO_FATAL_FAILURE(ExpectChainWorks());
}

TEST_F(RuntimeCascadeTest, DependentWithoutTheOptInIsNotReloaded) {
  ASSERT_NO_FATAL_FAILURE(dir_a_ = CopyAndLoad("chain_a"));
  ASSERT_NO_FATAL_FAILURE(dir_b_ = CopyAndLoad("chain_b"));
  dir_c_ = Copy("chain_c");
  ASSERT_TRUE(ReplaceInFile(dir_c_ / "manifest.toml", "needs_reinit_on_dep_reload = true",
                            "needs_reinit_on_dep_reload = false"));
  ASSERT_THAT(runtime().LoadBundle(dir_c_).status(), IsOk());
  EXPECT_FALSE(runtime().GetBundle("chain_c")->needs_reinit_on_dep_reload);
  EXPECT_TRUE(runtime().GetBundle("chain_b")->needs_reinit_on_dep_reload);
  recorder().Clear();

  absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundle(dir_a_);
  ASSERT_THAT(outcome.status(), IsOk());
  ASSERT_TRUE(outcome->ok()) << outcome->status;
  EXPECT_THAT(Describe(recorder().events()), ElementsAre("PREPARING chain_a", "PREPARING chain_b",
                                                         "RELOADED chain_b", "RELOADED chain_a"));
  EXPECT_EQ(runtime().GetBundle("chain_c")->reload_count, 0u);
  ASSERT_NO_FATAL_FAILURE(ExpectChainWorks());
}

TEST_F(RuntimeCascadeTest, FailingDependentIsReportedButThePrimarySucceeds) {
  ASSERT_NO_FATAL_FAILURE(LoadChain());
  ASSERT_TRUE(ReplaceInFile(dir_b_ / "manifest.toml", DecimalId(BundleId("chain_b")), "12345"));

  absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundle(dir_a_);
  ASSERT_THAT(outcome.status(), IsOk());
  EXPECT_TRUE(outcome->ok()) << "cascade failures do not fail the primary: " << outcome->status;

  // b's manifest fails validation, so b never reaches PREPARING, and c (b's dependent)
  // is not reloaded because b was not.
  const std::vector<core::PhaseEvent> events = recorder().events();
  ASSERT_THAT(Describe(events),
              ElementsAre("PREPARING chain_a", "FAILED chain_b", "RELOADED chain_a"));
  const core::PhaseEvent& failed_b = events[1];
  EXPECT_EQ(failed_b.reason, ErrorReason::kBundleTampered);
  EXPECT_EQ(failed_b.bundle_id, BundleId("chain_b"));
  EXPECT_NE(failed_b.reload_id, events[0].reload_id);
  EXPECT_EQ(failed_b.parent_reload_id, events[0].reload_id);
  EXPECT_EQ(failed_b.root_reload_id, events[0].reload_id);
  EXPECT_EQ(events[2].reload_id, events[0].reload_id);
  ASSERT_THAT(outcome->events, SizeIs(3));

  // The cascade failure is logged at Warn (docs/SEMANTICS.md §5).
  EXPECT_THAT(log().Matching(core::LogLevel::kWarn, "chain_b"), Not(IsEmpty()))
      << ToString(log().lines());

  // The old b and c are still live and keep answering.
  ASSERT_NO_FATAL_FAILURE(ExpectChainWorks());
  EXPECT_EQ(runtime().GetBundle("chain_b")->reload_count, 0u);
}

TEST_F(RuntimeCascadeTest, DependentFailingInInitIsReportedAfterItsPreparing) {
  ASSERT_NO_FATAL_FAILURE(LoadChain());
  // b's manifest stays valid but its library now fails init.
  fs::copy_file(TestBundleDir("init_fails") / "libinit_fails.so", dir_b_ / "libchain_b.so",
                fs::copy_options::overwrite_existing);

  absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundle(dir_a_);
  ASSERT_THAT(outcome.status(), IsOk());
  EXPECT_TRUE(outcome->ok()) << outcome->status;
  const std::vector<core::PhaseEvent> events = recorder().events();
  ASSERT_THAT(Describe(events), ElementsAre("PREPARING chain_a", "PREPARING chain_b",
                                            "FAILED chain_b", "RELOADED chain_a"));
  EXPECT_EQ(events[2].reason, ErrorReason::kInitFailed);
  EXPECT_EQ(events[2].reload_id, events[1].reload_id);
  ASSERT_NO_FATAL_FAILURE(ExpectChainWorks());
}

TEST_F(RuntimeCascadeTest, CycleReloadTerminates) {
  // Explicit loads do not enforce dependencies, so the order is free.
  ASSERT_NO_FATAL_FAILURE(CopyAndLoad("cycle_y"));
  ASSERT_NO_FATAL_FAILURE(CopyAndLoad("cycle_x"));
  recorder().Clear();

  absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundleByName("cycle_x");
  ASSERT_THAT(outcome.status(), IsOk());
  ASSERT_TRUE(outcome->ok()) << outcome->status;
  const std::vector<core::PhaseEvent> events = recorder().events();
  ASSERT_THAT(Describe(events), ElementsAre("PREPARING cycle_x", "PREPARING cycle_y",
                                            "RELOADED cycle_y", "RELOADED cycle_x"));
  EXPECT_EQ(events[1].parent_reload_id, events[0].reload_id);
  EXPECT_EQ(events[1].root_reload_id, events[0].reload_id);

  for (const char* contract : {"cycle.x", "cycle.y"}) {
    EXPECT_THAT(runtime().Find(core::GuestContractId(contract, 1), 1).status(), IsOk()) << contract;
  }
}

// ---- Graphs of graph_node bundles: each bundle reloads at most once per operation, after
// every bundle it depends on in that operation, in a deterministic order.

class RuntimeCascadeGraphTest : public RuntimeTest {
 protected:
  // Writes and loads a node depending on `depends`.
  void Node(const std::string& name, std::vector<std::string> depends = {},
            bool needs_reinit = true) {
    const fs::path dir =
        WriteGraphNode(bundles().path(), GraphNode(name, std::move(depends), needs_reinit));
    ASSERT_THAT(runtime().LoadBundle(dir).status(), IsOk()) << name;
  }

  // Reloads `name` (which must reach RELOADED) and returns the events it fired.
  std::vector<core::PhaseEvent> Reload(const std::string& name) {
    recorder().Clear();
    absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundleByName(name);
    EXPECT_THAT(outcome.status(), IsOk());
    if (!outcome.ok()) return {};
    EXPECT_TRUE(outcome->ok()) << outcome->status;
    const std::vector<core::PhaseEvent> events = recorder().events();
    EXPECT_EQ(outcome->events.size(), events.size());
    return events;
  }

  // Breaks the node's manifest (a wrong id), so that its next reload fails validation.
  void BreakManifest(const std::string& name) {
    ASSERT_TRUE(
        ReplaceInFile(bundles() / name / "manifest.toml", DecimalId(BundleId(name)), "12345"));
  }

  uint64_t ReloadCount(const std::string& name) {
    absl::StatusOr<core::BundleInfo> info = runtime().GetBundle(name);
    EXPECT_THAT(info.status(), IsOk()) << name;
    return info.ok() ? info->reload_count : 0;
  }

  // The event of `phase` for `bundle` among `events` (a test failure when absent).
  static core::PhaseEvent EventOf(const std::vector<core::PhaseEvent>& events, Phase phase,
                                  absl::string_view bundle) {
    for (const core::PhaseEvent& e : events) {
      if (e.phase == phase && e.bundle_name == bundle) return e;
    }
    ADD_FAILURE() << "no " << core::PhaseName(phase) << " " << bundle;
    return {};
  }
};

// a <- b <- c and a <- c: c is reached through a and through b, and must reload once,
// after both, nested inside b (the provider whose reload made it ready).
TEST_F(RuntimeCascadeGraphTest, ADiamondReloadsTheSharedDependentOnceAfterBothProviders) {
  ASSERT_NO_FATAL_FAILURE(Node("a"));
  ASSERT_NO_FATAL_FAILURE(Node("b", {NodeContract("a")}));
  ASSERT_NO_FATAL_FAILURE(Node("c", {NodeContract("a"), NodeContract("b")}));

  const std::vector<core::PhaseEvent> events = Reload("a");
  ASSERT_THAT(Describe(events), ElementsAre("PREPARING a", "PREPARING b", "PREPARING c",
                                            "RELOADED c", "RELOADED b", "RELOADED a"));
  EXPECT_EQ(events[2].parent_reload_id, events[1].reload_id);
  EXPECT_EQ(events[1].parent_reload_id, events[0].reload_id);
  for (const char* name : {"a", "b", "c"}) EXPECT_EQ(ReloadCount(name), 1u) << name;

  // And again: still once each.
  ASSERT_THAT(Describe(Reload("a")), SizeIs(6));
  for (const char* name : {"a", "b", "c"}) EXPECT_EQ(ReloadCount(name), 2u) << name;
}

// The same diamond with the shared dependent's name sorting first: name order alone would
// reload c before z, while c still uses the z that is about to be replaced.
TEST_F(RuntimeCascadeGraphTest, ADependentWaitsForEveryProviderInTheOperationWhateverItsName) {
  ASSERT_NO_FATAL_FAILURE(Node("a"));
  ASSERT_NO_FATAL_FAILURE(Node("z", {NodeContract("a")}));
  ASSERT_NO_FATAL_FAILURE(Node("c", {NodeContract("a"), NodeContract("z")}));

  const std::vector<core::PhaseEvent> events = Reload("a");
  ASSERT_THAT(Describe(events), ElementsAre("PREPARING a", "PREPARING z", "PREPARING c",
                                            "RELOADED c", "RELOADED z", "RELOADED a"));
  EXPECT_EQ(events[2].parent_reload_id, events[1].reload_id);
  for (const char* name : {"a", "z", "c"}) EXPECT_EQ(ReloadCount(name), 1u) << name;
}

TEST_F(RuntimeCascadeGraphTest, AProviderWithThreeDependentsReloadsThemInNameOrder) {
  ASSERT_NO_FATAL_FAILURE(Node("a"));
  // Loaded out of name order on purpose.
  ASSERT_NO_FATAL_FAILURE(Node("x", {NodeContract("a")}));
  ASSERT_NO_FATAL_FAILURE(Node("b", {NodeContract("a")}));
  ASSERT_NO_FATAL_FAILURE(Node("m", {NodeContract("a")}));

  const std::vector<core::PhaseEvent> events = Reload("a");
  ASSERT_THAT(Describe(events),
              ElementsAre("PREPARING a", "PREPARING b", "RELOADED b", "PREPARING m", "RELOADED m",
                          "PREPARING x", "RELOADED x", "RELOADED a"));
  for (size_t i = 1; i + 1 < events.size(); ++i) {
    EXPECT_EQ(events[i].parent_reload_id, events[0].reload_id) << Describe(events[i]);
    EXPECT_EQ(events[i].root_reload_id, events[0].reload_id) << Describe(events[i]);
  }
}

// c depends on a and on b; b fails. c is still reloaded once (a did reload), under a.
TEST_F(RuntimeCascadeGraphTest, ADependentReachedByTwoPathsReloadsOnceWhenTheFirstPathFails) {
  ASSERT_NO_FATAL_FAILURE(Node("a"));
  ASSERT_NO_FATAL_FAILURE(Node("b", {NodeContract("a")}));
  ASSERT_NO_FATAL_FAILURE(Node("c", {NodeContract("a"), NodeContract("b")}));
  ASSERT_NO_FATAL_FAILURE(BreakManifest("b"));

  const std::vector<core::PhaseEvent> events = Reload("a");
  ASSERT_THAT(Describe(events),
              ElementsAre("PREPARING a", "FAILED b", "PREPARING c", "RELOADED c", "RELOADED a"));
  EXPECT_EQ(events[1].reason, ErrorReason::kBundleTampered);
  EXPECT_EQ(events[2].parent_reload_id, events[0].reload_id);
  EXPECT_EQ(ReloadCount("b"), 0u);
  EXPECT_EQ(ReloadCount("c"), 1u);
}

// The same, with the failing provider sorting after the shared dependent: c waits for z,
// z fails, and c still reloads, once, after it.
TEST_F(RuntimeCascadeGraphTest, ADependentWaitingForAProviderThatFailsStillReloadsOnce) {
  ASSERT_NO_FATAL_FAILURE(Node("a"));
  ASSERT_NO_FATAL_FAILURE(Node("z", {NodeContract("a")}));
  ASSERT_NO_FATAL_FAILURE(Node("c", {NodeContract("a"), NodeContract("z")}));
  ASSERT_NO_FATAL_FAILURE(BreakManifest("z"));

  const std::vector<core::PhaseEvent> events = Reload("a");
  ASSERT_THAT(Describe(events),
              ElementsAre("PREPARING a", "FAILED z", "PREPARING c", "RELOADED c", "RELOADED a"));
  EXPECT_EQ(ReloadCount("c"), 1u);
}

// A dependent of only the failed bundle is not reloaded: nothing it uses changed.
TEST_F(RuntimeCascadeGraphTest, ADependentOfOnlyAFailedBundleIsNotReloaded) {
  ASSERT_NO_FATAL_FAILURE(Node("a"));
  ASSERT_NO_FATAL_FAILURE(Node("b", {NodeContract("a")}));
  ASSERT_NO_FATAL_FAILURE(Node("c", {NodeContract("b")}));
  ASSERT_NO_FATAL_FAILURE(BreakManifest("b"));

  EXPECT_THAT(Describe(Reload("a")), ElementsAre("PREPARING a", "FAILED b", "RELOADED a"));
  EXPECT_EQ(ReloadCount("c"), 0u);
}

// A reload that changes [[dependency]] or needs_reinit_on_dep_reload takes effect for the
// next cascade and the next unload.
TEST_F(RuntimeCascadeGraphTest, ADependencyAddedByAReloadJoinsTheNextCascadeAndBlocksUnload) {
  ASSERT_NO_FATAL_FAILURE(Node("a"));
  ASSERT_NO_FATAL_FAILURE(Node("b"));
  EXPECT_THAT(Describe(Reload("a")), ElementsAre("PREPARING a", "RELOADED a"));

  WriteGraphNode(bundles().path(), GraphNode("b", {NodeContract("a")}));
  EXPECT_THAT(Describe(Reload("b")), ElementsAre("PREPARING b", "RELOADED b"));
  EXPECT_THAT(runtime().GetBundle("b")->declared_dependencies,
              ElementsAre(core::GuestContractId("node.a", 1)));

  EXPECT_THAT(Describe(Reload("a")),
              ElementsAre("PREPARING a", "PREPARING b", "RELOADED b", "RELOADED a"));
  EXPECT_THAT(runtime().UnloadBundle("a", core::UnloadMode::kRefuseIfInUse).status(),
              HasReason(ErrorReason::kDependencyInUse));
}

TEST_F(RuntimeCascadeGraphTest, ADependencyDroppedByAReloadLeavesTheCascadeAndTheUnloadCheck) {
  ASSERT_NO_FATAL_FAILURE(Node("a"));
  ASSERT_NO_FATAL_FAILURE(Node("b", {NodeContract("a")}));
  ASSERT_THAT(runtime().UnloadBundle("a", core::UnloadMode::kRefuseIfInUse).status(),
              HasReason(ErrorReason::kDependencyInUse));

  WriteGraphNode(bundles().path(), GraphNode("b"));
  EXPECT_THAT(Describe(Reload("b")), ElementsAre("PREPARING b", "RELOADED b"));

  EXPECT_THAT(Describe(Reload("a")), ElementsAre("PREPARING a", "RELOADED a"));
  absl::StatusOr<std::vector<std::string>> unloaded =
      runtime().UnloadBundle("a", core::UnloadMode::kRefuseIfInUse);
  ASSERT_THAT(unloaded.status(), IsOk());
  EXPECT_THAT(*unloaded, ElementsAre("a"));
}

TEST_F(RuntimeCascadeGraphTest, TurningTheOptInOnOrOffByAReloadChangesTheNextCascade) {
  ASSERT_NO_FATAL_FAILURE(Node("a"));
  ASSERT_NO_FATAL_FAILURE(Node("b", {NodeContract("a")}, /*needs_reinit=*/false));
  EXPECT_THAT(Describe(Reload("a")), ElementsAre("PREPARING a", "RELOADED a"));

  WriteGraphNode(bundles().path(), GraphNode("b", {NodeContract("a")}, true));
  EXPECT_THAT(Describe(Reload("b")), ElementsAre("PREPARING b", "RELOADED b"));
  EXPECT_THAT(Describe(Reload("a")),
              ElementsAre("PREPARING a", "PREPARING b", "RELOADED b", "RELOADED a"));

  WriteGraphNode(bundles().path(), GraphNode("b", {NodeContract("a")}, false));
  EXPECT_THAT(Describe(Reload("b")), ElementsAre("PREPARING b", "RELOADED b"));
  EXPECT_THAT(Describe(Reload("a")), ElementsAre("PREPARING a", "RELOADED a"));
}

// A dependent that opted in may keep pointers into its provider from its init; its old code
// runs until its own PREPARING, inside the provider's cascade. The provider's old image
// must still be mapped then, and calls through the kept pointer must still work.
TEST_F(RuntimeCascadeTest, ADependentsOldCodeCanStillCallItsOldProviderDuringTheCascade) {
  ASSERT_NO_FATAL_FAILURE(dir_a_ = CopyAndLoad("chain_a"));
  ASSERT_NO_FATAL_FAILURE(CopyAndLoad("holds_chain_a"));
  const std::string old_image = runtime().GetBundle("chain_a")->image.string();
  ASSERT_FALSE(old_image.empty());

  struct SeenAtPreparing {
    bool reached = false;
    std::string image_of_kept_function;  // "" when no loaded image holds it
    absl::StatusOr<int32_t> call_result = absl::UnknownError("not called");
  };
  auto seen = std::make_shared<SeenAtPreparing>();
  const core::Runtime* rt = &runtime();
  const core::EventJournal::ListenerId listener = runtime().AddPhaseCallback(
      [seen, rt](const PolyplugReloadPhase&, const core::PhaseEvent& event) {
        if (event.phase != Phase::kPreparing || event.bundle_name != "holds_chain_a") return;
        seen->reached = true;
        // The dependent's old image still answers here (it is swapped after this event).
        absl::StatusOr<core::ContractHandle> handle =
            rt->Find(core::GuestContractId("holds.chain_a", 1), 1);
        if (!handle.ok()) return;
        auto pin = rt->Pin();
        absl::StatusOr<const PolyplugGuestContractInterface*> iface = rt->Resolve(*handle);
        if (!iface.ok()) return;
        uint64_t address = 0;
        PolyplugAbiError err{POLYPLUG_ABI_OK, {nullptr, 0}};
        (*iface)->functions[1](PolyplugGuestContractInstance{nullptr, 0}, nullptr, &address, &err);
        Dl_info info{};
        if (address == 0 || dladdr(reinterpret_cast<void*>(address), &info) == 0 ||
            info.dli_fname == nullptr) {
          return;  // unmapped: calling it would crash
        }
        seen->image_of_kept_function = info.dli_fname;
        int32_t out = 0;
        (*iface)->functions[0](PolyplugGuestContractInstance{nullptr, 0}, nullptr, &out, &err);
        seen->call_result = err.code == POLYPLUG_ABI_OK
                                ? absl::StatusOr<int32_t>(out)
                                : absl::InternalError("fn0 of holds.chain_a failed");
      });

  absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundle(dir_a_);
  runtime().RemovePhaseCallback(listener);
  ASSERT_THAT(outcome.status(), IsOk());
  ASSERT_TRUE(outcome->ok()) << outcome->status;
  EXPECT_THAT(Describe(outcome->events), ElementsAre("PREPARING chain_a", "PREPARING holds_chain_a",
                                                     "RELOADED holds_chain_a", "RELOADED chain_a"));
  ASSERT_TRUE(seen->reached);
  EXPECT_EQ(seen->image_of_kept_function, old_image)
      << "chain_a's old image was closed before its dependent's PREPARING";
  ASSERT_THAT(seen->call_result.status(), IsOk());
  EXPECT_EQ(*seen->call_result, 1);

  // After the operation the old image is gone and the dependent calls the new one.
  EXPECT_NE(runtime().GetBundle("chain_a")->image.string(), old_image);
  EXPECT_FALSE(fs::exists(old_image));
  absl::StatusOr<int32_t> through_new = CallFn0(runtime(), "holds.chain_a", 1);
  ASSERT_THAT(through_new.status(), IsOk());
  EXPECT_EQ(*through_new, 1);
}

}  // namespace
}  // namespace polyplug::test
