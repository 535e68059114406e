// polyplug-fanout-floor: the fan-out floor for polyplug-bench. A bare gRPC 1.51 callback
// server that speaks just enough of PluginHost for the bench's subscribers: Echo (to see it
// is up), SubscribeReloadPhases (a stream per subscriber, sending initial metadata at once)
// and Reload, which broadcasts a PREPARING and a RELOADED event to every stream and returns.
//
// It is the leanest broadcaster gRPC's callback API allows, and nothing more: no runtime, no
// journal, no filters or cursors; each event is serialised once and the same bytes go to
// every stream (a ByteBuffer copy shares its slices); the subscriber list is copied out of
// its lock; each stream has a queue and one write in flight, as gRPC requires; streams are
// dealt to two hand-out lanes (the Reload handler's thread and one more), the cheapest
// way found to spread 2N writes over this machine's two CPUs. What polyplug-host spends per
// delivered event above what this spends is polyplug's own cost.
//
// Both events carry the time the Reload call arrived: the bench measures from an event's
// time to the last subscriber holding RELOADED, and polyplug-host's RELOADED is stamped
// before most of its PREPARING hand-out, so the floor's must not skip its own.
//
// polyplug-fanout-floor --listen ADDRESS
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "host/src/operation_worker.h"
#include "host/src/plugin_host_service.h"
#include "polyplug/host/v1/host.grpc.pb.h"
#include "wire/wire.h"

namespace {

namespace v1 = polyplug::host::v1;

class FloorService;

// One subscriber: a queue of serialised events and at most one write in flight.
class FloorStream : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  FloorStream(FloorService* service, grpc::CallbackServerContext* context)
      : service_(service), context_(context) {}

  void SetSelf(std::shared_ptr<FloorStream> self) { self_ = std::move(self); }

  void Start() {
    std::lock_guard<std::mutex> lock(mu_);
    context_->AddInitialMetadata("polyplug-host-epoch", "1");
    StartSendInitialMetadata();
  }

  void Offer(const grpc::ByteBuffer& event) {
    std::lock_guard<std::mutex> lock(mu_);
    if (finishing_) return;
    queue_.push_back(event);
    WriteNextLocked();
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) EndLocked(grpc::Status(grpc::StatusCode::CANCELLED, "stream broken"));
    WriteNextLocked();
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    EndLocked(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client"));
    WriteNextLocked();
  }

  void OnDone() override;

 private:
  void EndLocked(grpc::Status status) {
    if (finishing_) return;
    finishing_ = true;
    queue_.clear();
    status_ = std::move(status);
  }

  void WriteNextLocked() {
    if (writing_ || finish_called_) return;
    if (!queue_.empty()) {
      current_ = std::move(queue_.front());
      queue_.pop_front();
      writing_ = true;
      StartWrite(&current_);
    } else if (finishing_) {
      finish_called_ = true;
      Finish(status_);
    }
  }

  FloorService* const service_;
  grpc::CallbackServerContext* const context_;
  std::mutex mu_;
  std::deque<grpc::ByteBuffer> queue_;
  grpc::ByteBuffer current_;  // must outlive its write
  bool writing_ = false;
  bool finishing_ = false;
  bool finish_called_ = false;
  grpc::Status status_;
  std::shared_ptr<FloorStream> self_;  // released in OnDone
};

// polyplug-host's own service base (SubscribeReloadPhases raw, every other method a callback
// one); what the floor does not override answers UNIMPLEMENTED.
class FloorService : public polyplug::host::PluginHostCallbackService {
 public:
  grpc::ServerWriteReactor<grpc::ByteBuffer>* SubscribeReloadPhases(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer*) override {
    auto stream = std::make_shared<FloorStream>(this, context);
    stream->SetSelf(stream);
    {
      std::lock_guard<std::mutex> lock(mu_);
      streams_[next_lane_++ % 2].push_back(stream);
    }
    stream->Start();
    return stream.get();
  }

