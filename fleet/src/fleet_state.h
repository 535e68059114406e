// FleetState: a fleet's records as read from etcd (docs/FLEET.md), kept current from a
// watch: the live hosts, the desired state of each bundle, and each host's status per
// bundle. What `polyplugctl rollout` waits on and `polyplugctl fleet status` prints.
#ifndef POLYPLUG_FLEET_SRC_FLEET_STATE_H_
#define POLYPLUG_FLEET_SRC_FLEET_STATE_H_

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "fleet/src/etcd_client.h"
#include "fleet/src/fleet_keys.h"
#include "polyplug/fleet/v1/fleet.pb.h"

namespace polyplug::fleet {

// Not thread-safe.
class FleetState {
 public:
  struct Desired {
    v1::DesiredBundle record;
    int64_t mod_revision = 0;
  };

  explicit FleetState(const FleetKeys& keys) : keys_(keys) {}

  // Replaces everything with a read of the fleet's prefix.
  void Reset(const RangeResult& read);
  // One watched change. A record that does not parse is noted (malformed()) and ignored.
  void Apply(const WatchEvent& event);

  const std::map<std::string, v1::HostRecord>& hosts() const { return hosts_; }
  const std::map<std::string, Desired>& desired() const { return desired_; }
  // (host id, bundle) -> status.
  const std::map<std::pair<std::string, std::string>, v1::BundleStatus>& statuses() const {
    return statuses_;
  }
  const v1::BundleStatus* StatusOf(const std::string& host_id, const std::string& bundle) const;
  // "key: why" for every record that did not parse, most recent last.
  const std::vector<std::string>& malformed() const { return malformed_; }
  int64_t revision() const { return revision_; }

 private:
  void Put(const KeyValue& kv);
  void Remove(const std::string& key);

  const FleetKeys& keys_;
  std::map<std::string, v1::HostRecord> hosts_;
  std::map<std::string, Desired> desired_;
  std::map<std::pair<std::string, std::string>, v1::BundleStatus> statuses_;
  std::vector<std::string> malformed_;
  int64_t revision_ = 0;
};

}  // namespace polyplug::fleet

#endif  // POLYPLUG_FLEET_SRC_FLEET_STATE_H_
