// TrackedContract: a contract handle that refreshes itself when the host reloads, loads or
// unloads its provider, or restarts.
#ifndef POLYPLUG_CLIENT_TRACKED_CONTRACT_H_
#define POLYPLUG_CLIENT_TRACKED_CONTRACT_H_

#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "polyplug/host/v1/host.pb.h"

namespace polyplug::client {

// Called after a refresh changed the handle: another slot or generation, another provider
// or version, a new host epoch, or a reload of the provider (same handle, new code).
// `previous` and `current` are NOT_FOUND while no bundle provides the contract, and
// UNAVAILABLE before the first lookup succeeded. Runs on the HostClient's tracking
// thread, one call at a time.
using RefreshCallback =
    std::function<void(const absl::StatusOr<host::v1::ContractHandle>& previous,
                       const absl::StatusOr<host::v1::ContractHandle>& current)>;

// One tracked contract. Not copyable. Thread-safe.
class TrackedContract {
 public:
  // Stops tracking; waits for a running on_refreshed of this tracker to return, unless
  // called from it. No on_refreshed starts after the destructor returns.
  ~TrackedContract();
  TrackedContract(const TrackedContract&) = delete;
  TrackedContract& operator=(const TrackedContract&) = delete;

  // The handle as of the last refresh (a copy; takes one uncontended lock).
  absl::StatusOr<host::v1::ContractHandle> Current() const;
  // How many refreshes changed the handle (how many times on_refreshed ran or would have).
  uint64_t change_count() const;

  struct State;  // shared with the tracking subscription

 private:
  friend class HostClient;
  explicit TrackedContract(std::shared_ptr<State> state);
  std::shared_ptr<State> state_;
};

}  // namespace polyplug::client

#endif  // POLYPLUG_CLIENT_TRACKED_CONTRACT_H_
