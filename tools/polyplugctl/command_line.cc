#include "polyplugctl/command_line.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace polyplug::ctl {

absl::StatusOr<CommandLine> CommandLine::Parse(int argc, const char* const* argv,
                                               absl::Span<const FlagSpec> flags,
                                               const CommandFlags& command_flags) {
  CommandLine out;
  bool only_operands = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (only_operands || arg == "-" || !absl::StartsWith(arg, "-")) {
      if (out.command_.empty() && !only_operands) {
        out.command_ = arg;
      } else {
        out.operands_.push_back(arg);
      }
      continue;
    }
    if (arg == "--") {
      only_operands = true;
      continue;
    }
    if (arg == "-h") arg = "--help";
    if (!absl::StartsWith(arg, "--")) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown option '", arg, "' (options are spelled --name)"));
    }
    std::string name = arg.substr(2);
    std::string value;
    bool has_value = false;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
      has_value = true;
    }
    for (char& c : name) {
      if (c == '_') c = '-';
    }
    const FlagSpec* spec = nullptr;
    if (!out.command_.empty() && command_flags) {
      for (const FlagSpec& f : command_flags(out.command_)) {
        if (spec == nullptr && f.name == name) spec = &f;
      }
    }
    for (const FlagSpec& f : flags) {
      if (spec == nullptr && f.name == name) spec = &f;
    }
    if (spec == nullptr) return absl::InvalidArgumentError(absl::StrCat("unknown option --", name));
    if (spec->takes_value && !has_value) {
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(absl::StrCat("option --", name, " needs a value"));
      }
      value = argv[++i];
    } else if (!spec->takes_value && has_value) {
      return absl::InvalidArgumentError(absl::StrCat("option --", name, " takes no value"));
    }
    if (out.command_.empty()) out.before_command_.insert(name);
    std::vector<std::string>& values = out.values_[name];
    if (!spec->repeatable) values.clear();
    values.push_back(value);
  }
  return out;
}

std::string CommandLine::Get(absl::string_view flag, absl::string_view fallback) const {
  auto it = values_.find(std::string(flag));
  if (it == values_.end() || it->second.empty()) return std::string(fallback);
  return it->second.back();
}

std::vector<std::string> CommandLine::GetAll(absl::string_view flag) const {
  auto it = values_.find(std::string(flag));
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

std::set<std::string> CommandLine::given() const {
  std::set<std::string> out;
  for (const auto& [name, values] : values_) out.insert(name);
  return out;
}

}  // namespace polyplug::ctl