  grpc::ServerUnaryReactor* Reload(grpc::CallbackServerContext* context,
                                   const v1::ReloadRequest* request,
                                   v1::ReloadResponse* response) override {
    const int64_t now = absl::GetCurrentTimeNanos();
    std::vector<std::shared_ptr<FloorStream>> inline_lane, other_lane;
    uint64_t reload_id = 0;
    uint64_t seq = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      inline_lane = streams_[0];
      other_lane = streams_[1];
      reload_id = ++last_reload_id_;
      seq = last_seq_;
      last_seq_ += 2;
    }
    auto events = std::make_shared<std::vector<grpc::ByteBuffer>>();
    for (v1::Phase phase : {v1::PHASE_PREPARING, v1::PHASE_RELOADED}) {
      events->push_back(Serialise(phase, request->name(), reload_id, ++seq, now));
    }
    auto hand_out = [events](const std::vector<std::shared_ptr<FloorStream>>& streams) {
      for (const grpc::ByteBuffer& event : *events) {
        for (const auto& s : streams) s->Offer(event);
      }
    };
    if (!other_lane.empty()) {
      lane_.Post([hand_out, streams = std::move(other_lane)] { hand_out(streams); }, [] {});
    }
    hand_out(inline_lane);
    response->set_reload_id(reload_id);
    response->set_outcome(v1::RELOAD_OUTCOME_RELOADED);
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* context,
                                 const v1::EchoRequest* request,
                                 v1::EchoResponse* response) override {
    response->set_payload(request->payload());
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  void Remove(FloorStream* stream) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& lane : streams_) {
      lane.erase(std::remove_if(lane.begin(), lane.end(),
                                [stream](const auto& s) { return s.get() == stream; }),
                 lane.end());
    }
  }

 private:
  // The event as polyplug-host would fill it for a reload of a bundle, serialised once.
  static grpc::ByteBuffer Serialise(v1::Phase phase, const std::string& bundle, uint64_t reload_id,
                                    uint64_t seq, int64_t now) {
    v1::ReloadPhaseEvent e;
    e.set_host_epoch(1);
    e.set_seq(seq);
    e.set_kind(v1::EVENT_KIND_PHASE);
    e.set_phase(phase);
    e.set_bundle_id(1);
    e.set_bundle_name(bundle);
    e.mutable_bundle_version()->set_major(1);
    e.set_reload_id(reload_id);
    e.set_root_reload_id(reload_id);
    *e.mutable_time() = polyplug::wire::ToProto(absl::FromUnixNanos(now));
    e.set_registry_revision(seq);
    grpc::ByteBuffer out;
    bool own_buffer = false;
    if (!grpc::SerializationTraits<v1::ReloadPhaseEvent>::Serialize(e, &out, &own_buffer).ok()) {
      std::fprintf(stderr, "polyplug-fanout-floor: cannot serialise an event\n");
      std::abort();
    }
    return out;
  }

  std::mutex mu_;
  std::vector<std::shared_ptr<FloorStream>> streams_[2];  // by hand-out lane
  size_t next_lane_ = 0;
  uint64_t last_reload_id_ = 0;
  uint64_t last_seq_ = 0;
  polyplug::host::OperationWorker lane_;  // lane 1; lane 0 is the Reload handler's thread
};

void FloorStream::OnDone() {
  std::shared_ptr<FloorStream> keep = std::move(self_);
  service_->Remove(this);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 || std::string(argv[1]) != "--listen") {
    std::fprintf(stderr, "usage: polyplug-fanout-floor --listen ADDRESS\n");
    return 2;
  }
  // As in polyplug-host: Debian's Abseil checks every absl::Mutex (gRPC's) for lock cycles.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);  // gRPC's threads inherit the mask

  FloorService service;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(argv[2], grpc::InsecureServerCredentials());
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr) {
    std::fprintf(stderr, "polyplug-fanout-floor: cannot listen on %s\n", argv[2]);
    return 1;
  }
  int signal_number = 0;
  sigwait(&stop, &signal_number);
  server->Shutdown(std::chrono::system_clock::now());
  return 0;
}
