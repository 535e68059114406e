// Output: how polyplugctl prints. Human mode writes short lines (colour only on a
// terminal); --json mode writes one JSON object per line on stdout, each an envelope
//
//   {"type": "<what>", "request_id": "<id>", "object": {...}}
//
// where `type` names the schema of `object`: a host.proto message's full name
// ("polyplug.host.v1.ReloadResponse"; `object` is that message as protobuf JSON with the
// proto field names, the JSON grpcurl prints), one of polyplugctl's own objects
// ("polyplugctl.Resynced", ...), or "error". `request_id` is there only for the commands
// that send one (reload, load, unload, push). Json() is the one place that prints JSON.
#ifndef POLYPLUG_TOOLS_POLYPLUGCTL_OUTPUT_H_
#define POLYPLUG_TOOLS_POLYPLUGCTL_OUTPUT_H_

#include <google/protobuf/message.h>
#include <google/protobuf/struct.pb.h>

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "polyplug/host/v1/host.pb.h"

namespace polyplug::ctl {

enum class Color { kNone, kGreen, kRed, kYellow, kBold, kDim };

// The envelope type of an error object.
inline constexpr char kErrorType[] = "error";

class Output {
 public:
  // `request_id`: the id the command sends with its operation, "" for none. It goes into
  // every JSON envelope.
  Output(bool json, bool color, std::string request_id = "")
      : json_(json), color_(color), request_id_(std::move(request_id)) {}

  bool json() const { return json_; }
  const std::string& request_id() const { return request_id_; }

  // JSON mode: `message` in an envelope whose type is the message's full name, as one line.
  void Json(const google::protobuf::Message& message) const;
  // JSON mode: one of polyplugctl's own objects, in an envelope of type `type`
  // ("polyplugctl.Health", ...).
  void Json(absl::string_view type, const google::protobuf::Struct& object) const;
  // Human mode: one line on stdout.
  void Line(absl::string_view text) const;
  // A note on stderr (both modes): progress, reconnects.
  void Note(absl::string_view text) const;
  // `text` in `color` when colour is on.
  std::string Paint(absl::string_view text, Color color) const;
  // "RELOADED" etc. coloured by meaning.
  std::string PhaseWord(host::v1::Phase phase) const;

  // An error of `what` (e.g. "reload greeter"): "polyplugctl: <what>: <CODE>: <message>" on
  // stderr and, in JSON mode, an envelope of type "error" whose object is {"code", "reason",
  // "message", "command"} and "request_id" when the command sent one.
  void Error(absl::string_view what, const absl::Status& status) const;

  // "greeter 2.0.0", "1.2.3".
  static std::string VersionText(const host::v1::Version& version);
  // "seq 5  PREPARING  greeter 1.0.0  [cascade of reload 3]  message"; with `cursor`, the
  // event's position "EPOCH:SEQ" (what `watch --from` takes) instead of "seq 5".
  std::string EventText(const host::v1::ReloadPhaseEvent& event, bool cursor = false) const;

 private:
  // Prints {"type": type, ["request_id": ...,] "object": object_json}.
  void Envelope(absl::string_view type, const std::string& object_json) const;

  bool json_;
  bool color_;
  std::string request_id_;
};

// Whether stdout is a terminal that wants colour (isatty, $NO_COLOR unset, $TERM not dumb).
bool StdoutWantsColor();

// `text` as a JSON string literal, quotes included.
std::string JsonString(absl::string_view text);

}  // namespace polyplug::ctl

#endif  // POLYPLUG_TOOLS_POLYPLUGCTL_OUTPUT_H_
