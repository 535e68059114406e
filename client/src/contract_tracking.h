// ContractTracking: the one subscription of a HostClient that keeps its TrackedContracts
// current. Refreshes run on the subscription's thread, serialized with the first lookup of
// a new tracker, so a tracker never goes back to an older answer.
#ifndef POLYPLUG_CLIENT_SRC_CONTRACT_TRACKING_H_
#define POLYPLUG_CLIENT_SRC_CONTRACT_TRACKING_H_

#include <condition_variable>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "polyplug/client/host_client.h"
#include "polyplug/client/subscription.h"
#include "polyplug/client/tracked_contract.h"
#include "src/connection.h"

namespace polyplug::client {
namespace internal {
class ContractTracking;
}

struct TrackedContract::State {
  std::string contract;
  uint32_t min_version = 0;
  RefreshCallback on_refreshed;
  std::shared_ptr<internal::ContractTracking> tracking;  // released by ~TrackedContract

  mutable std::mutex mu;
  absl::StatusOr<host::v1::ContractHandle> current;  // guarded by mu
  uint64_t change_count = 0;                         // guarded by mu
  // The registry as of which the holder last learned the handle (the first lookup, or the
  // `current` of the last on_refreshed): a provider's RELOADED at or before it is old news.
  uint64_t known_epoch = 0;     // guarded by mu
  uint64_t known_revision = 0;  // guarded by mu

  std::mutex callback_mu;  // held while on_refreshed runs
  bool closed = false;     // guarded by callback_mu
};

namespace internal {

class ContractTracking {
 public:
  // Starts the tracking subscription on `connection`.
  static std::shared_ptr<ContractTracking> Start(std::shared_ptr<const Connection> connection);
  ~ContractTracking();

  // Registers a tracker and looks its contract up before returning it.
  std::shared_ptr<TrackedContract::State> Add(absl::string_view contract, uint32_t min_version,
                                              RefreshCallback on_refreshed);
  // Unregisters a tracker; no refresh of it starts afterwards.
  void Remove(const TrackedContract::State* state);

 private:
  explicit ContractTracking(std::shared_ptr<const Connection> connection);

  // What made a refresh necessary.
  struct Trigger {
    uint64_t reloaded_bundle_id = 0;   // RELOADED: trackers of this provider changed code
    uint64_t event_epoch = 0;          // the host epoch and registry revision the
    uint64_t event_revision = 0;       // event was recorded at
    uint64_t unloading_bundle_id = 0;  // UNLOADING: only trackers of this provider
    bool everyone = false;             // LOADED, resync: every tracker
  };
  void OnEvent(const PhaseEvent& event);
  void Refresh(const Trigger& trigger);
  // One unary call that ~ContractTracking can cancel; CANCELLED once stopping.
  template <typename Request, typename Response, typename Method>
  absl::Status Call(Method method, const Request& request, Response* response);
  // Looks `state`'s contract up, skipping providers that announced UNLOADING.
  absl::StatusOr<host::v1::ContractHandle> Lookup(const TrackedContract::State& state);

  const std::shared_ptr<const Connection> connection_;
  std::mutex refresh_mu_;  // serializes lookups-and-stores; never held during a callback
  std::set<uint64_t> leaving_bundles_;  // guarded by refresh_mu_

  // The subscription synced for the first time, or found the host unreachable.
  void MarkFirstAttemptDone();

  std::mutex mu_;
  std::vector<std::shared_ptr<TrackedContract::State>> trackers_;  // guarded by mu_
  std::condition_variable first_attempt_cv_;
  bool first_attempt_done_ = false;  // guarded by mu_

  std::mutex call_mu_;
  bool stopping_ = false;                // guarded by call_mu_
  grpc::ClientContext* call_ = nullptr;  // guarded by call_mu_; the call in progress

  std::unique_ptr<Subscription> subscription_;  // last: stopped first
};

}  // namespace internal
}  // namespace polyplug::client

#endif  // POLYPLUG_CLIENT_SRC_CONTRACT_TRACKING_H_
