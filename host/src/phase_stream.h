// PhaseHub and its per-subscriber stream reactors: SubscribeReloadPhases.
//
// The hub gets every journaled event (Deliver, from the host's phase pipeline) and hands it to
// every open stream. Each stream has its own bounded queue and at most one write in flight; the
// thread appending to the journal (the reload worker) never waits for a stream. A stream
// whose queue overflows ends with OUT_OF_RANGE naming the last seq it delivered, so the
// client can resume from there.
//
// The hand-out runs on one of gRPC's own threads (an alarm already due), not on the thread
// that journals the event: gRPC 1.51 completes a write on its own threads, and writes
// started on a foreign thread wake one of them again and again, while writes started on
// a gRPC thread mostly complete there without waking another (docs/PERFORMANCE.md: host
// CPU per delivered event at 1,000 subscribers fell from 12-16 us to 9-11 us, level with a
// bare gRPC broadcaster).
//
// Each stream belongs to one hand-out lane for its whole life: lane 0 is that gRPC thread,
// the others are hub threads, one per further CPU. A stream's events all pass through its
// lane in journal order. With one lane a reload's 2N writes queue behind each other on one
// CPU; with lanes on every CPU they run side by side, and connections written to from two
// threads at once gather several streams' messages into one syscall (docs/PERFORMANCE.md:
// 1,000 subscribers, p99 35 ms -> 18-26 ms; CPU per delivered event 9 us -> 5-8 us).
#ifndef POLYPLUG_HOST_SRC_PHASE_STREAM_H_
#define POLYPLUG_HOST_SRC_PHASE_STREAM_H_

#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/string_view.h"
#include "host/src/crash_recovery.h"
#include "host/src/operation_worker.h"
#include "polyplug/core/runtime.h"
#include "polyplug/host/v1/host.pb.h"

namespace polyplug::host {

class PhaseStream;

struct PhaseHubOptions {
  size_t max_subscribers = 256;     // more are refused with RESOURCE_EXHAUSTED
  size_t max_queued_events = 1024;  // per subscriber, before it is told it fell behind
  // Under --supervise: snapshots also list the quarantined versions (phase FAILED).
  const CrashRecovery* recovery = nullptr;
  // Hand-out lanes including gRPC's thread; 0: one per CPU, at most 4. The hub starts one
  // thread for each lane beyond the first, however many streams there are.
  size_t handout_lanes = 0;
};

class PhaseHub {
 public:
  PhaseHub(core::Runtime& runtime, PhaseHubOptions options);
  ~PhaseHub();  // calls Shutdown()

  PhaseHub(const PhaseHub&) = delete;
  PhaseHub& operator=(const PhaseHub&) = delete;

  // The stream of one operation's events (`until_request_done`): it sends nothing of the
  // journal, and ends once End hands it the operation's outcome. Copyable; End may be
  // called from any thread, and does nothing once the stream is gone.
  class OperationStream {
   public:
    // Sends `events` (those the stream's bundle filter wants), then ends with OK; or ends
    // with `status` when that is an error.
    void End(const grpc::Status& status, const std::vector<v1::ReloadPhaseEvent>& events) const;

   private:
    friend class PhaseHub;
    std::weak_ptr<PhaseStream> stream_;
  };

  // Starts a stream for `request`; its events go out serialised (ReloadPhaseEvent).
  // Called from the gRPC handler; never blocks on I/O. With `until_request_done`, `ends`
  // receives the handle that ends it.
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Open(grpc::CallbackServerContext* context,
                                                   v1::SubscribeReloadPhasesRequest request,
                                                   OperationStream* ends = nullptr);

  // Queues a journaled event for every stream and makes sure a drain is scheduled. The
  // host's phase pipeline calls it for every event, on the mutating thread.
  void Deliver(const core::PhaseEvent& event);

  // Ends every stream with UNAVAILABLE and refuses new ones. Idempotent.
  void Shutdown();

  size_t subscriber_count() const;

 private:
  friend class PhaseStream;
  // Hands every queued event, in order, to every stream of lane 0 and passes them to the
  // other lanes for theirs. Runs on a gRPC thread.
  void Drain();
  void Remove(PhaseStream* stream);
  // Sends the heartbeats streams asked for; asleep while no stream asks for any.
  void HeartbeatLoop();

  core::Runtime& runtime_;
  const PhaseHubOptions options_;

  mutable std::mutex mu_;
  std::vector<std::shared_ptr<PhaseStream>> streams_;
  bool shut_down_ = false;
  std::deque<core::PhaseEvent> undelivered_;  // journaled, not yet handed to the streams
  bool drain_scheduled_ = false;              // an alarm will run Drain(), or it runs
  std::condition_variable drained_cv_;        // drain_scheduled_ became false
  size_t next_lane_ = 0;                      // the lane of the next stream, round robin
  // Lanes 1 and up (lane 0 is Drain's own thread); fixed from construction to destruction.
  std::vector<std::unique_ptr<OperationWorker>> lanes_;  // one thread each
  size_t heartbeat_streams_ = 0;                         // listed streams that asked for heartbeats
  std::condition_variable heartbeat_cv_;
  std::thread heartbeat_thread_;
};

}  // namespace polyplug::host

#endif  // POLYPLUG_HOST_SRC_PHASE_STREAM_H_
