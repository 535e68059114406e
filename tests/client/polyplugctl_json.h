// polyplugctl's --json output for tests: every line is one envelope
//   {"type": "<what>", ["request_id": "<id>",] "object": {...}}
// whose type is a host.proto message's full name, one of polyplugctl's own object types
// ("polyplugctl.Resynced", ...) or "error" (docs/CLIENT.md).
#ifndef POLYPLUG_TESTS_CLIENT_POLYPLUGCTL_JSON_H_
#define POLYPLUG_TESTS_CLIENT_POLYPLUGCTL_JSON_H_

#include <set>
#include <string>

#include "absl/strings/string_view.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"

namespace polyplug::test {

// One line of polyplugctl --json, taken apart.
struct CtlEnvelope {
  std::string type;
  std::string request_id;  // "" when the envelope has none
  std::string object;      // the object's JSON text
};

// Splits `line` (a trailing newline is ignored); a test failure when it is not exactly an envelope
// (keys type, object and optionally request_id, type a non-empty string, object an object).
inline CtlEnvelope SplitCtlEnvelope(std::string line) {
  while (!line.empty() && line.back() == '\n') line.pop_back();  // a whole output of one line
  CtlEnvelope envelope;
  google::protobuf::Struct parsed;
  const auto status = google::protobuf::util::JsonStringToMessage(line, &parsed);
  EXPECT_TRUE(status.ok()) << status.ToString() << "\nin: " << line;
  std::set<std::string> keys;
  for (const auto& field : parsed.fields()) keys.insert(field.first);
  EXPECT_TRUE(keys == std::set<std::string>({"type", "object"}) ||
              keys == std::set<std::string>({"type", "request_id", "object"}))
      << "not an envelope: " << line;
  if (auto it = parsed.fields().find("type"); it != parsed.fields().end()) {
    envelope.type = it->second.string_value();
  }
  EXPECT_FALSE(envelope.type.empty()) << line;
  if (auto it = parsed.fields().find("request_id"); it != parsed.fields().end()) {
    envelope.request_id = it->second.string_value();
  }
  if (auto it = parsed.fields().find("object"); it != parsed.fields().end()) {
    EXPECT_TRUE(it->second.has_struct_value()) << line;
  }
  // The object's own text, as printed: `,"object":` cannot occur inside an escaped string.
  const std::string marker = ",\"object\":";
  const size_t at = line.find(marker);
  EXPECT_NE(at, std::string::npos) << line;
  if (at != std::string::npos && !line.empty() && line.back() == '}') {
    envelope.object = line.substr(at + marker.size(), line.size() - at - marker.size() - 1);
  }
  return envelope;
}

// The object of `line` parsed strictly (host.proto field names only) as `Message`, whose
// full name must be the envelope's type.
template <typename Message>
Message ParseCtlJson(const std::string& line) {
  const CtlEnvelope envelope = SplitCtlEnvelope(line);
  EXPECT_EQ(envelope.type, Message::descriptor()->full_name()) << line;
  Message message;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  const auto status =
      google::protobuf::util::JsonStringToMessage(envelope.object, &message, options);
  EXPECT_TRUE(status.ok()) << status.ToString() << "\nin: " << line;
  return message;
}

// The object of an envelope of type `type` (polyplugctl's own objects, "error").
inline google::protobuf::Struct ParseCtlObject(const std::string& line, absl::string_view type) {
  const CtlEnvelope envelope = SplitCtlEnvelope(line);
  EXPECT_EQ(envelope.type, type) << line;
  google::protobuf::Struct object;
  const auto status = google::protobuf::util::JsonStringToMessage(envelope.object, &object);
  EXPECT_TRUE(status.ok()) << status.ToString() << "\nin: " << line;
  return object;
}

}  // namespace polyplug::test

#endif  // POLYPLUG_TESTS_CLIENT_POLYPLUGCTL_JSON_H_
