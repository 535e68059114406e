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

void Output::Json(const google::protobuf::Message& message) const {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = false;
  options.always_print_primitive_fields = true;  // every field, every time: stable keys
  options.preserve_proto_field_names = true;
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(message, &out, options).ok()) {
    out = R"({"error":{"message":"cannot print the reply as JSON"}})";
  }
  std::fprintf(stdout, "%s\n", out.c_str());
  std::fflush(stdout);
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
  google::protobuf::Struct root;
  google::protobuf::Struct* error = (*root.mutable_fields())["error"].mutable_struct_value();
  auto& fields = *error->mutable_fields();
  fields["command"].set_string_value(std::string(what));
  fields["code"].set_string_value(code);
  fields["reason"].set_string_value(client::ReasonToken(client::FailureReasonOf(status)));
  fields["message"].set_string_value(std::string(status.message()));
  Json(root);
}

std::string Output::VersionText(const v1::Version& version) {
  return absl::StrCat(version.major(), ".", version.minor(), ".", version.patch());
}

std::string Output::EventText(const v1::ReloadPhaseEvent& event) const {
  std::string text = absl::StrCat(Paint(absl::StrCat("seq ", event.seq()), Color::kDim), "  ",
                                  PhaseWord(event.phase()), "  ", event.bundle_name(), " ",
                                  VersionText(event.bundle_version()));
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
