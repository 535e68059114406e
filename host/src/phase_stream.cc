#include "host/src/phase_stream.h"

#include <grpcpp/alarm.h>
#include <grpcpp/impl/codegen/proto_utils.h>  // SerializationTraits of messages

#include <algorithm>
#include <deque>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "host/src/bundle_listing.h"
#include "host/src/status_mapping.h"
#include "polyplug/core/error.h"
#include "wire/wire.h"

namespace polyplug::host {
namespace {

// `event` in its wire form; a copy of the result shares its bytes.
grpc::ByteBuffer Serialise(const v1::ReloadPhaseEvent& event) {
  grpc::ByteBuffer out;
  bool own_buffer = false;
  // Serialising a message that is complete cannot fail.
  (void)grpc::SerializationTraits<v1::ReloadPhaseEvent>::Serialize(event, &out, &own_buffer);
  return out;
}

grpc::ByteBuffer Serialise(const core::PhaseEvent& event) {
  v1::ReloadPhaseEvent out;
  ToProto(event, &out);
  return Serialise(out);
}

}  // namespace

// One SubscribeReloadPhases call. Owns itself from Open until OnDone; the hub holds a
// shared_ptr so that a concurrent Offer never touches a freed stream.
class PhaseStream : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  PhaseStream(PhaseHub* hub, grpc::CallbackServerContext* context,
              v1::SubscribeReloadPhasesRequest request)
      : hub_(hub), context_(context), request_(std::move(request)) {
    names_.insert(request_.bundle_names().begin(), request_.bundle_names().end());
    if (request_.has_heartbeat_interval()) {
      const absl::Duration asked = wire::FromProto(request_.heartbeat_interval());
      heartbeat_ = asked == absl::ZeroDuration() ? asked : std::max(absl::Milliseconds(100), asked);
    }
  }

  void SetSelf(std::shared_ptr<PhaseStream> self) { self_ = std::move(self); }

  // The hand-out lane that offers this stream its live events; set once, under the hub's
  // lock, before the hub lists the stream.
  void AssignLane(size_t lane) { lane_ = lane; }
  size_t lane() const { return lane_; }
  bool wants_heartbeats() const { return heartbeat_ != absl::ZeroDuration(); }

  // Computes the backlog or snapshot. Holds the stream lock throughout, so live events
  // offered meanwhile wait and are de-duplicated by seq afterwards.
  void Start() {
    std::lock_guard<std::mutex> lock(mu_);
    started_ = true;
    core::Runtime& runtime = hub_->runtime_;
    const uint64_t epoch = runtime.host_epoch();
    if (request_.has_resume_after()) {
      const v1::Cursor& cursor = request_.resume_after();
      if (cursor.host_epoch() != epoch) {
        if (request_.include_snapshot()) {
          AnnounceLocked();
          return SnapshotLocked();
        }
        return FinishLocked(ToGrpcStatus(
            core::MakeError(
                core::ErrorReason::kCursorOutOfRange,
                absl::StrCat("cursor is from host epoch ", cursor.host_epoch(),
                             " but this host's epoch is ", epoch,
                             " (the host restarted); resubscribe with include_snapshot, or ",
                             "resume after seq ", EarliestMinusOne(), " of epoch ", epoch,
                             " (earliest available seq ", runtime.journal().earliest_seq(), ")")),
            context_, ResumeMetadata()));
      }
      auto backlog = runtime.journal().ReadAfter(cursor.seq());
      if (!backlog.ok()) {
        if (backlog.status().code() == absl::StatusCode::kOutOfRange &&
            request_.include_snapshot()) {
          AnnounceLocked();
          return SnapshotLocked();
        }
        return FinishLocked(ToGrpcStatus(backlog.status(), context_, ResumeMetadata()));
      }
      AnnounceLocked();
      last_covered_seq_ = cursor.seq();
      // The backlog is bounded by the journal; only what queues up behind it counts
      // against the subscriber's allowance.
      backlog_allowance_ = backlog->size();
      for (const core::PhaseEvent& e : *backlog) EnqueuePhaseLocked(e, nullptr);
      return WriteNextLocked();
    }
    AnnounceLocked();
    if (awaits_operation()) return;  // EndWithOperation sends what there is to send
    if (request_.include_snapshot()) return SnapshotLocked();
    last_covered_seq_ = runtime.journal().last_seq();
    if (request_.until_terminal_of_reload() != 0) ReplayReloadLocked();
    WriteNextLocked();
  }

