#include "polyplug/client/subscription.h"

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <utility>

#include "src/connection.h"
#include "wire/wire.h"

namespace polyplug::client {
namespace v1 = host::v1;

struct Subscription::State {
  std::shared_ptr<const internal::Connection> connection;
  PhaseHandlers handlers;
  SubscribeOptions options;
  std::thread thread;

  mutable std::mutex mu;
  std::condition_variable wake;
  bool stop = false;                         // guarded by mu
  grpc::ClientContext* live_call = nullptr;  // guarded by mu; the open stream's context
  std::optional<Cursor> cursor;              // guarded by mu
  bool connected = false;                    // guarded by mu
  // Quarantined versions (bundle, sha256) already reported; touched by the thread only.
  std::set<std::pair<std::string, std::string>> quarantine_known;

  bool Stopped() const {
    std::lock_guard<std::mutex> lock(mu);
    return stop;
  }

  // Calls `handler(args...)` unless it is empty or the subscription is stopping. False
  // when stopping: the message was not handled.
  template <typename Handler, typename... Args>
  bool Dispatch(const Handler& handler, const Args&... args) const {
    if (Stopped()) return false;
    if (handler) handler(args...);
    return true;
  }

  // Moves the cursor past a message once it was handled, so that cursor() never names an
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
  void Handle(const v1::ReloadPhaseEvent& message, Resynced* snapshot);
  bool DispatchPhase(const PhaseEvent& event) const;
};

namespace {

// Errors that retrying cannot fix: the host refuses this client or this request.
bool IsPermanent(grpc::StatusCode code) {
  return code == grpc::StatusCode::UNAUTHENTICATED || code == grpc::StatusCode::PERMISSION_DENIED ||
         code == grpc::StatusCode::INVALID_ARGUMENT || code == grpc::StatusCode::UNIMPLEMENTED;
}

}  // namespace

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
    if (std::optional<Cursor> from = GetCursor()) {
      request.mutable_resume_after()->set_host_epoch(from->host_epoch);
      request.mutable_resume_after()->set_seq(from->seq);
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
    if (established) {
      {
        std::lock_guard<std::mutex> lock(mu);
        connected = true;
      }
      backoff = connect.reconnect_initial_backoff;
      strict = false;
      reported_down = false;
      Dispatch(handlers.on_connection_changed, absl::OkStatus());
    }
    Resynced snapshot;
    v1::ReloadPhaseEvent message;
    while (reader->Read(&message)) {
      if (Stopped()) break;
      Handle(message, &snapshot);
    }
    const grpc::Status status = reader->Finish();
    {
      std::lock_guard<std::mutex> lock(mu);
      live_call = nullptr;
      connected = false;
      if (stop) return;
    }
    absl::Status why = connection->ToStatus(status, context, absl::ZeroDuration());
    if (why.ok()) why = absl::UnavailableError("the host ended the stream");
    if (IsPermanent(status.error_code()) ||
        (status.error_code() == grpc::StatusCode::OUT_OF_RANGE && !established && strict)) {
      Dispatch(handlers.on_stopped, why);
      std::lock_guard<std::mutex> lock(mu);
      stop = true;
      return;
    }
    if (!reported_down) {
      reported_down = true;
      Dispatch(handlers.on_connection_changed, why);
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

void Subscription::State::Handle(const v1::ReloadPhaseEvent& message, Resynced* snapshot) {
  const std::optional<Cursor> cursor_now = GetCursor();
  switch (message.kind()) {
    case v1::EVENT_KIND_SNAPSHOT:
      if (message.phase() == v1::PHASE_FAILED) {
        snapshot->quarantined.push_back(PhaseEventFromProto(message));
        return;
      }
      snapshot->bundles.push_back(
          {message.bundle_id(),
           message.bundle_name(),
           {message.bundle_version().major(), message.bundle_version().minor(),
            message.bundle_version().patch()},
           message.artifact_sha256()});
      return;
    case v1::EVENT_KIND_SNAPSHOT_END: {
      Resynced resynced = std::move(*snapshot);
      *snapshot = Resynced();
      if (!cursor_now.has_value()) {
        resynced.cause = ResyncCause::kInitial;
      } else if (cursor_now->host_epoch != message.host_epoch()) {
        resynced.cause = ResyncCause::kHostRestarted;
        if (!Dispatch(handlers.on_host_restarted,
                      HostRestarted{cursor_now->host_epoch, message.host_epoch()})) {
          return;
        }
      } else {
        resynced.cause = ResyncCause::kFellBehind;
      }
      resynced.host_epoch = message.host_epoch();
      resynced.seq = message.seq();
      resynced.registry_revision = message.registry_revision();
      std::sort(resynced.bundles.begin(), resynced.bundles.end(),
                [](const BundleState& a, const BundleState& b) { return a.name < b.name; });
      if (!Dispatch(handlers.on_resynced, resynced)) return;
      SetCursor({message.host_epoch(), message.seq()});
      // A version that crashed the host, announced by the restarted host: the FAILED
      // event of the reload or call that crashed, which the old host could not send.
      for (const PhaseEvent& crashed : resynced.quarantined) {
        const bool known =
            !quarantine_known.insert({crashed.bundle_name, crashed.artifact_sha256}).second;
        if (!known && resynced.cause == ResyncCause::kHostRestarted &&
            !Dispatch(handlers.on_failed, crashed)) {
          return;
        }
      }
      return;
    }
    case v1::EVENT_KIND_PROGRESS:
      if (cursor_now && cursor_now->host_epoch == message.host_epoch() &&
          message.seq() > cursor_now->seq) {
        SetCursor({message.host_epoch(), message.seq()});
      }
      return;
    case v1::EVENT_KIND_PHASE: {
      // The host resumes after the cursor, so an event at or before it (or from another
      // epoch without a snapshot first) would be a duplicate or a bug: never deliver it.
      if (cursor_now &&
          (cursor_now->host_epoch != message.host_epoch() || message.seq() <= cursor_now->seq)) {
        return;
      }
      // A phase this client does not know (from a newer host) is passed over, not guessed.
      const bool known =
          message.phase() >= v1::PHASE_PREPARING && message.phase() <= v1::PHASE_LOADED;
      if (!known || DispatchPhase(PhaseEventFromProto(message))) {
        SetCursor({message.host_epoch(), message.seq()});
      }
      return;
    }
    default:
      return;
  }
}

bool Subscription::State::DispatchPhase(const PhaseEvent& event) const {
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
  state_->thread = std::thread([state = state_] { state->Run(); });
}

Subscription::~Subscription() {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->stop = true;
    if (state_->live_call != nullptr) state_->live_call->TryCancel();
  }
  state_->wake.notify_all();
  if (std::this_thread::get_id() == state_->thread.get_id()) {
    state_->thread.detach();  // destroyed from a handler: the thread ends after it returns
  } else {
    state_->thread.join();
  }
}

std::optional<Cursor> Subscription::cursor() const { return state_->GetCursor(); }

bool Subscription::connected() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->connected;
}

}  // namespace polyplug::client
