#include "polyplug/client/subscription.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <utility>

#include "absl/time/clock.h"
#include "src/connection.h"
#include "wire/wire.h"

namespace polyplug::client {
namespace v1 = host::v1;

namespace {

// Errors that retrying cannot fix: the host refuses this client or this request.
bool IsPermanentError(grpc::StatusCode code) {
  return code == grpc::StatusCode::UNAUTHENTICATED || code == grpc::StatusCode::PERMISSION_DENIED ||
         code == grpc::StatusCode::INVALID_ARGUMENT || code == grpc::StatusCode::UNIMPLEMENTED;
}

// One thing for the handlers, in the order the stream produced it. The reader makes these;
// Deliver() runs the handlers for them, at once (Delivery::kOwnThread) or in Poll().
struct Item {
  enum class Kind {
    kConnection,  // on_connection_changed(status)
    kStopped,     // on_stopped(status)
    kPhase,       // the phase handler of `event`; the cursor moves to the event
    kProgress,    // only moves the cursor (a heartbeat, or an event this client ignores)
    kSnapshot,    // a resync to `snapshot` (its cause is decided when it is delivered)
  };
  Kind kind = Kind::kProgress;
  absl::Status status;
  PhaseEvent event;
  Cursor cursor;
  Resynced snapshot;
};

}  // namespace

struct Subscription::State {
  std::shared_ptr<const internal::Connection> connection;
  PhaseHandlers handlers;
  SubscribeOptions options;
  std::thread thread;

  mutable std::mutex mu;
  std::condition_variable wake;              // the reader's reconnect wait
  std::condition_variable ready;             // kPoll: an item was queued, or the reader ended
  bool stop = false;                         // guarded by mu; no handler may run any more
  grpc::ClientContext* live_call = nullptr;  // guarded by mu; the open stream's context
  std::optional<Cursor> cursor;              // guarded by mu; the last item handled
  bool connected = false;                    // guarded by mu

  // kPoll: what waits for Poll(), at most options.max_pending items.
  std::deque<Item> pending;        // guarded by mu
  bool delivering = false;         // guarded by mu; Poll() took an item and runs its handlers
  std::thread::id polling_thread;  // guarded by mu; the thread inside Poll()'s handlers
  uint64_t dropped = 0;            // guarded by mu
  std::mutex poll_mu;              // serializes Poll() calls

  // Touched by the reader thread only.
  std::optional<Cursor> received;          // the last message read (what a reconnect resumes after)
  bool force_snapshot = false;             // items were dropped: subscribe again from a snapshot
  bool connection_change_dropped = false;  // ...among them an on_connection_changed

  // Touched by the delivering thread only (the reader with kOwnThread, Poll() with kPoll).
  // Quarantined versions (bundle, sha256) already reported.
  std::set<std::pair<std::string, std::string>> quarantine_known;
  // What the handlers were last told about each bundle: loaded (at that state) or not
  // (nullopt). Complete once a snapshot was delivered; before that (a subscription started
  // with resume_after) it holds only the bundles whose events were delivered.
  std::map<std::string, std::optional<BundleState>> told;
  bool told_complete = false;
  size_t handlers_run = 0;  // counts handler calls, for Poll()

  bool Stopped() const {
    std::lock_guard<std::mutex> lock(mu);
    return stop;
  }

  // Calls `handler(args...)` unless it is empty or the subscription is stopping. False
  // when stopping: the item was not handled.
  template <typename Handler, typename... Args>
  bool Dispatch(const Handler& handler, const Args&... args) {
    if (Stopped()) return false;
    if (handler) {
      ++handlers_run;
      handler(args...);
    }
    return true;
  }

  // Moves the cursor past an item once it was handled, so that cursor() never names an
  // event whose handler did not run.
  void SetCursor(Cursor next) {
    std::lock_guard<std::mutex> lock(mu);
    cursor = next;
  }
  std::optional<Cursor> GetCursor() const {
    std::lock_guard<std::mutex> lock(mu);
    return cursor;
  }

  void Run();
  // Turns one message into items; false when the kPoll buffer overflowed (the stream must
  // be dropped and a snapshot fetched).
  bool Handle(const v1::ReloadPhaseEvent& message, Resynced* snapshot);
  // Hands an item over: delivers it at once (kOwnThread) or queues it (kPoll). False when
  // the queue overflowed and was dropped.
  bool Emit(Item item);

