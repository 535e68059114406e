// Semantic versions of bundles and contracts, and "name[@version]" references.
#ifndef POLYPLUG_CORE_VERSION_H_
#define POLYPLUG_CORE_VERSION_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace polyplug::core {

struct Version {
  uint32_t major = 0;
  uint32_t minor = 0;
  uint32_t patch = 0;

  // Same major and minor >= required.minor.
  bool IsCompatibleWith(const Version& required) const {
    return major == required.major && minor >= required.minor;
  }
  std::string ToString() const;
  friend auto operator<=>(const Version&, const Version&) = default;
};

// Parses "major.minor[.patch]" (further components are ignored). A bare "1", pre-release
// suffixes and range operators are rejected. An empty string is 0.0.0.
absl::StatusOr<Version> ParseVersion(absl::string_view text);

// A "name" or "name@version" reference as used by `provides` and dependencies. The
// version may be a bare major ("1") or a full version ("1.2.3").
struct ContractRef {
  std::string name;
  std::optional<Version> version;  // absent when no "@" was given

  uint32_t major() const { return version ? version->major : 0; }
  std::string ToString() const;  // "name@major" or "name"
};

absl::StatusOr<ContractRef> ParseContractRef(absl::string_view text);

}  // namespace polyplug::core

#endif  // POLYPLUG_CORE_VERSION_H_
