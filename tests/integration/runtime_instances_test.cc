// Live-instance accounting (docs/SEMANTICS.md §4 step 6, §6, §8): PREPARING and UNLOADING
// report the instances still alive, and the runtime warns when a reload or unload
// proceeds over them.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "polyplug/core/ids.h"
#include "polyplug/core/runtime.h"
#include "support/bundle_fixture.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
using core::ErrorReason;
using core::GuestContractId;
using core::Phase;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;

const uint64_t kCounterContract = GuestContractId("test.counter", 1);

class RuntimeInstancesTest : public RuntimeTest {
 protected:
  void SetUp() override {
    RuntimeTest::SetUp();
    if (HasFatalFailure()) return;
    dir_ = Copy("counter_v1");
    ASSERT_THAT(runtime().LoadBundle(dir_).status(), IsOk());
    absl::StatusOr<core::ContractHandle> handle = runtime().Find(kCounterContract, 1);
    ASSERT_THAT(handle.status(), IsOk());
    handle_ = *handle;
    recorder().Clear();
  }

  // Creates a counter instance through the runtime (counted).
  PolyplugGuestContractInstance Create() {
    core::ReadPin pin = runtime().Pin();
    absl::StatusOr<const PolyplugGuestContractInterface*> iface = runtime().Resolve(handle_);
    EXPECT_THAT(iface.status(), IsOk());
    if (!iface.ok()) return {};
    absl::StatusOr<PolyplugGuestContractInstance> instance =
        runtime().CreateInstance(**iface, PolyplugBytesView{nullptr, 0});
    EXPECT_THAT(instance.status(), IsOk());
    if (!instance.ok()) return {};
    EXPECT_NE(instance->data, nullptr) << "counter instances are stateful";
    EXPECT_EQ(instance->contract_id, kCounterContract);
    return *instance;
  }

  // Calls fn1 (increment) on the instance and returns the new count.
  int64_t Increment(PolyplugGuestContractInstance instance) {
    core::ReadPin pin = runtime().Pin();
    absl::StatusOr<const PolyplugGuestContractInterface*> iface = runtime().Resolve(handle_);
    EXPECT_THAT(iface.status(), IsOk());
    if (!iface.ok()) return -1;
    int64_t out = -1;
    PolyplugAbiError err{POLYPLUG_ABI_OK, {nullptr, 0}};
    (*iface)->functions[1](instance, nullptr, &out, &err);
    EXPECT_EQ(err.code, POLYPLUG_ABI_OK);
    return out;
  }

  void Destroy(PolyplugGuestContractInstance instance) {
    core::ReadPin pin = runtime().Pin();
    absl::StatusOr<const PolyplugGuestContractInterface*> iface = runtime().Resolve(handle_);
    ASSERT_THAT(iface.status(), IsOk());
    runtime().DestroyInstance(**iface, instance);
  }

  std::vector<LogLine> LiveInstanceWarnings() {
    std::vector<LogLine> out;
    for (const LogLine& line : log().Warnings()) {
      if (ContainsIgnoreCase(line.message, "live") &&
          ContainsIgnoreCase(line.message, "instance")) {
        out.push_back(line);
      }
    }
    return out;
  }

  fs::path dir_;
  core::ContractHandle handle_;
};

TEST_F(RuntimeInstancesTest, ReloadOverALiveInstanceReportsItAndWarns) {
  const PolyplugGuestContractInstance instance = Create();
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(Increment(instance), 1);

  absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundle(dir_);
  ASSERT_THAT(outcome.status(), IsOk());
  EXPECT_TRUE(outcome->ok()) << "live instances never block a reload: " << outcome->status;

  const std::vector<core::PhaseEvent> events = recorder().events();
  ASSERT_THAT(Describe(events), ElementsAre("PREPARING counter", "RELOADED counter"));
  EXPECT_EQ(events[0].live_instances, 1u);
  const std::vector<LogLine> warnings = LiveInstanceWarnings();
  ASSERT_THAT(warnings, SizeIs(1)) << ToString(log().lines());
  EXPECT_EQ(warnings[0].level, core::LogLevel::kWarn);
  EXPECT_TRUE(absl::StrContains(warnings[0].message, "counter")) << warnings[0].message;

  // The instance's data is a plain int64_t, so the new code can still free it (the host
  // ought to have destroyed it at PREPARING; this keeps the test leak-free).
  Destroy(instance);
  recorder().Clear();
  log().Clear();

  // Counts were reset by the reload: the next reload sees no live instance.
  outcome = runtime().ReloadBundle(dir_);
  ASSERT_THAT(outcome.status(), IsOk());
  ASSERT_THAT(recorder().events(), SizeIs(2));
  EXPECT_EQ(recorder().events()[0].live_instances, 0u);
  EXPECT_THAT(LiveInstanceWarnings(), IsEmpty()) << ToString(log().lines());
}

