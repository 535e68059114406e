// FleetFollower: a fleet's records, read once and then kept current by a watch; what
// `polyplugctl rollout` waits on, and what tests wait on.
#ifndef POLYPLUG_FLEET_SRC_FLEET_FOLLOWER_H_
#define POLYPLUG_FLEET_SRC_FLEET_FOLLOWER_H_

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "fleet/src/etcd_client.h"
#include "fleet/src/fleet_keys.h"
#include "fleet/src/fleet_state.h"

namespace polyplug::fleet {

// Thread-safe. `etcd` and `keys` must outlive it.
class FleetFollower {
 public:
  FleetFollower(EtcdClient& etcd, const FleetKeys& keys) : etcd_(etcd), keys_(keys), state_(keys) {}
  ~FleetFollower() { watch_.reset(); }

  // Reads the fleet's prefix and starts watching from the revision read.
  absl::Status Start();
  // Calls `done` with the state now and after every change until it returns true (then
  // true) or `deadline` passes (then false).
  bool WaitUntil(absl::Time deadline, const std::function<bool(const FleetState&)>& done);
  // Calls `read` with the state now.
  void Read(const std::function<void(const FleetState&)>& read);

 private:
  EtcdClient& etcd_;
  const FleetKeys& keys_;
  std::mutex mu_;
  std::condition_variable cv_;
  FleetState state_;      // guarded by mu_
  uint64_t changes_ = 0;  // guarded by mu_
  std::unique_ptr<EtcdWatch> watch_;
};

}  // namespace polyplug::fleet

#endif  // POLYPLUG_FLEET_SRC_FLEET_FOLLOWER_H_
