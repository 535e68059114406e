// CommandLine: polyplugctl's arguments split into a command, its operands and its flags.
// Flags may come before or after the command, as --name VALUE or --name=VALUE.
#ifndef POLYPLUG_TOOLS_POLYPLUGCTL_COMMAND_LINE_H_
#define POLYPLUG_TOOLS_POLYPLUGCTL_COMMAND_LINE_H_

#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace polyplug::ctl {

// A flag CommandLine::Parse accepts. A literal type, so that commands can list their flags
// in constexpr tables.
struct FlagSpec {
  absl::string_view name;  // without dashes, e.g. "timeout"; not owned (a literal)
  bool takes_value = false;
  bool repeatable = false;  // values accumulate
};

class CommandLine {
 public:
  // The flags a command declares, by the command's name; empty for an unknown name.
  using CommandFlags = std::function<absl::Span<const FlagSpec>(absl::string_view command)>;

  // Parses argv[1..]: the first operand is the command, the rest its operands. Every
  // --flag must be in `flags` (the first spec of a name counts); INVALID_ARGUMENT names an
  // unknown flag or a missing value. After the command word, a flag that
  // `command_flags(command)` declares is read by the command's spec: that is how
  // `wait --version X.Y.Z` takes a value while the global --version takes none.
  static absl::StatusOr<CommandLine> Parse(int argc, const char* const* argv,
                                           absl::Span<const FlagSpec> flags,
                                           const CommandFlags& command_flags = nullptr);

  const std::string& command() const { return command_; }
  const std::vector<std::string>& operands() const { return operands_; }
  bool Has(absl::string_view flag) const { return values_.contains(std::string(flag)); }
  // The last value of a flag, or `fallback`.
  std::string Get(absl::string_view flag, absl::string_view fallback = "") const;
  std::vector<std::string> GetAll(absl::string_view flag) const;
  // The flags given, for checking that a command accepts them.
  std::set<std::string> given() const;
  // Whether `flag` was given before the command word (where only the global flags' specs
  // apply to a name that a command also has).
  bool GivenBeforeCommand(absl::string_view flag) const {
    return before_command_.contains(std::string(flag));
  }

 private:
  std::string command_;
  std::vector<std::string> operands_;
  std::map<std::string, std::vector<std::string>> values_;
  std::set<std::string> before_command_;
};

}  // namespace polyplug::ctl

#endif  // POLYPLUG_TOOLS_POLYPLUGCTL_COMMAND_LINE_H_