TEST_F(RuntimeInstancesTest, InstancesDestroyedAtPreparingDoNotWarn) {
  const PolyplugGuestContractInstance first = Create();
  const PolyplugGuestContractInstance second = Create();
  ASSERT_FALSE(HasFailure());

  // The host protocol: PREPARING is the moment to destroy instances of the bundle.
  uint64_t live_at_preparing = 0;
  const core::EventJournal::ListenerId id =
      runtime().AddPhaseCallback([&](const PolyplugReloadPhase&, const core::PhaseEvent& event) {
        if (event.phase != Phase::kPreparing) return;
        live_at_preparing = event.live_instances;
        Destroy(first);
        Destroy(second);
      });
  absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundle(dir_);
  runtime().RemovePhaseCallback(id);

  ASSERT_THAT(outcome.status(), IsOk());
  EXPECT_TRUE(outcome->ok()) << outcome->status;
  EXPECT_EQ(live_at_preparing, 2u);
  EXPECT_THAT(LiveInstanceWarnings(), IsEmpty()) << ToString(log().lines());
}

TEST_F(RuntimeInstancesTest, DestroyedInstancesAreNotCounted) {
  const PolyplugGuestContractInstance instance = Create();
  ASSERT_FALSE(HasFailure());
  Destroy(instance);

  absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundle(dir_);
  ASSERT_THAT(outcome.status(), IsOk());
  ASSERT_THAT(recorder().events(), SizeIs(2));
  EXPECT_EQ(recorder().events()[0].live_instances, 0u);
  EXPECT_THAT(LiveInstanceWarnings(), IsEmpty()) << ToString(log().lines());
}

TEST_F(RuntimeInstancesTest, UnloadOverALiveInstanceReportsIt) {
  const PolyplugGuestContractInstance instance = Create();
  ASSERT_FALSE(HasFailure());
  uint64_t live_at_unloading = 0;
  const core::EventJournal::ListenerId id =
      runtime().AddPhaseCallback([&](const PolyplugReloadPhase&, const core::PhaseEvent& event) {
        if (event.phase != Phase::kUnloading) return;
        live_at_unloading = event.live_instances;
        Destroy(instance);  // the last moment the code behind it is still mapped
      });
  ASSERT_THAT(runtime().UnloadBundle("counter", core::UnloadMode::kRefuseIfInUse).status(), IsOk());
  runtime().RemovePhaseCallback(id);
  EXPECT_EQ(live_at_unloading, 1u);
  EXPECT_THAT(LiveInstanceWarnings(), IsEmpty()) << ToString(log().lines());
}

// What the host's remote calls rely on: an interface retained before a reload keeps the
// old image mapped and callable, with no pin held (the reload does not wait for it), and
// the last holder's release closes the old image.
TEST_F(RuntimeInstancesTest, ARetainedInterfaceOutlivesAReloadWithoutHoldingItUp) {
  const size_t copies_before = CountFilesUnder(state().path());
  absl::StatusOr<std::shared_ptr<const PolyplugGuestContractInterface>> v1 =
      runtime().Retain(handle_);
  ASSERT_THAT(v1.status(), IsOk());

  OverwriteArtifact(TestBundleDir("counter_v2"), dir_);
  absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundle(dir_);
  ASSERT_THAT(outcome.status(), IsOk());
  ASSERT_TRUE(outcome->ok()) << outcome->status;
  absl::StatusOr<int32_t> now = CallFn0(runtime(), handle_);
  ASSERT_THAT(now.status(), IsOk());
  EXPECT_EQ(*now, 2) << "same handle, new code";
  EXPECT_EQ(CountFilesUnder(state().path()), copies_before + 1) << "both images are mapped";

  int32_t version = 0;
  PolyplugAbiError err{POLYPLUG_ABI_OK, {nullptr, 0}};
  (*v1)->functions[0](PolyplugGuestContractInstance{}, nullptr, &version, &err);
  EXPECT_EQ(err.code, POLYPLUG_ABI_OK);
  EXPECT_EQ(version, 1) << "the retained interface still runs the old code";

  v1->reset();  // the last holder: the old image goes
  EXPECT_EQ(CountFilesUnder(state().path()), copies_before);
  now = CallFn0(runtime(), handle_);
  ASSERT_THAT(now.status(), IsOk());
  EXPECT_EQ(*now, 2);
}

TEST_F(RuntimeInstancesTest, StatelessInstancesAreNotCounted) {
  ASSERT_NO_FATAL_FAILURE(CopyAndLoad("stateless"));
  absl::StatusOr<core::ContractHandle> handle =
      runtime().Find(GuestContractId("test.stateless", 1), 1);
  ASSERT_THAT(handle.status(), IsOk());
  {
    core::ReadPin pin = runtime().Pin();
    absl::StatusOr<const PolyplugGuestContractInterface*> iface = runtime().Resolve(*handle);
    ASSERT_THAT(iface.status(), IsOk());
    absl::StatusOr<PolyplugGuestContractInstance> instance =
        runtime().CreateInstance(**iface, PolyplugBytesView{nullptr, 0});
    ASSERT_THAT(instance.status(), IsOk());
    EXPECT_EQ(instance->data, nullptr);
  }
  recorder().Clear();
  absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundleByName("stateless");
  ASSERT_THAT(outcome.status(), IsOk());
  ASSERT_THAT(recorder().events(), SizeIs(2));
  EXPECT_EQ(recorder().events()[0].live_instances, 0u);
  EXPECT_THAT(LiveInstanceWarnings(), IsEmpty()) << ToString(log().lines());
}

