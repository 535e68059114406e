#include "fleet/src/fleet_keys.h"

#include <google/protobuf/message.h>
#include <google/protobuf/util/json_util.h>

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace polyplug::fleet {

FleetKeys::FleetKeys(absl::string_view fleet)
    : root_(absl::StrCat("/polyplug/fleets/", fleet, "/")) {}

absl::Status FleetKeys::CheckName(absl::string_view what, absl::string_view name) {
  if (name.empty() || name.size() > 128) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " \"", name, "\": must be 1 to 128 characters"));
  }
  if (name[0] == '.') {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " \"", name, "\": must not start with '.'"));
  }
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " \"", name, "\": character ", i + 1,
                       " is not a letter, digit, '.', '_' or '-' (it becomes part of etcd keys)"));
    }
  }
  return absl::OkStatus();
}

std::string FleetKeys::DesiredPrefix() const { return absl::StrCat(root_, "desired/"); }
std::string FleetKeys::Desired(absl::string_view bundle) const {
  return absl::StrCat(root_, "desired/", bundle);
}
std::string FleetKeys::HostsPrefix() const { return absl::StrCat(root_, "hosts/"); }
std::string FleetKeys::Host(absl::string_view host_id) const {
  return absl::StrCat(root_, "hosts/", host_id);
}
std::string FleetKeys::StatusPrefix() const { return absl::StrCat(root_, "status/"); }
std::string FleetKeys::Status(absl::string_view host_id, absl::string_view bundle) const {
  return absl::StrCat(root_, "status/", host_id, "/", bundle);
}
std::string FleetKeys::Rollout(absl::string_view bundle) const {
  return absl::StrCat(root_, "rollouts/", bundle);
}

FleetKey FleetKeys::Parse(absl::string_view key) const {
  FleetKey parsed;
  if (!absl::ConsumePrefix(&key, root_)) return parsed;
  std::vector<absl::string_view> parts = absl::StrSplit(key, '/');
  if (parts.size() == 2 && parts[0] == "desired" && !parts[1].empty()) {
    parsed.kind = FleetKey::Kind::kDesired;
    parsed.bundle_name = std::string(parts[1]);
  } else if (parts.size() == 2 && parts[0] == "hosts" && !parts[1].empty()) {
    parsed.kind = FleetKey::Kind::kHost;
    parsed.host_id = std::string(parts[1]);
  } else if (parts.size() == 3 && parts[0] == "status" && !parts[1].empty() && !parts[2].empty()) {
    parsed.kind = FleetKey::Kind::kStatus;
    parsed.host_id = std::string(parts[1]);
    parsed.bundle_name = std::string(parts[2]);
  } else if (parts.size() == 2 && parts[0] == "rollouts" && !parts[1].empty()) {
    parsed.kind = FleetKey::Kind::kRollout;
    parsed.bundle_name = std::string(parts[1]);
  }
  return parsed;
}

std::string RecordToJson(const google::protobuf::Message& record) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(record, &json, options);
  return json;
}

absl::Status RecordFromJson(absl::string_view key, absl::string_view json,
                            google::protobuf::Message* record) {
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  const auto status = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(json.data(), json.size()), record, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("etcd key ", key, ": not a ",
                                                   record->GetDescriptor()->name(), " record (",
                                                   status.message().as_string(), ")"));
  }
  return absl::OkStatus();
}

}  // namespace polyplug::fleet
