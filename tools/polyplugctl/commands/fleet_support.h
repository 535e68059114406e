// What the fleet commands (rollout, fleet status) share: the --fleet and --etcd flags and
// the etcd client they make.
#ifndef POLYPLUG_TOOLS_POLYPLUGCTL_COMMANDS_FLEET_SUPPORT_H_
#define POLYPLUG_TOOLS_POLYPLUGCTL_COMMANDS_FLEET_SUPPORT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "fleet/src/etcd_client.h"
#include "fleet/src/fleet_keys.h"
#include "polyplugctl/command.h"

namespace polyplug::ctl {

inline constexpr FlagSpec kFleetFlag = {"fleet", true};
inline constexpr FlagSpec kEtcdFlag = {"etcd", true};

// A fleet to talk to: its name, its keys, and a client of its etcd.
struct FleetTarget {
  std::string fleet;
  fleet::FleetKeys keys;
  std::unique_ptr<fleet::EtcdClient> etcd;
};

// --fleet NAME and --etcd ENDPOINTS (else $POLYPLUG_ETCD); INVALID_ARGUMENT, for Misuse,
// when one is missing or malformed. Contacts nothing.
absl::StatusOr<FleetTarget> FleetTargetOf(const Invocation& ctx);

}  // namespace polyplug::ctl

#endif  // POLYPLUG_TOOLS_POLYPLUGCTL_COMMANDS_FLEET_SUPPORT_H_
