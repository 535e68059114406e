// PhasePipeline: how the host reacts to a phase event, in one place and in one order.
//
// The runtime hands every journal event to its listeners synchronously, on the thread
// doing the operation, before that operation goes on: a PREPARING before the new image is
// opened and swapped, an UNLOADING before the bundle leaves. The host registers this one
// listener, which runs its stages in this order:
//
//   1. log        the phase line on stderr ("polyplug-host: [seq N] PREPARING ...")
//   2. health     the bundle's health service: NOT_SERVING from PREPARING to the terminal
//                 phase, unknown after UNLOADING
//   3. recovery   --supervise: keep a copy of each version that loaded or reloaded, and
//                 the running set
//   4. instances  remote instances of a bundle are destroyed at its PREPARING and
//                 UNLOADING (after the calls in flight drain), while its old code is mapped
//   5. streams    the event is queued for every subscriber
//   6. fleet      --fleet: the host's record in etcd is republished (what it runs now)
//
// Every stage sees every event, and no stage sees an event before the stages above it.
// Stages are fixed at construction; an empty one is skipped. Thread-compatible: the
// runtime delivers events one at a time.
#ifndef POLYPLUG_HOST_SRC_PHASE_PIPELINE_H_
#define POLYPLUG_HOST_SRC_PHASE_PIPELINE_H_

#include <array>
#include <functional>
#include <string_view>

#include "polyplug/core/event_journal.h"
#include "polyplug/core/phase_event.h"

namespace polyplug::host {

class PhasePipeline {
 public:
  using Stage = std::function<void(const core::PhaseEvent&)>;

  // In the order they run.
  struct Stages {
    Stage log;
    Stage health;
    Stage recovery;
    Stage instances;
    Stage streams;
    Stage fleet;
  };
  static constexpr std::array<std::string_view, 6> kStageNames = {
      "log", "health", "recovery", "instances", "streams", "fleet"};

  // Registers the pipeline on `journal`, which must outlive it.
  PhasePipeline(core::EventJournal& journal, Stages stages);
  // Unregisters. An event being delivered meanwhile may still run the stages: destroy it
  // once no operation runs on the runtime.
  ~PhasePipeline();

  PhasePipeline(const PhasePipeline&) = delete;
  PhasePipeline& operator=(const PhasePipeline&) = delete;

 private:
  void Run(const core::PhaseEvent& event) const;

  core::EventJournal& journal_;
  const Stages stages_;
  core::EventJournal::ListenerId listener_;
};

}  // namespace polyplug::host

#endif  // POLYPLUG_HOST_SRC_PHASE_PIPELINE_H_