  // Runs the handlers of one item. False when the subscription is stopping.
  bool Deliver(Item& item);
  bool DeliverSnapshot(Resynced& resynced);
  bool DispatchPhase(const PhaseEvent& event);
  void Tell(const PhaseEvent& event);
};

void Subscription::State::Run() {
  const ConnectOptions& connect = connection->options;
  absl::Duration backoff = connect.reconnect_initial_backoff;
  std::mt19937_64 jitter_source(std::random_device{}());
  // A strict cursor applies until a stream was established with it.
  bool strict = options.strict_resume && options.resume_after.has_value();
  // The last problem reported through on_connection_changed: report a failure once, not on
  // every retry.
  bool reported_down = false;
  while (true) {
    grpc::ClientContext context;
    connection->PrepareStream(context);
    // Once a failure was reported, wait for the host instead of failing fast: a call that
    // waits keeps gRPC polling the reconnect, which otherwise proceeds only when the
    // client channel's backup poller runs (every 5 s in gRPC 1.51).
    context.set_wait_for_ready(reported_down);
    v1::SubscribeReloadPhasesRequest request;
    for (const std::string& name : options.bundle_names) request.add_bundle_names(name);
    const absl::Duration heartbeat = std::max(options.heartbeat, absl::Milliseconds(100));
    *request.mutable_heartbeat_interval() = wire::ToProto(heartbeat);
    if (received.has_value() && !force_snapshot) {
      request.mutable_resume_after()->set_host_epoch(received->host_epoch);
      request.mutable_resume_after()->set_seq(received->seq);
      // Without `strict`, a cursor the host cannot honour gets the snapshot instead.
      request.set_include_snapshot(!strict);
    } else {
      request.set_include_snapshot(true);
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      if (stop) return;
      live_call = &context;
    }
    std::unique_ptr<grpc::ClientReader<v1::ReloadPhaseEvent>> reader =
        connection->stub->SubscribeReloadPhases(&context, request);
    // The host sends its initial metadata as soon as it accepted the stream.
    reader->WaitForInitialMetadata();
    const bool established = context.GetServerInitialMetadata().count(wire::kHostEpochMetadata) > 0;
    bool overflowed = false;  // the kPoll queue overflowed: drop this stream, resync
    if (established) {
      {
        std::lock_guard<std::mutex> lock(mu);
        connected = true;
      }
      backoff = connect.reconnect_initial_backoff;
      strict = false;
      // A reconnect made only because the buffer overflowed is not news, unless the
      // application missed a connection change in what was dropped.
      const bool report = !force_snapshot || connection_change_dropped;
      reported_down = false;
      connection_change_dropped = false;
      if (report) {
        Item up;
        up.kind = Item::Kind::kConnection;
        up.status = absl::OkStatus();
        // An overflow here drops the stream before it delivered anything.
        if (!Emit(std::move(up))) overflowed = true;
      }
    }
    Resynced snapshot;
    v1::ReloadPhaseEvent message;
    if (overflowed) context.TryCancel();
    while (!overflowed && reader->Read(&message)) {
      if (Stopped()) break;
      if (!Handle(message, &snapshot)) {
        overflowed = true;
        context.TryCancel();
        break;
      }
    }
    const grpc::Status status = reader->Finish();
    {
      std::lock_guard<std::mutex> lock(mu);
      live_call = nullptr;
      connected = false;
      if (stop) return;
    }
    if (overflowed) continue;  // at once, from a snapshot (force_snapshot is set)
    absl::Status why = connection->ToStatus(status, context, absl::ZeroDuration());
    if (why.ok()) why = absl::UnavailableError("the host ended the stream");
    if (IsPermanentError(status.error_code()) ||
        (status.error_code() == grpc::StatusCode::OUT_OF_RANGE && !established && strict)) {
      Item stopped;
      stopped.kind = Item::Kind::kStopped;
      stopped.status = why;
      Emit(std::move(stopped));
      return;
    }
    if (!reported_down) {
      reported_down = true;
      Item down;
      down.kind = Item::Kind::kConnection;
      down.status = why;
      Emit(std::move(down));
    }
    // A stream the host ended because this subscriber fell behind resumes at once (from
    // the journal, or with a snapshot); everything else waits out the backoff.
    if (established && status.error_code() == grpc::StatusCode::OUT_OF_RANGE) continue;
    std::uniform_real_distribution<double> jitter(0.5, 1.0);
    const absl::Duration wait = backoff * jitter(jitter_source);
    backoff = std::min(backoff * 2, connect.reconnect_max_backoff);
    std::unique_lock<std::mutex> lock(mu);
    wake.wait_for(lock, absl::ToChronoNanoseconds(wait), [this] { return stop; });
    if (stop) return;
  }
}

bool Subscription::State::Handle(const v1::ReloadPhaseEvent& message, Resynced* snapshot) {
  switch (message.kind()) {
    case v1::EVENT_KIND_SNAPSHOT:
      if (message.phase() == v1::PHASE_FAILED) {
        snapshot->quarantined.push_back(PhaseEventFromProto(message));
        return true;
      }
      snapshot->bundles.push_back(
          {message.bundle_id(),
           message.bundle_name(),
           {message.bundle_version().major(), message.bundle_version().minor(),
            message.bundle_version().patch()},
           message.artifact_sha256()});
      return true;
    case v1::EVENT_KIND_SNAPSHOT_END: {
      Item item;
      item.kind = Item::Kind::kSnapshot;
      item.snapshot = std::move(*snapshot);
      *snapshot = Resynced();
      item.snapshot.host_epoch = message.host_epoch();
      item.snapshot.seq = message.seq();
      item.snapshot.registry_revision = message.registry_revision();
      std::sort(item.snapshot.bundles.begin(), item.snapshot.bundles.end(),
                [](const BundleState& a, const BundleState& b) { return a.name < b.name; });
      received = Cursor{message.host_epoch(), message.seq()};
      force_snapshot = false;
      return Emit(std::move(item));
    }
    case v1::EVENT_KIND_PROGRESS: {
      if (!received || received->host_epoch != message.host_epoch() ||
          message.seq() <= received->seq) {
        return true;
      }
      received = Cursor{message.host_epoch(), message.seq()};
      Item item;
      item.kind = Item::Kind::kProgress;
      item.cursor = *received;
      return Emit(std::move(item));
    }
    case v1::EVENT_KIND_PHASE: {
      // The host resumes after the cursor, so an event at or before it (or from another
      // epoch without a snapshot first) would be a duplicate or a bug: never deliver it.
      if (received &&
          (received->host_epoch != message.host_epoch() || message.seq() <= received->seq)) {
        return true;
      }
      received = Cursor{message.host_epoch(), message.seq()};
      Item item;
      item.cursor = *received;
      // A phase this client does not know (from a newer host) is passed over, not guessed.
      if (message.phase() >= v1::PHASE_PREPARING && message.phase() <= v1::PHASE_LOADED) {
        item.kind = Item::Kind::kPhase;
        item.event = PhaseEventFromProto(message);
      }
      return Emit(std::move(item));
    }
    default:
      return true;
  }
}

bool Subscription::State::Emit(Item item) {
  if (options.delivery == Delivery::kOwnThread) {
    Deliver(item);
    return true;
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    if (stop) return true;
    if (item.kind == Item::Kind::kProgress) {
      // A bookmark needs no handler: with nothing before it, it is handled now.
      if (pending.empty() && !delivering) {
        if (cursor && cursor->host_epoch == item.cursor.host_epoch &&
            item.cursor.seq > cursor->seq) {
          cursor = item.cursor;
        }
        return true;
      }
      if (!pending.empty() && pending.back().kind == Item::Kind::kProgress) {
        pending.back() = std::move(item);
        return true;
      }
    }
    if (pending.size() >= std::max<size_t>(options.max_pending, 2) &&
        item.kind != Item::Kind::kStopped) {
      // The application fell behind: drop everything and start over from a snapshot.
      dropped += pending.size() + 1;
      for (const Item& lost : pending) {
        if (lost.kind == Item::Kind::kConnection) connection_change_dropped = true;
      }
      if (item.kind == Item::Kind::kConnection) connection_change_dropped = true;
      pending.clear();
      force_snapshot = true;
      return false;
    }
    pending.push_back(std::move(item));
  }
  ready.notify_all();
  if (options.on_ready) options.on_ready();
  return true;
}

bool Subscription::State::Deliver(Item& item) {
  switch (item.kind) {
    case Item::Kind::kConnection:
      return Dispatch(handlers.on_connection_changed, item.status);
    case Item::Kind::kStopped: {
      const bool ran = Dispatch(handlers.on_stopped, item.status);
      std::lock_guard<std::mutex> lock(mu);
      stop = true;
      return ran;
    }
    case Item::Kind::kProgress: {
      std::lock_guard<std::mutex> lock(mu);
      if (stop) return false;
      if (cursor && cursor->host_epoch == item.cursor.host_epoch && item.cursor.seq > cursor->seq) {
        cursor = item.cursor;
      }
      return true;
    }
    case Item::Kind::kPhase:
      if (!DispatchPhase(item.event)) return false;
      Tell(item.event);
      SetCursor(item.cursor);
      return true;
    case Item::Kind::kSnapshot:
      return DeliverSnapshot(item.snapshot);
  }
  return true;
}

bool Subscription::State::DeliverSnapshot(Resynced& resynced) {
  const std::optional<Cursor> handled = GetCursor();
  if (!handled.has_value()) {
    resynced.cause = ResyncCause::kInitial;
  } else if (handled->host_epoch != resynced.host_epoch) {
    resynced.cause = ResyncCause::kHostRestarted;
    if (!Dispatch(handlers.on_host_restarted,
                  HostRestarted{handled->host_epoch, resynced.host_epoch})) {
      return false;
    }
  } else {
    resynced.cause = ResyncCause::kFellBehind;
  }
  if (options.synthesize_transitions && resynced.cause != ResyncCause::kInitial) {
    // The transitions the handlers missed, relative to what they were told: unloadings
    // first, then loads and reloads, each in name order.
    PhaseEvent base;
    base.host_epoch = resynced.host_epoch;
    base.seq = resynced.seq;
    base.registry_revision = resynced.registry_revision;
    base.timestamp_unix_nanos = absl::GetCurrentTimeNanos();
    base.synthetic = true;
    std::map<std::string, const BundleState*> now;
    for (const BundleState& b : resynced.bundles) now[b.name] = &b;
    std::vector<PhaseEvent> missed;
    for (const auto& [name, state] : told) {
      if (!state.has_value() || now.contains(name)) continue;
      PhaseEvent e = base;
      e.phase = Phase::kUnloading;
      e.bundle_id = state->id;
      e.bundle_name = state->name;
      e.bundle_version = state->version;
      e.artifact_sha256 = state->artifact_sha256;
      missed.push_back(std::move(e));
    }
    for (const BundleState& b : resynced.bundles) {
      auto was = told.find(b.name);
      std::optional<Phase> phase;
      if (was == told.end()) {
        if (told_complete) phase = Phase::kLoaded;  // else: never heard of it, unknown
      } else if (!was->second.has_value()) {
        phase = Phase::kLoaded;
      } else if (was->second->version != b.version ||
                 (!was->second->artifact_sha256.empty() && !b.artifact_sha256.empty() &&
                  was->second->artifact_sha256 != b.artifact_sha256)) {
        phase = Phase::kReloaded;
      }
      if (!phase) continue;
      PhaseEvent e = base;
      e.phase = *phase;
      e.bundle_id = b.id;
      e.bundle_name = b.name;
      e.bundle_version = b.version;
      e.artifact_sha256 = b.artifact_sha256;
      missed.push_back(std::move(e));
    }
    for (const PhaseEvent& e : missed) {
      if (!DispatchPhase(e)) return false;
      Tell(e);
    }
  }
  told.clear();
  for (const BundleState& b : resynced.bundles) told[b.name] = b;
  told_complete = true;
  if (!Dispatch(handlers.on_resynced, resynced)) return false;
  SetCursor({resynced.host_epoch, resynced.seq});
  // A version that crashed the host, announced by the restarted host: the FAILED
  // event of the reload or call that crashed, which the old host could not send; and a
  // bundle the restart could not bring back. What the snapshot lists is all that is known:
  // a failure that went away and comes back later is told again.
  std::set<std::pair<std::string, std::string>> listed;
  for (const PhaseEvent& failed : resynced.quarantined) {
    const std::pair<std::string, std::string> key{failed.bundle_name, failed.artifact_sha256};
    listed.insert(key);
    if (!quarantine_known.contains(key) && resynced.cause == ResyncCause::kHostRestarted &&
        !Dispatch(handlers.on_failed, failed)) {
      return false;
    }
  }
  quarantine_known = std::move(listed);
  return true;
}

// Records what a delivered event told the handlers about its bundle.
void Subscription::State::Tell(const PhaseEvent& event) {
  switch (event.phase) {
    case Phase::kLoaded:
    case Phase::kReloaded:
      told[event.bundle_name] = BundleState{event.bundle_id, event.bundle_name,
                                            event.bundle_version, event.artifact_sha256};
      return;
    case Phase::kUnloading:
      told[event.bundle_name] = std::nullopt;
      return;
    case Phase::kPreparing:
    case Phase::kFailed:
      return;  // the bundle's live version did not change
  }
}

bool Subscription::State::DispatchPhase(const PhaseEvent& event) {
  switch (event.phase) {
    case Phase::kPreparing:
      return Dispatch(handlers.on_preparing, event);
    case Phase::kReloaded:
      return Dispatch(handlers.on_reloaded, event);
    case Phase::kFailed:
      return Dispatch(handlers.on_failed, event);
    case Phase::kUnloading:
      return Dispatch(handlers.on_unloading, event);
    case Phase::kLoaded:
      return Dispatch(handlers.on_loaded, event);
  }
  return false;
}

Subscription::Subscription(std::shared_ptr<const internal::Connection> connection,
                           PhaseHandlers handlers, SubscribeOptions options)
    : state_(std::make_shared<State>()) {
  state_->connection = std::move(connection);
  state_->handlers = std::move(handlers);
  state_->options = std::move(options);
  state_->cursor = state_->options.resume_after;
  state_->received = state_->options.resume_after;
  state_->thread = std::thread([state = state_] { state->Run(); });
}

Subscription::~Subscription() {
  bool from_poll = false;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->stop = true;
    if (state_->live_call != nullptr) state_->live_call->TryCancel();
    from_poll = state_->polling_thread == std::this_thread::get_id();
  }
  state_->wake.notify_all();
  state_->ready.notify_all();
  if (std::this_thread::get_id() == state_->thread.get_id()) {
    state_->thread.detach();  // destroyed from a handler: the thread ends after it returns
  } else {
    state_->thread.join();
  }
  // A Poll() on another thread may be in a handler: it sees `stop` once that returns.
  // Called from a handler that Poll() runs, Poll() holds its own reference to the state.
  if (!from_poll) {
    std::lock_guard<std::mutex> wait_for_poll(state_->poll_mu);
  }
}