  // A stream that waits for the end of a reload that started (or ended) before it did gets
  // that reload's events from the journal first, so that it cannot miss its end.
  void ReplayReloadLocked() {
    const core::EventJournal& journal = hub_->runtime_.journal();
    const uint64_t now = last_covered_seq_;
    const uint64_t earliest = journal.earliest_seq();
    auto events = journal.ReadAfter(earliest > 0 ? earliest - 1 : 0);
    if (!events.ok()) return;
    for (const core::PhaseEvent& e : *events) {
      if (e.seq > now) break;  // live from here: Offer() delivers it
      if (e.root_reload_id == request_.until_terminal_of_reload()) EnqueuePhaseLocked(e, nullptr);
    }
    last_covered_seq_ = now;
  }

  // Sends the initial metadata at once, carrying the host epoch, so that a client knows the
  // stream is established before the first event (which may be long in coming).
  void AnnounceLocked() {
    context_->AddInitialMetadata(wire::kHostEpochMetadata,
                                 absl::StrCat(hub_->runtime_.host_epoch()));
    StartSendInitialMetadata();
  }

  // A live journal event, `bytes` its wire form. Never blocks on the network. An event
  // offered before Start() (the stream was just added) is already in the journal, which
  // Start() reads.
  void Offer(const core::PhaseEvent& event, const grpc::ByteBuffer& bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!started_ || finishing_ || awaits_operation() || event.seq <= last_covered_seq_) return;
    EnqueuePhaseLocked(event, &bytes);
    WriteNextLocked();
  }

  void MaybeHeartbeat(absl::Time now) {
    std::lock_guard<std::mutex> lock(mu_);
    if (heartbeat_ == absl::ZeroDuration() || finishing_ || writing_ || !queue_.empty()) return;
    if (now - last_write_ < heartbeat_) return;
    v1::ReloadPhaseEvent progress;
    progress.set_host_epoch(hub_->runtime_.host_epoch());
    progress.set_seq(last_covered_seq_);
    progress.set_kind(v1::EVENT_KIND_PROGRESS);
    progress.set_registry_revision(hub_->runtime_.registry().revision());
    queue_.push_back({Serialise(progress), false, 0});
    WriteNextLocked();
  }

  // Ends the stream with `status` (dropping what is queued) as soon as no write is in flight.
  void Terminate(grpc::Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    if (finishing_) return;
    queue_.clear();
    FinishLocked(std::move(status));
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok && !finishing_) {  // the client is gone
      queue_.clear();
      pending_finish_ = grpc::Status(grpc::StatusCode::CANCELLED, "stream broken");
      finishing_ = true;
    }
    WriteNextLocked();
  }

  // until_request_done: the operation is done, with `status` and `events`.
  void EndWithOperation(const grpc::Status& status,
                        const std::vector<v1::ReloadPhaseEvent>& events) {
    std::lock_guard<std::mutex> lock(mu_);
    if (finishing_) return;
    if (!status.ok()) {
      if (const std::string token = ReasonTokenIn(status); !token.empty()) {
        context_->AddTrailingMetadata(wire::kReasonTrailer, token);
      }
      return FinishLocked(status);
    }
    for (const v1::ReloadPhaseEvent& event : events) {
      if (!Wanted(event.bundle_name())) continue;
      queue_.push_back({Serialise(event), true, event.seq()});
      if (request_.max_events() != 0 && ++phase_events_ >= request_.max_events()) break;
    }
    FinishLocked(grpc::Status::OK);
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (finish_called_) return;
    queue_.clear();
    pending_finish_ = grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client");
    finishing_ = true;
    WriteNextLocked();
  }

  void OnDone() override {
    std::shared_ptr<PhaseStream> keep = std::move(self_);
    hub_->Remove(this);
    // `keep` releases the last reference when this returns.
  }

 private:
  // Where a cursor that is out of range can resume, for machines: google.rpc.ErrorInfo
  // metadata of the OUT_OF_RANGE error (as etcd's compact_revision).
  std::map<std::string, std::string> ResumeMetadata() const {
    const core::Runtime& runtime = hub_->runtime_;
    return {{"host_epoch", absl::StrCat(runtime.host_epoch())},
            {"earliest_seq", absl::StrCat(runtime.journal().earliest_seq())},
            {"resume_after_seq", absl::StrCat(EarliestMinusOne())}};
  }

  bool awaits_operation() const { return !request_.until_request_done().empty(); }

  uint64_t EarliestMinusOne() const {
    const uint64_t earliest = hub_->runtime_.journal().earliest_seq();
    return earliest == 0 ? hub_->runtime_.journal().last_seq() : earliest - 1;
  }

  bool Wanted(const std::string& bundle_name) const {
    return names_.empty() || names_.contains(bundle_name);
  }

  void SnapshotLocked() {
    core::Runtime& runtime = hub_->runtime_;
    const CrashRecovery* recovery = hub_->options_.recovery;
    BundleListing listing = ListAtJournalPosition(runtime, recovery);
    const uint64_t seq = listing.seq;
    const std::vector<core::BundleInfo>& bundles = listing.bundles;
    const std::vector<core::PhaseEvent>& not_restored = listing.not_restored;
    const uint64_t revision = runtime.registry().revision();
    for (const core::BundleInfo& b : bundles) {
      if (!Wanted(b.name)) continue;
      v1::ReloadPhaseEvent e;
      e.set_host_epoch(runtime.host_epoch());
      e.set_seq(seq);
      e.set_kind(v1::EVENT_KIND_SNAPSHOT);
      e.set_phase(v1::PHASE_LOADED);
      e.set_bundle_id(b.id);
      e.set_bundle_name(b.name);
      ToProto(b.version, e.mutable_bundle_version());
      e.set_registry_revision(revision);
      e.set_artifact_sha256(b.artifact_sha256);
      queue_.push_back({Serialise(e), false, 0});
    }
    // Versions held back because they crashed the host are part of its state too.
    if (recovery) {
      for (const QuarantineEntry& entry : recovery->quarantined()) {
        if (!Wanted(entry.bundle_name)) continue;
        v1::ReloadPhaseEvent e;
        ToProto(CrashRecovery::EventOf(entry), &e);
        e.set_host_epoch(runtime.host_epoch());
        e.set_seq(seq);
        e.set_kind(v1::EVENT_KIND_SNAPSHOT);
        e.set_registry_revision(revision);
        queue_.push_back({Serialise(e), false, 0});
      }
      // And the bundles the restart could not bring back, with their reason.
      for (const core::PhaseEvent& left_out : not_restored) {
        if (!Wanted(left_out.bundle_name)) continue;
        v1::ReloadPhaseEvent e;
        ToProto(left_out, &e);
        e.set_host_epoch(runtime.host_epoch());
        e.set_seq(seq);
        e.set_kind(v1::EVENT_KIND_SNAPSHOT);
        e.set_registry_revision(revision);
        queue_.push_back({Serialise(e), false, 0});
      }
    }
    v1::ReloadPhaseEvent end;
    end.set_host_epoch(runtime.host_epoch());
    end.set_seq(seq);
    end.set_kind(v1::EVENT_KIND_SNAPSHOT_END);
    end.set_registry_revision(revision);
    queue_.push_back({Serialise(end), false, 0});
    last_covered_seq_ = seq;
    WriteNextLocked();
  }

  // `bytes`: the event's wire form when the caller has it (live events), else null.
  void EnqueuePhaseLocked(const core::PhaseEvent& event, const grpc::ByteBuffer* bytes) {
    last_covered_seq_ = event.seq;
    if (finishing_ || !Wanted(event.bundle_name)) return;
    if (queue_.size() >= hub_->options_.max_queued_events + backlog_allowance_) {
      queue_.clear();
      FinishLocked(ToGrpcStatus(
          core::MakeError(core::ErrorReason::kSubscriberFellBehind,
                          absl::StrCat("subscriber fell behind: ", hub_->options_.max_queued_events,
                                       " events were waiting to be sent; resume after seq ",
                                       last_written_seq_, " of epoch ", event.host_epoch)),
          context_));
      return;
    }
    queue_.push_back({bytes != nullptr ? *bytes : Serialise(event), true, event.seq});
    ++phase_events_;
    const bool terminal = event.IsTerminal();
    if ((request_.until_terminal_of_reload() != 0 && terminal &&
         event.reload_id == request_.until_terminal_of_reload()) ||
        // A primary reload's end; not a FAILED that no reload made (--watch's report of a
        // directory it cannot load, a bundle a restart left out: reload_id 0).
        (request_.until_next_terminal() && terminal && event.parent_reload_id == 0 &&
         event.reload_id != 0) ||
        (request_.max_events() != 0 && phase_events_ >= request_.max_events())) {
      pending_finish_ = grpc::Status::OK;
      finishing_ = true;
    }
  }

  void FinishLocked(grpc::Status status) {
    pending_finish_ = std::move(status);
    finishing_ = true;
    WriteNextLocked();
  }

  // Starts the next write, or finishes once the queue is drained. One write in flight.
  void WriteNextLocked() {
    if (writing_ || finish_called_) return;
    if (!queue_.empty()) {
      current_ = std::move(queue_.front().bytes);
      if (queue_.front().is_phase) last_written_seq_ = queue_.front().seq;
      queue_.pop_front();
      writing_ = true;
      last_write_ = absl::Now();
      StartWrite(&current_);
      return;
    }
    if (pending_finish_) {
      finish_called_ = true;
      Finish(*pending_finish_);
    }
  }

  PhaseHub* const hub_;
  grpc::CallbackServerContext* const context_;
  size_t lane_ = 0;
  const v1::SubscribeReloadPhasesRequest request_;
  std::set<std::string> names_;
  absl::Duration heartbeat_ = absl::ZeroDuration();

  std::mutex mu_;
  bool started_ = false;
  // An event on its way: its wire form, and whether it is a phase event (with its seq).
  struct Outgoing {
    grpc::ByteBuffer bytes;
    bool is_phase = false;
    uint64_t seq = 0;
  };
  std::deque<Outgoing> queue_;
  grpc::ByteBuffer current_;  // the message being written; must outlive the write
  bool writing_ = false;
  bool finishing_ = false;  // no more events are accepted
  bool finish_called_ = false;
  std::optional<grpc::Status> pending_finish_;
  uint64_t last_covered_seq_ = 0;  // journal position this stream has accounted for
  uint64_t last_written_seq_ = 0;
  uint64_t phase_events_ = 0;
  size_t backlog_allowance_ = 0;
  absl::Time last_write_ = absl::Now();
  std::shared_ptr<PhaseStream> self_;
};

