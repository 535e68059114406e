// PhasePipeline: the one journal listener of polyplug-host runs its stages in the
// documented order (host/src/phase_pipeline.h), for every phase, skipping empty ones.
#include "host/src/phase_pipeline.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "polyplug/core/event_journal.h"
#include "polyplug/core/phase_event.h"

namespace polyplug::host {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;

// A stage that writes "<stage> <PHASE> <bundle>" to `seen`.
PhasePipeline::Stage Recording(std::string stage, std::vector<std::string>* seen) {
  return [stage, seen](const core::PhaseEvent& e) {
    seen->push_back(stage + " " + std::string(core::PhaseName(e.phase)) + " " + e.bundle_name);
  };
}

core::PhaseEvent Event(core::Phase phase, std::string bundle) {
  core::PhaseEvent event;
  event.phase = phase;
  event.bundle_name = std::move(bundle);
  return event;
}

TEST(PhasePipelineTest, EveryPhaseGoesThroughTheStagesInTheDocumentedOrder) {
  EXPECT_THAT(PhasePipeline::kStageNames,
              ElementsAre("log", "health", "recovery", "instances", "streams", "fleet"));
  core::EventJournal journal(1, 64);
  std::vector<std::string> seen;
  PhasePipeline::Stages stages;
  // Filled in an order unlike the pipeline's: the order is the pipeline's, not the caller's.
  stages.fleet = Recording("fleet", &seen);
  stages.streams = Recording("streams", &seen);
  stages.instances = Recording("instances", &seen);
  stages.log = Recording("log", &seen);
  stages.recovery = Recording("recovery", &seen);
  stages.health = Recording("health", &seen);
  PhasePipeline pipeline(journal, std::move(stages));

  for (core::Phase phase : {core::Phase::kLoaded, core::Phase::kPreparing, core::Phase::kReloaded,
                            core::Phase::kFailed, core::Phase::kUnloading}) {
    seen.clear();
    journal.Append(Event(phase, "b"));
    std::vector<std::string> expected;
    for (std::string_view stage : PhasePipeline::kStageNames) {
      expected.push_back(std::string(stage) + " " + std::string(core::PhaseName(phase)) + " b");
    }
    EXPECT_THAT(seen, ElementsAreArray(expected));
  }
}

TEST(PhasePipelineTest, AnEmptyStageIsSkippedAndTheRestKeepTheirOrder) {
  core::EventJournal journal(1, 64);
  std::vector<std::string> seen;
  PhasePipeline::Stages stages;  // no recovery without --supervise
  stages.log = Recording("log", &seen);
  stages.health = Recording("health", &seen);
  stages.instances = Recording("instances", &seen);
  stages.streams = Recording("streams", &seen);
  PhasePipeline pipeline(journal, std::move(stages));
  journal.Append(Event(core::Phase::kPreparing, "b"));
  EXPECT_THAT(seen, ElementsAre("log PREPARING b", "health PREPARING b", "instances PREPARING b",
                                "streams PREPARING b"));
}

TEST(PhasePipelineTest, NoStageRunsAfterThePipelineIsGone) {
  core::EventJournal journal(1, 64);
  std::vector<std::string> seen;
  {
    PhasePipeline::Stages stages;
    stages.log = Recording("log", &seen);
    PhasePipeline pipeline(journal, std::move(stages));
    journal.Append(Event(core::Phase::kLoaded, "b"));
  }
  journal.Append(Event(core::Phase::kUnloading, "b"));
  EXPECT_THAT(seen, ElementsAre("log LOADED b"));
}

}  // namespace
}  // namespace polyplug::host
