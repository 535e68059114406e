// Output: how polyplugctl prints. Human mode writes short lines (colour only on a
// terminal); --json mode writes one JSON object per line on stdout, with the field names
// and enum values of host.proto (the JSON grpcurl prints for the same messages).
#ifndef POLYPLUG_TOOLS_POLYPLUGCTL_OUTPUT_H_
#define POLYPLUG_TOOLS_POLYPLUGCTL_OUTPUT_H_

#include <google/protobuf/message.h>
#include <google/protobuf/struct.pb.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "polyplug/host/v1/host.pb.h"

namespace polyplug::ctl {

enum class Color { kNone, kGreen, kRed, kYellow, kBold, kDim };

class Output {
 public:
  Output(bool json, bool color) : json_(json), color_(color) {}

  bool json() const { return json_; }

  // JSON mode: `message` as one line.
  void Json(const google::protobuf::Message& message) const;
  // Human mode: one line on stdout.
  void Line(absl::string_view text) const;
  // A note on stderr (both modes): progress, reconnects.
  void Note(absl::string_view text) const;
  // `text` in `color` when colour is on.
  std::string Paint(absl::string_view text, Color color) const;
  // "RELOADED" etc. coloured by meaning.
  std::string PhaseWord(host::v1::Phase phase) const;

  // An error of `what` (e.g. "reload greeter"): "polyplugctl: <what>: <CODE>: <message>" on
  // stderr and, in JSON mode, {"error": {"code", "reason", "message", "command"}} on stdout.
  void Error(absl::string_view what, const absl::Status& status) const;

  // "greeter 2.0.0", "1.2.3".
  static std::string VersionText(const host::v1::Version& version);
  // "seq 5  PREPARING  greeter 1.0.0  [cascade of reload 3]  message".
  std::string EventText(const host::v1::ReloadPhaseEvent& event) const;

 private:
  bool json_;
  bool color_;
};

// Whether stdout is a terminal that wants colour (isatty, $NO_COLOR unset, $TERM not dumb).
bool StdoutWantsColor();

}  // namespace polyplug::ctl

#endif  // POLYPLUG_TOOLS_POLYPLUGCTL_OUTPUT_H_