namespace {

// A live event and its wire form, shared by every stream that is offered it.
struct LiveEvent {
  core::PhaseEvent event;
  grpc::ByteBuffer bytes;
};
using StreamList = std::vector<std::shared_ptr<PhaseStream>>;

void HandOut(const std::vector<LiveEvent>& batch, const StreamList& streams) {
  for (const LiveEvent& e : batch) {
    for (const auto& s : streams) s->Offer(e.event, e.bytes);
  }
}

}  // namespace

PhaseHub::PhaseHub(core::Runtime& runtime, PhaseHubOptions options)
    : runtime_(runtime), options_(options) {
  size_t lanes = options_.handout_lanes;
  if (lanes == 0) lanes = std::clamp<size_t>(std::thread::hardware_concurrency(), 1, 4);
  for (size_t i = 1; i < lanes; ++i) lanes_.push_back(std::make_unique<OperationWorker>());
  heartbeat_thread_ = std::thread([this] { HeartbeatLoop(); });
}

PhaseHub::~PhaseHub() { Shutdown(); }

void PhaseHub::OperationStream::End(const grpc::Status& status,
                                    const std::vector<v1::ReloadPhaseEvent>& events) const {
  if (std::shared_ptr<PhaseStream> stream = stream_.lock())
    stream->EndWithOperation(status, events);
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* PhaseHub::Open(grpc::CallbackServerContext* context,
                                                           v1::SubscribeReloadPhasesRequest request,
                                                           OperationStream* ends) {
  auto stream = std::make_shared<PhaseStream>(this, context, std::move(request));
  stream->SetSelf(stream);
  if (ends != nullptr) ends->stream_ = stream;
  std::optional<grpc::Status> refusal;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shut_down_) {
      refusal = grpc::Status(grpc::StatusCode::UNAVAILABLE, "polyplug-host is shutting down");
    } else if (streams_.size() >= options_.max_subscribers) {
      refusal = grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                             absl::StrCat("too many subscribers (limit ", options_.max_subscribers,
                                          ", see --max-subscribers)"));
    } else {
      stream->AssignLane(next_lane_++ % (lanes_.size() + 1));
      streams_.push_back(stream);
      if (stream->wants_heartbeats() && heartbeat_streams_++ == 0) heartbeat_cv_.notify_all();
    }
  }
  if (refusal) {
    stream->Terminate(*refusal);
  } else {
    stream->Start();
  }
  return stream.get();
}

