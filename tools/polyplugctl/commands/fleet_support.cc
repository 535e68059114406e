#include "polyplugctl/commands/fleet_support.h"

#include <cstdlib>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace polyplug::ctl {

absl::StatusOr<FleetTarget> FleetTargetOf(const Invocation& ctx) {
  const std::string fleet = ctx.args.Get("fleet");
  if (fleet.empty()) return absl::InvalidArgumentError("--fleet NAME is required");
  if (absl::Status s = fleet::FleetKeys::CheckName("--fleet", fleet); !s.ok()) return s;
  std::string endpoints = ctx.args.Get("etcd");
  if (endpoints.empty()) {
    const char* env = std::getenv("POLYPLUG_ETCD");
    if (env != nullptr) endpoints = env;
  }
  if (endpoints.empty()) {
    return absl::InvalidArgumentError(
        "--etcd HOST:PORT[,HOST:PORT...] (or $POLYPLUG_ETCD) is required: the fleet's etcd");
  }
  fleet::EtcdOptions options;
  options.endpoints = absl::StrSplit(endpoints, ',', absl::SkipWhitespace());
  auto etcd = fleet::EtcdClient::Create(std::move(options));
  if (!etcd.ok()) return etcd.status();
  return FleetTarget{fleet, fleet::FleetKeys(fleet), *std::move(etcd)};
}

}  // namespace polyplug::ctl
