// Subscription: the phase events of a remote polyplug-host, delivered to handlers the way an
// in-process host's on_reload callback gets them, across reconnects and host restarts.
#ifndef POLYPLUG_CLIENT_SUBSCRIPTION_H_
#define POLYPLUG_CLIENT_SUBSCRIPTION_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "polyplug/client/phase_event.h"

namespace polyplug::client {

namespace internal {
struct Connection;
class ContractTracking;
}  // namespace internal

// What a subscription calls. Every handler is optional. Handlers run one at a time, in seq
// order: on the subscription's own thread (Delivery::kOwnThread), or on the thread calling
// Subscription::Poll() (Delivery::kPoll). A handler may call the HostClient (e.g. Reload or
// FindContract) and may destroy its own Subscription (see ~Subscription). A slow handler (or,
// with kPoll, an application that does not poll) holds the events back; see
// SubscribeOptions::max_pending for what happens then.
//
// Remote handlers never hold the host up: the host queues each event for its subscribers
// and goes on, so on_preparing runs after the fact (see Phase::kPreparing).
struct PhaseHandlers {
  // A reload of the bundle has begun. By the time this runs, the host has already waited
  // for the remote calls in flight on the bundle (up to its --drain-timeout) and destroyed
  // every remote instance of it, and it may have swapped the new version in (RELOADED may
  // already be journaled). The handler cannot delay, veto or watch the swap. What it can do:
  // stop calling the bundle's instances (calls now fail with FAILED_PRECONDITION /
  // INSTANCE_INVALIDATED_BY_RELOAD), forget their InstanceRefs, and make new instances
  // if it wants (CreateInstance waits until the reload ended, then runs the version that is
  // live). ContractHandles stay valid through a successful reload (same slot and
  // generation). A LiveInstance does all of this itself.
  std::function<void(const PhaseEvent&)> on_preparing;
  std::function<void(const PhaseEvent&)> on_reloaded;
  std::function<void(const PhaseEvent&)> on_failed;
  // The bundle is being unloaded: as for on_preparing, its remote instances are already
  // destroyed; its handles go stale.
  std::function<void(const PhaseEvent&)> on_unloading;
  std::function<void(const PhaseEvent&)> on_loaded;
  // The host's epoch changed: it restarted. Called before the Resynced that follows.
  std::function<void(const HostRestarted&)> on_host_restarted;
  // The subscription holds a complete picture again: after the first connection, after a
  // host restart, or after events were lost (to the host's journal, or to a full
  // max_pending buffer). Events after `Resynced::seq` follow. Unless
  // SubscribeOptions::synthesize_transitions is off, a resync other than the first is
  // preceded by the transitions the handlers missed, as synthetic events
  // (PhaseEvent::synthetic): every on_unloading first, then on_loaded and on_reloaded in
  // bundle name order, all after on_host_restarted. After a restart of a host under
  // --supervise, on_failed runs next for each version newly quarantined because it crashed
  // the host (reason CRASHED), and for each bundle the restart could not bring back (e.g.
  // UNSATISFIED_DEPENDENCY: its provider is quarantined).
  std::function<void(const Resynced&)> on_resynced;
  // The stream broke (`status` says why) and the subscription is reconnecting, or it is
  // connected again (`status` OK). Reconnects resume after the last seq seen.
  std::function<void(const absl::Status& status)> on_connection_changed;
  // The subscription gave up for good: the host refused it (UNAUTHENTICATED,
  // PERMISSION_DENIED, INVALID_ARGUMENT, UNIMPLEMENTED), or a strict resume cursor could
  // not be honoured (OUT_OF_RANGE). No handler runs after this one.
  std::function<void(const absl::Status& status)> on_stopped;
};

// Where a subscription's handlers run. The stream (reading, reconnecting, resuming,
// heartbeats) always runs on the subscription's own thread.
enum class Delivery : int {
  kOwnThread = 0,  // on the subscription's thread, as soon as each message is read
  kPoll = 1,       // queued, and run by Subscription::Poll() on the caller's thread
};

struct SubscribeOptions {
  // Only events of these bundles (by name); empty: all.
  std::vector<std::string> bundle_names;
  // Start after this cursor instead of with a snapshot of the current state. When the host
  // cannot resume there (another epoch, or older than its journal), the subscription
  // resyncs (on_host_restarted / on_resynced) unless `strict_resume` is set, in which case
  // it stops with OUT_OF_RANGE.
  std::optional<Cursor> resume_after;
  bool strict_resume = false;
  // How often the host sends a progress marker on a quiet stream; it advances the cursor
  // past filtered-out events and keeps idle connections alive. At least 100 ms.
  absl::Duration heartbeat = absl::Seconds(10);

