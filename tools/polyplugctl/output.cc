#include "polyplugctl/output.h"

#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "polyplug/client/host_client.h"

namespace polyplug::ctl {
namespace v1 = host::v1;

bool StdoutWantsColor() {
  if (!isatty(STDOUT_FILENO)) return false;
  if (const char* no_color = std::getenv("NO_COLOR"); no_color != nullptr && no_color[0] != '\0') {
    return false;
  }
  const char* term = std::getenv("TERM");
  return term != nullptr && std::string(term) != "dumb";
}

std::string JsonString(absl::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          absl::StrAppend(&out, "\\u00", absl::Hex(static_cast<unsigned char>(c), absl::kZeroPad2));
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

namespace {
// `message` as protobuf JSON: proto field names, every field present (stable keys).
std::string MessageJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = false;
  options.always_print_primitive_fields = true;  // every field, every time: stable keys
  options.preserve_proto_field_names = true;
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(message, &out, options).ok()) {
    out = R"({"message":"polyplugctl cannot print this object as JSON"})";
  }
  return out;
}
}  // namespace

void Output::Envelope(absl::string_view type, const std::string& object_json) const {
  std::string line = absl::StrCat(R"({"type":)", JsonString(type));
  if (!request_id_.empty()) absl::StrAppend(&line, R"(,"request_id":)", JsonString(request_id_));
  absl::StrAppend(&line, R"(,"object":)", object_json, "}");
  std::fprintf(stdout, "%s\n", line.c_str());
  std::fflush(stdout);
}

void Output::Json(const google::protobuf::Message& message) const {
  Envelope(message.GetDescriptor()->full_name(), MessageJson(message));
}

void Output::Json(absl::string_view type, const google::protobuf::Struct& object) const {
  Envelope(type, MessageJson(object));
}

void Output::Line(absl::string_view text) const {
  std::fprintf(stdout, "%.*s\n", static_cast<int>(text.size()), text.data());
  std::fflush(stdout);
}

void Output::Note(absl::string_view text) const {
  std::fprintf(stderr, "polyplugctl: %.*s\n", static_cast<int>(text.size()), text.data());
  std::fflush(stderr);
}

std::string Output::Paint(absl::string_view text, Color color) const {
  if (!color_ || color == Color::kNone) return std::string(text);
  const char* code = "";
  switch (color) {
    case Color::kGreen:
      code = "32";
      break;
    case Color::kRed:
      code = "31";
      break;
    case Color::kYellow:
      code = "33";
      break;
    case Color::kBold:
      code = "1";
      break;
    case Color::kDim:
      code = "2";
      break;
    case Color::kNone:
      break;
  }
  return absl::StrCat("\033[", code, "m", text, "\033[0m");
}

std::string Output::PhaseWord(v1::Phase phase) const {
  const std::string word(absl::StripPrefix(v1::Phase_Name(phase), "PHASE_"));
  switch (phase) {
    case v1::PHASE_RELOADED:
    case v1::PHASE_LOADED:
      return Paint(word, Color::kGreen);
    case v1::PHASE_FAILED:
      return Paint(word, Color::kRed);
    case v1::PHASE_PREPARING:
    case v1::PHASE_UNLOADING:
      return Paint(word, Color::kYellow);
    default:
      return word;
  }
}

void Output::Error(absl::string_view what, const absl::Status& status) const {
  const std::string code(absl::StatusCodeToString(status.code()));
  std::fprintf(stderr, "polyplugctl: %.*s: %s: %.*s\n", static_cast<int>(what.size()), what.data(),
               code.c_str(), static_cast<int>(status.message().size()), status.message().data());
  std::fflush(stderr);
  if (!json_) return;
  google::protobuf::Struct error;
  auto& fields = *error.mutable_fields();
  fields["command"].set_string_value(std::string(what));
  fields["code"].set_string_value(code);
  fields["reason"].set_string_value(client::ReasonToken(client::FailureReasonOf(status)));
  fields["message"].set_string_value(std::string(status.message()));
  if (!request_id_.empty()) fields["request_id"].set_string_value(request_id_);
  Json(kErrorType, error);
}

std::string Output::VersionText(const v1::Version& version) {
  return absl::StrCat(version.major(), ".", version.minor(), ".", version.patch());
}

std::string Output::EventText(const v1::ReloadPhaseEvent& event, bool cursor) const {
  const std::string position = cursor ? absl::StrCat(event.host_epoch(), ":", event.seq())
                                      : absl::StrCat("seq ", event.seq());
  std::string text =
      absl::StrCat(Paint(position, Color::kDim), "  ", PhaseWord(event.phase()), "  ",
                   event.bundle_name(), " ", VersionText(event.bundle_version()));
  if (event.parent_reload_id() != 0) {
    absl::StrAppend(
        &text, "  ",
        Paint(absl::StrCat("(cascade of reload ", event.root_reload_id(), ")"), Color::kDim));
  }
  if (event.phase() == v1::PHASE_FAILED) {
    absl::StrAppend(&text, "  [", client::ReasonToken(event.reason()), "]");
  }
  if (!event.message().empty()) absl::StrAppend(&text, "  ", event.message());
  return text;
}

}  // namespace polyplug::ctl
