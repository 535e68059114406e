// FleetKeys: where a fleet's records live in etcd, and the records' JSON form
// (docs/FLEET.md). Every key of a fleet is below /polyplug/fleets/<fleet>/.
#ifndef POLYPLUG_FLEET_SRC_FLEET_KEYS_H_
#define POLYPLUG_FLEET_SRC_FLEET_KEYS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace google::protobuf {
class Message;
}  // namespace google::protobuf

namespace polyplug::fleet {

// What a key below a fleet's root is.
struct FleetKey {
  enum class Kind { kDesired, kHost, kStatus, kRollout, kOther };
  Kind kind = Kind::kOther;
  std::string host_id;      // kHost, kStatus
  std::string bundle_name;  // kDesired, kStatus, kRollout
};

class FleetKeys {
 public:
  // `fleet` must have passed CheckName.
  explicit FleetKeys(absl::string_view fleet);

  // A fleet name or host id: 1 to 128 of [A-Za-z0-9._-], not starting with '.'.
  // INVALID_ARGUMENT names `what` (e.g. "--fleet") and the first bad character.
  static absl::Status CheckName(absl::string_view what, absl::string_view name);

  const std::string& root() const { return root_; }  // /polyplug/fleets/<fleet>/
  std::string DesiredPrefix() const;
  std::string Desired(absl::string_view bundle) const;  // a DesiredBundle
  std::string HostsPrefix() const;
  std::string Host(absl::string_view host_id) const;  // a HostRecord, under its lease
  std::string StatusPrefix() const;
  // A BundleStatus, under the host's lease.
  std::string Status(absl::string_view host_id, absl::string_view bundle) const;
  // A rollout in progress claims its bundle here, under the rollout's lease: a second
  // rollout of the bundle is refused while it runs.
  std::string Rollout(absl::string_view bundle) const;

  // What `key` is; kOther for a key outside the layout.
  FleetKey Parse(absl::string_view key) const;

 private:
  std::string root_;
};

// A record as stored: JSON with the proto's field names.
std::string RecordToJson(const google::protobuf::Message& record);
// INVALID_ARGUMENT names `key` when `json` is not such a record. Unknown fields are
// ignored (a newer writer's).
absl::Status RecordFromJson(absl::string_view key, absl::string_view json,
                            google::protobuf::Message* record);

}  // namespace polyplug::fleet

#endif  // POLYPLUG_FLEET_SRC_FLEET_KEYS_H_
