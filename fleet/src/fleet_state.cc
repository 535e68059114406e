#include "fleet/src/fleet_state.h"

#include "absl/strings/str_cat.h"

namespace polyplug::fleet {

void FleetState::Reset(const RangeResult& read) {
  hosts_.clear();
  desired_.clear();
  statuses_.clear();
  for (const KeyValue& kv : read.kvs) Put(kv);
  revision_ = read.revision;
}

void FleetState::Apply(const WatchEvent& event) {
  if (event.type == WatchEvent::Type::kDelete) {
    Remove(event.kv.key);
  } else {
    Put(event.kv);
  }
  revision_ = std::max(revision_, event.kv.mod_revision);
}

const v1::BundleStatus* FleetState::StatusOf(const std::string& host_id,
                                             const std::string& bundle) const {
  auto it = statuses_.find({host_id, bundle});
  return it == statuses_.end() ? nullptr : &it->second;
}

void FleetState::Put(const KeyValue& kv) {
  const FleetKey key = keys_.Parse(kv.key);
  absl::Status parsed;
  switch (key.kind) {
    case FleetKey::Kind::kHost: {
      v1::HostRecord record;
      parsed = RecordFromJson(kv.key, kv.value, &record);
      if (parsed.ok()) hosts_[key.host_id] = std::move(record);
      break;
    }
    case FleetKey::Kind::kDesired: {
      Desired desired;
      desired.mod_revision = kv.mod_revision;
      parsed = RecordFromJson(kv.key, kv.value, &desired.record);
      if (parsed.ok()) desired_[key.bundle_name] = std::move(desired);
      break;
    }
    case FleetKey::Kind::kStatus: {
      v1::BundleStatus status;
      parsed = RecordFromJson(kv.key, kv.value, &status);
      if (parsed.ok()) statuses_[{key.host_id, key.bundle_name}] = std::move(status);
      break;
    }
    default:
      break;
  }
  if (!parsed.ok()) malformed_.push_back(std::string(parsed.message()));
}

void FleetState::Remove(const std::string& key_text) {
  const FleetKey key = keys_.Parse(key_text);
  switch (key.kind) {
    case FleetKey::Kind::kHost:
      hosts_.erase(key.host_id);
      break;
    case FleetKey::Kind::kDesired:
      desired_.erase(key.bundle_name);
      break;
    case FleetKey::Kind::kStatus:
      statuses_.erase({key.host_id, key.bundle_name});
      break;
    default:
      break;
  }
}

}  // namespace polyplug::fleet