void PhaseHub::Deliver(const core::PhaseEvent& event) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shut_down_ || streams_.empty()) return;
    undelivered_.push_back(event);
    if (drain_scheduled_) return;
    drain_scheduled_ = true;
  }
  // An alarm already due runs its callback on gRPC's executor at once (one due "now" is
  // rounded up to the next millisecond and waits for gRPC's timer). The alarm owns itself:
  // its callback deletes it, and gRPC keeps the alarm's state until the callback returns.
  auto* alarm = new grpc::Alarm;
  alarm->Set(gpr_inf_past(GPR_CLOCK_MONOTONIC), [this, alarm](bool) {
    Drain();
    delete alarm;
  });
}

void PhaseHub::Drain() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!undelivered_.empty()) {
    auto batch = std::make_shared<std::vector<LiveEvent>>();
    batch->reserve(undelivered_.size());
    for (core::PhaseEvent& event : undelivered_) batch->push_back({std::move(event), {}});
    undelivered_.clear();
    std::vector<StreamList> by_lane(lanes_.size() + 1);
    for (const auto& s : streams_) by_lane[s->lane()].push_back(s);
    lock.unlock();
    for (LiveEvent& e : *batch) e.bytes = Serialise(e.event);  // once for every stream
    for (size_t lane = 1; lane < by_lane.size(); ++lane) {
      if (by_lane[lane].empty()) continue;
      // At shutdown what a lane still holds is dropped: every stream is ending anyway.
      lanes_[lane - 1]->Post(
          [batch, streams = std::move(by_lane[lane])] { HandOut(*batch, streams); }, [] {});
    }
    HandOut(*batch, by_lane[0]);
    lock.lock();
  }
  drain_scheduled_ = false;
  drained_cv_.notify_all();
}