// Reset of the counts (reload flow step 13, unload): a contract the new version no longer
// provides, or an unloaded bundle's, had its instances die with the old code; a later
// provider of that contract must not inherit their count.
class RuntimeInstancesOfDroppedContractsTest : public RuntimeTest {
 protected:
  // Loads x providing node.x@1 and shared.q@1 and makes one (counted) instance of shared.q.
  void LoadXWithAnInstanceOfQ() {
    x_dir_ = WriteGraphNode(bundles().path(),
                            GraphNode("x", {}, true, {NodeContract("x"), "shared.q@1"}));
    ASSERT_THAT(runtime().LoadBundle(x_dir_).status(), IsOk());
    absl::StatusOr<core::ContractHandle> q = runtime().Find(GuestContractId("shared.q", 1), 1);
    ASSERT_THAT(q.status(), IsOk());
    absl::StatusOr<std::shared_ptr<const PolyplugGuestContractInterface>> iface =
        runtime().Retain(*q);
    ASSERT_THAT(iface.status(), IsOk());
    q_iface_ = *iface;
    absl::StatusOr<PolyplugGuestContractInstance> instance =
        runtime().CreateInstance(*q_iface_, PolyplugBytesView{nullptr, 0});
    ASSERT_THAT(instance.status(), IsOk());
    ASSERT_NE(instance->data, nullptr);
    q_instance_ = *instance;
  }

  // The instance died with x's old code: frees its memory through that code (kept mapped by
  // the retained interface) without telling the runtime, which already forgot it.
  void FreeTheDeadInstance() {
    q_iface_->destroy_instance(q_iface_->user_data, runtime().host_api(), q_instance_);
    q_iface_.reset();
  }

  // Loads y, a later provider of shared.q@1, and returns the live_instances its first
  // reload reports.
  uint64_t LiveInstancesOfALaterProviderOfQ() {
    const fs::path y = WriteGraphNode(bundles().path(),
                                      GraphNode("y", {}, true, {NodeContract("y"), "shared.q@1"}));
    EXPECT_THAT(runtime().LoadBundle(y).status(), IsOk());
    recorder().Clear();
    log().Clear();
    absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundleByName("y");
    EXPECT_THAT(outcome.status(), IsOk());
    const std::vector<core::PhaseEvent> events = recorder().events();
    EXPECT_THAT(Describe(events), ElementsAre("PREPARING y", "RELOADED y"));
    EXPECT_THAT(log().Matching(core::LogLevel::kWarn, "live guest instance"), IsEmpty())
        << ToString(log().lines());
    return events.empty() ? ~uint64_t{0} : events[0].live_instances;
  }

  fs::path x_dir_;
  std::shared_ptr<const PolyplugGuestContractInterface> q_iface_;
  PolyplugGuestContractInstance q_instance_{};
};

TEST_F(RuntimeInstancesOfDroppedContractsTest, AContractDroppedByAReloadStartsFromZeroElsewhere) {
  ASSERT_NO_FATAL_FAILURE(LoadXWithAnInstanceOfQ());
  WriteGraphNode(bundles().path(), GraphNode("x"));  // v2 provides only node.x@1
  recorder().Clear();
  absl::StatusOr<core::ReloadOutcome> outcome = runtime().ReloadBundle(x_dir_);
  ASSERT_THAT(outcome.status(), IsOk());
  ASSERT_TRUE(outcome->ok()) << outcome->status;
  ASSERT_THAT(recorder().events(), SizeIs(2));
  EXPECT_EQ(recorder().events()[0].live_instances, 1u);
  FreeTheDeadInstance();

  EXPECT_EQ(LiveInstancesOfALaterProviderOfQ(), 0u);
}

TEST_F(RuntimeInstancesOfDroppedContractsTest, AnUnloadedBundlesContractsStartFromZeroElsewhere) {
  ASSERT_NO_FATAL_FAILURE(LoadXWithAnInstanceOfQ());
  recorder().Clear();
  ASSERT_THAT(runtime().UnloadBundle("x", core::UnloadMode::kRefuseIfInUse).status(), IsOk());
  ASSERT_THAT(recorder().events(), SizeIs(1));
  EXPECT_EQ(recorder().events()[0].live_instances, 1u);
  FreeTheDeadInstance();

  EXPECT_EQ(LiveInstancesOfALaterProviderOfQ(), 0u);
}

}  // namespace
}  // namespace polyplug::test
