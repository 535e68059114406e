#include "polyplug/core/version.h"

#include <charconv>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace polyplug::core {
namespace {

bool ParseU32(absl::string_view text, uint32_t* out) {
  if (text.empty()) return false;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && end == text.data() + text.size();
}

}  // namespace

std::string Version::ToString() const { return absl::StrCat(major, ".", minor, ".", patch); }

absl::StatusOr<Version> ParseVersion(absl::string_view text) {
  if (text.empty()) return Version{};
  std::vector<absl::string_view> parts = absl::StrSplit(text, '.');
  if (parts.size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("version \"", text, "\" must be major.minor[.patch]"));
  }
  Version v;
  uint32_t* fields[] = {&v.major, &v.minor, &v.patch};
  for (size_t i = 0; i < parts.size() && i < 3; ++i) {
    if (!ParseU32(parts[i], fields[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("version \"", text, "\" has a non-numeric component \"", parts[i], "\""));
    }
  }
  return v;
}

std::string ContractRef::ToString() const {
  return version ? absl::StrCat(name, "@", version->major) : name;
}

absl::StatusOr<ContractRef> ParseContractRef(absl::string_view text) {
  ContractRef ref;
  size_t at = text.find('@');
  absl::string_view name = text.substr(0, at);
  if (name.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" has an empty name"));
  }
  for (char c : name) {
    if (static_cast<unsigned char>(c) <= ' ') {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", text, "\" has whitespace or a control character in its name"));
    }
  }
  ref.name = std::string(name);
  if (at == absl::string_view::npos) return ref;
  absl::string_view version = text.substr(at + 1);
  uint32_t major = 0;
  if (ParseU32(version, &major)) {
    ref.version = Version{major, 0, 0};
    return ref;
  }
  if (version.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", text, "\" has an empty version after '@'"));
  }
  auto parsed = ParseVersion(version);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("\"", text, "\": ", parsed.status().message()));
  }
  ref.version = *parsed;
  return ref;
}

}  // namespace polyplug::core