  Delivery delivery = Delivery::kOwnThread;
  // kPoll: how many deliveries (events, resyncs, connection changes) may wait for Poll(),
  // at least 2. When one more arrives, the subscription behaves as the host does with a
  // subscriber that fell behind: it drops everything waiting, drops its stream and
  // subscribes again from a fresh snapshot, which Poll() then delivers as a Resynced with
  // cause kFellBehind (kHostRestarted if the epoch changed meanwhile, kInitial if no
  // snapshot was delivered yet), preceded by the synthetic transitions. Memory stays bounded
  // however long the application does not poll. (It resyncs rather than replaying the host's
  // journal, which would refill the buffer the application is not draining.) Ignored with
  // kOwnThread, where a slow handler holds the stream back until the host's own queue for it
  // overflows.
  size_t max_pending = 1024;
  // kPoll: called on the subscription's thread each time a delivery is queued for Poll(),
  // e.g. to wake the application's loop (post an empty event to the UI toolkit). It must
  // return quickly, must not block on the thread that polls, and must not call into this
  // Subscription.
  std::function<void()> on_ready;
  // After a resync, call the handlers with the transitions they missed (see on_resynced
  // and PhaseEvent::synthetic). Off: only on_resynced says what the state is now.
  bool synthesize_transitions = true;
};

// One subscription. Not copyable. Thread-safe.
class Subscription {
 public:
  // Cancels the stream, wakes a pending reconnect wait and joins the thread: no handler
  // runs after the destructor returns. Never hangs on a dead host. Called from one of this
  // subscription's own handlers, it returns at once and no further handler runs (with
  // kOwnThread, the thread ends after the handler; with kPoll, Poll() returns after it).
  ~Subscription();
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;

  // Delivery::kPoll: runs, on the calling thread, the handlers of the deliveries waiting
  // when it was called, in order, and returns how many handler calls ran. Never blocks on
  // the network; returns 0 at once when nothing waits. Concurrent calls are serialized;
  // called from one of this subscription's handlers, or with kOwnThread, it returns 0.
  size_t Poll();
  // Delivery::kPoll: waits until a delivery waits for Poll() (true), or `timeout` passed
  // (false). With kOwnThread it returns false at once.
  bool WaitReady(absl::Duration timeout);
  // WaitReady(timeout), then Poll(): for a loop with nothing else to do.
  size_t PollFor(absl::Duration timeout);
  // kPoll: how many deliveries wait for Poll(), and how many were dropped so far because
  // more than max_pending waited (each drop is followed by a resync).
  size_t pending() const;
  uint64_t dropped() const;

  // The position of the last event (or snapshot, or progress marker) handled; a later
  // Subscribe() with this as `resume_after` continues where this one stopped. With kPoll,
  // it moves as Poll() runs the handlers.
  std::optional<Cursor> cursor() const;
  // True while a stream to the host is established.
  bool connected() const;

 private:
  friend class HostClient;
  friend class internal::ContractTracking;
  struct State;
  // Poll() and WaitReady() on the state, which outlives the Subscription while they run.
  static size_t PollState(std::shared_ptr<State> state);
  static bool WaitState(State& state, absl::Duration timeout);
  Subscription(std::shared_ptr<const internal::Connection> connection, PhaseHandlers handlers,
               SubscribeOptions options);

  std::shared_ptr<State> state_;
};

}  // namespace polyplug::client

#endif  // POLYPLUG_CLIENT_SUBSCRIPTION_H_
