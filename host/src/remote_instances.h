// RemoteInstances: contract instances made and called by clients in other processes.
//
// Instances are counted by the runtime like in-process ones (Runtime::CreateInstance). The
// reload flow's rule "the host destroys all instances at PREPARING" is kept by OnPhase():
// at PREPARING or UNLOADING of a bundle it refuses new calls on that bundle's instances,
// waits for the calls in flight on the bundle (up to drain_timeout), destroys its
// instances, and remembers them, so a later call gets INSTANCE_INVALIDATED_BY_RELOAD
// rather than INSTANCE_NOT_FOUND. Instances also die with their lease: the session they
// were made under (CloseSession), or an idle timeout. Thread-safe. Calls run on the calling
// thread on a retained interface (Registry::Retain), so the code they run stays mapped
// until they return without holding up reloads.
#ifndef POLYPLUG_HOST_SRC_REMOTE_INSTANCES_H_
#define POLYPLUG_HOST_SRC_REMOTE_INSTANCES_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/random/random.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "polyplug/core/error.h"
#include "polyplug/core/runtime.h"

namespace polyplug::host {

struct RemoteInstancesOptions {
  // How long a reload or unload waits for calls in flight on the bundle before it
  // destroys the bundle's instances anyway (each instance with a call still running is
  // destroyed when that call returns; native code cannot be interrupted).
  absl::Duration drain_timeout = absl::Seconds(10);
  // Instances alive at once; more is RESOURCE_EXHAUSTED.
  size_t max_instances = 65536;
  // Invalidated instance ids remembered for their clear error.
  size_t remembered_invalidations = 4096;
  // Instances made outside a session are destroyed after this long without a call.
  absl::Duration sessionless_idle_timeout = absl::Minutes(10);
  // Sessions open at once; more is RESOURCE_EXHAUSTED.
  size_t max_sessions = 4096;
};

// How Create() makes an instance.
struct CreateOptions {
  // 0: none. Else the instance is destroyed when that session closes.
  uint64_t session = 0;
  // Destroy the instance after this long without a call. Zero: never within a session,
  // RemoteInstancesOptions::sessionless_idle_timeout outside one.
  absl::Duration idle_timeout = absl::ZeroDuration();
  // While the bundle is reloading, Create waits for the reload to end until then.
  absl::Time deadline = absl::InfiniteFuture();
};

class RemoteInstances {
 public:
  RemoteInstances(core::Runtime& runtime, RemoteInstancesOptions options);
  // Destroys the instances still alive; no call may be running. The runtime must outlive
  // this.
  ~RemoteInstances();
  RemoteInstances(const RemoteInstances&) = delete;
  RemoteInstances& operator=(const RemoteInstances&) = delete;

  // Makes an instance of the provider behind `handle` with `args`; returns its id.
  // NOT_INVOCABLE for a contract without the message-style entry, LEASE_EXPIRED for a
  // session that is not open. While the bundle is reloading it waits (until the deadline)
  // and then makes the instance of the new version.
  absl::StatusOr<uint64_t> Create(core::ContractHandle handle, absl::string_view args,
                                  const CreateOptions& options = {});
  // Runs `method` on instance `id`.
  absl::StatusOr<std::string> Invoke(uint64_t id, absl::string_view method,
                                     absl::string_view request);
  // Runs `method` on a fresh instance of `handle` made with no args, destroyed afterwards;
  // waits out a reload of the bundle like Create().
  absl::StatusOr<std::string> InvokeOnce(core::ContractHandle handle, absl::string_view method,
                                         absl::string_view request,
                                         absl::Time deadline = absl::InfiniteFuture());
  // Destroys instance `id` (OK for one that a reload already destroyed).
  absl::Status Destroy(uint64_t id);
  // The handle instance `id` was made from.
  absl::StatusOr<core::ContractHandle> HandleOf(uint64_t id) const;

  // To be called from the runtime's phase callback (the mutating thread, before the swap).
  void OnPhase(const core::PhaseEvent& event);

  // A new session id; RESOURCE_EXHAUSTED past max_sessions.
  absl::StatusOr<uint64_t> OpenSession();
  // Ends the session: its instances are destroyed (one with a call still running, when
  // that call returns), and later calls on them get LEASE_EXPIRED. Idempotent.
  void CloseSession(uint64_t session);

  size_t size() const;
  size_t session_count() const;
  const RemoteInstancesOptions& options() const { return options_; }

 private:
  struct Record {
    core::ContractHandle handle;
    uint64_t bundle_id = 0;
    std::string label;  // "test.counter@1 from bundle counter"
    std::shared_ptr<const PolyplugGuestContractInterface> iface;  // retained
    PolyplugGuestContractInstance instance{};
    int calls = 0;  // in flight
    uint64_t session = 0;
    absl::Duration idle_timeout = absl::InfiniteDuration();
    absl::Time last_used;
  };
  using RecordMap = absl::flat_hash_map<uint64_t, Record>;

  absl::Status Invalidated(uint64_t id) const;  // mu_ held
  // Waits until `bundle` is not reloading, then counts a call on it. An error when it is
  // unloading, or still reloading at `deadline`.
  absl::Status BeginBundleCall(uint64_t bundle, absl::string_view label, absl::Time deadline);
  // Whether a reload of `bundle` began since BeginBundleCall (mu_ held).
  bool ClosedLocked(uint64_t bundle) const { return closed_bundles_.contains(bundle); }
  void RememberLocked(uint64_t id, core::ErrorReason reason, std::string why);
  void EndCallLocked(uint64_t bundle_id);
  // Takes the instance out of live_ and remembers `why` for later calls. Returns it when
  // no call runs on it (the caller destroys it, without mu_); else the last call does.
  std::optional<Record> RetireLocked(RecordMap::iterator it, core::ErrorReason reason,
                                     std::string why);
  void DestroyAll(std::vector<Record> records);
  // The reaper thread: destroys instances idle past their timeout.
  void ReapIdle();

  core::Runtime& runtime_;
  const RemoteInstancesOptions options_;

  mutable std::mutex mu_;
  std::condition_variable changed_;  // a call ended, or a bundle's reload ended
  uint64_t next_id_ = 1;             // guarded by mu_
  RecordMap live_;                   // guarded by mu_
  RecordMap dying_;                  // guarded by mu_; calls still running
  struct Invalidation {
    core::ErrorReason reason;
    std::string message;
  };
  absl::flat_hash_map<uint64_t, Invalidation> invalidated_;  // guarded by mu_
  std::deque<uint64_t> invalidated_order_;                   // guarded by mu_
  absl::flat_hash_map<uint64_t, int> calls_by_bundle_;       // guarded by mu_
  // Bundles between PREPARING (or UNLOADING) and their end: no instances are made of them.
  struct Closed {
    std::string why;
    bool reloading = false;  // false: unloading
  };
  absl::flat_hash_map<uint64_t, Closed> closed_bundles_;  // guarded by mu_
  absl::BitGen random_;                                   // guarded by mu_
  absl::flat_hash_set<uint64_t> sessions_;                // guarded by mu_
  bool stopping_ = false;                                 // guarded by mu_
  std::condition_variable reaper_wakeup_;  // stopping, or an instance with a timeout came
  std::thread reaper_;
};

}  // namespace polyplug::host

#endif  // POLYPLUG_HOST_SRC_REMOTE_INSTANCES_H_
