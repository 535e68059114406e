// Cascade reload of dependents (reference 5.6): chain_a <- chain_b <- chain_c, the
// needs_reinit_on_dep_reload opt-in, failing dependents, and a dependency cycle.
#include <filesystem>
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

  // The cascade failure is logged at Warn (reference 5.6).
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

}  // namespace
}  // namespace polyplug::test