void PhaseHub::Remove(PhaseStream* stream) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = std::find_if(streams_.begin(), streams_.end(),
                         [stream](const auto& s) { return s.get() == stream; });
  if (it == streams_.end()) return;  // refused, never listed
  if (stream->wants_heartbeats()) --heartbeat_streams_;
  streams_.erase(it);
}

void PhaseHub::Shutdown() {
  std::vector<std::shared_ptr<PhaseStream>> streams;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (shut_down_) return;
    shut_down_ = true;
    // A scheduled drain still runs (the streams are open until Terminate below); after
    // it, nothing refers to this hub from gRPC's threads.
    drained_cv_.wait(lock, [this] { return !drain_scheduled_; });
    streams = streams_;
  }
  heartbeat_cv_.notify_all();
  if (heartbeat_thread_.joinable()) heartbeat_thread_.join();
  for (const auto& lane : lanes_) lane->Shutdown();  // no lane offers events any more
  for (const auto& s : streams) {
    s->Terminate(grpc::Status(grpc::StatusCode::UNAVAILABLE, "polyplug-host is shutting down"));
  }
}

size_t PhaseHub::subscriber_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return streams_.size();
}

void PhaseHub::HeartbeatLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!shut_down_) {
    // Asleep while no stream asks for heartbeats: an idle host does not wake every 50 ms.
    if (heartbeat_streams_ == 0) {
      heartbeat_cv_.wait(lock, [this] { return shut_down_ || heartbeat_streams_ != 0; });
    } else {
      heartbeat_cv_.wait_for(lock, std::chrono::milliseconds(50));
    }
    if (shut_down_) break;
    StreamList streams;
    for (const auto& s : streams_) {
      if (s->wants_heartbeats()) streams.push_back(s);
    }
    lock.unlock();
    const absl::Time now = absl::Now();
    for (const auto& s : streams) s->MaybeHeartbeat(now);
    lock.lock();
  }
}

}  // namespace polyplug::host
