// Subscription: the phase events of a remote polyplug-host, delivered to handlers the way an
// in-process host's on_reload callback gets them, across reconnects and host restarts.
#ifndef POLYPLUG_CLIENT_SUBSCRIPTION_H_
#define POLYPLUG_CLIENT_SUBSCRIPTION_H_

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

// What a subscription calls. Every handler is optional and runs on the subscription's own
// thread, one at a time, in seq order. A handler may call the HostClient (e.g. Reload or
// FindContract) and may destroy its own Subscription (see ~Subscription). A slow handler
// holds the stream back; if the host's queue for it overflows, the subscription resumes
// from the host's journal, or resyncs when the journal no longer reaches back.
struct PhaseHandlers {
  std::function<void(const PhaseEvent&)> on_preparing;
  std::function<void(const PhaseEvent&)> on_reloaded;
  std::function<void(const PhaseEvent&)> on_failed;
  std::function<void(const PhaseEvent&)> on_unloading;
  std::function<void(const PhaseEvent&)> on_loaded;
  // The host's epoch changed: it restarted. Called before the Resynced that follows.
  std::function<void(const HostRestarted&)> on_host_restarted;
  // The subscription holds a complete picture again: after the first connection, after a
  // host restart, or after events were lost to the host's journal. Events after
  // `Resynced::seq` follow. After a restart of a host under --supervise, on_failed runs next
  // for each version newly quarantined because it crashed the host (reason CRASHED).
  std::function<void(const Resynced&)> on_resynced;
  // The stream broke (`status` says why) and the subscription is reconnecting, or it is
  // connected again (`status` OK). Reconnects resume after the last seq seen.
  std::function<void(const absl::Status& status)> on_connection_changed;
  // The subscription gave up for good: the host refused it (UNAUTHENTICATED,
  // PERMISSION_DENIED, INVALID_ARGUMENT, UNIMPLEMENTED), or a strict resume cursor could
  // not be honoured (OUT_OF_RANGE). No handler runs after this one.
  std::function<void(const absl::Status& status)> on_stopped;
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
};

// One subscription. Not copyable. Thread-safe.
class Subscription {
 public:
  // Cancels the stream, wakes a pending reconnect wait and joins the thread: no handler
  // runs after the destructor returns. Never hangs on a dead host. Called from one of this
  // subscription's own handlers, it returns at once and the thread ends after the handler.
  ~Subscription();
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;

  // The position of the last event (or snapshot, or progress marker) handled; a later
  // Subscribe() with this as `resume_after` continues where this one stopped.
  std::optional<Cursor> cursor() const;
  // True while a stream to the host is established.
  bool connected() const;

 private:
  friend class HostClient;
  friend class internal::ContractTracking;
  struct State;
  Subscription(std::shared_ptr<const internal::Connection> connection, PhaseHandlers handlers,
               SubscribeOptions options);

  std::shared_ptr<State> state_;
};

}  // namespace polyplug::client

#endif  // POLYPLUG_CLIENT_SUBSCRIPTION_H_
