#include "host/src/phase_pipeline.h"

#include <utility>

namespace polyplug::host {

PhasePipeline::PhasePipeline(core::EventJournal& journal, Stages stages)
    : journal_(journal),
      stages_(std::move(stages)),
      listener_(journal_.AddListener([this](const core::PhaseEvent& e) { Run(e); })) {}

PhasePipeline::~PhasePipeline() { journal_.RemoveListener(listener_); }

void PhasePipeline::Run(const core::PhaseEvent& event) const {
  for (const Stage* stage : {&stages_.log, &stages_.health, &stages_.recovery, &stages_.instances,
                             &stages_.streams, &stages_.fleet}) {
    if (*stage) (*stage)(event);
  }
}

}  // namespace polyplug::host