size_t Subscription::Poll() {
  // A handler may destroy this Subscription: hold the state, never touch `this` again.
  return PollState(state_);
}

size_t Subscription::PollState(std::shared_ptr<State> state) {
  if (state->options.delivery != Delivery::kPoll) return 0;
  {
    std::lock_guard<std::mutex> lock(state->mu);
    if (state->polling_thread == std::this_thread::get_id()) return 0;  // from a handler
  }
  std::lock_guard<std::mutex> poll_lock(state->poll_mu);
  size_t budget = 0;
  {
    std::lock_guard<std::mutex> lock(state->mu);
    budget = state->pending.size();
    state->polling_thread = std::this_thread::get_id();
  }
  state->handlers_run = 0;
  while (budget-- > 0) {
    Item item;
    {
      std::lock_guard<std::mutex> lock(state->mu);
      if (state->stop || state->pending.empty()) break;
      item = std::move(state->pending.front());
      state->pending.pop_front();
      state->delivering = true;
    }
    const bool go_on = state->Deliver(item);
    {
      std::lock_guard<std::mutex> lock(state->mu);
      state->delivering = false;
    }
    if (!go_on) break;
  }
  std::lock_guard<std::mutex> lock(state->mu);
  state->polling_thread = std::thread::id();
  return state->handlers_run;
}

bool Subscription::WaitReady(absl::Duration timeout) { return WaitState(*state_, timeout); }

bool Subscription::WaitState(State& state, absl::Duration timeout) {
  if (state.options.delivery != Delivery::kPoll) return false;
  auto done = [&state] { return state.stop || !state.pending.empty(); };
  std::unique_lock<std::mutex> lock(state.mu);
  if (timeout == absl::InfiniteDuration()) {
    state.ready.wait(lock, done);
  } else {
    state.ready.wait_until(lock, absl::ToChronoTime(absl::Now() + timeout), done);
  }
  return !state.stop && !state.pending.empty();
}

size_t Subscription::PollFor(absl::Duration timeout) {
  // The state, not `this`: another thread may destroy the Subscription while this waits.
  std::shared_ptr<State> state = state_;
  if (!WaitState(*state, timeout)) return 0;
  return PollState(std::move(state));
}

size_t Subscription::pending() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->pending.size();
}

uint64_t Subscription::dropped() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->dropped;
}

std::optional<Cursor> Subscription::cursor() const { return state_->GetCursor(); }

bool Subscription::connected() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->connected;
}

}  // namespace polyplug::client
