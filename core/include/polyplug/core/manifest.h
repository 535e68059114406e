// manifest.toml: parsing and validation, field-compatible with polyplug. The fields are
// described in docs/WRITING_BUNDLES.md §5.
#ifndef POLYPLUG_CORE_MANIFEST_H_
#define POLYPLUG_CORE_MANIFEST_H_

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "polyplug/core/version.h"

namespace polyplug::core {

// A `[[dependency]]` table: a contract this bundle uses.
struct ManifestDependency {
  std::string kind;                   // "contract" or "bundle"
  std::string contract;               // may carry "@major"
  std::string min_version;            // a string such as "1.0"
  std::optional<std::string> bundle;  // by-bundle dependency
  uint64_t contract_id = 0;           // 0 = absent (computed from contract + major)
  std::optional<uint64_t> bundle_id;

  // The contract id this dependency declares: contract_id if set, otherwise
  // GuestContractId(bare contract, major of "@major" or of min_version).
  uint64_t DeclaredContractId() const;
};

struct Manifest {
  std::filesystem::path path;  // the manifest.toml this came from
  std::filesystem::path dir;   // the bundle directory
  std::string loader;
  std::string name;
  uint64_t id = 0;
  std::string version_text;
  Version version;
  std::string file;  // resolved for this platform
  std::vector<ContractRef> provides;
  std::map<std::string, uint32_t> function_count;
  bool needs_reinit_on_dep_reload = false;
  std::vector<ContractRef> bundle_dependencies;
  std::vector<ManifestDependency> dependencies;
  // The first provides/bundle_dependencies entry that breaks the "name[@version]" grammar;
  // ValidateManifest reports it as rule 6, after the identity checks.
  absl::Status reference_error;

  // Contract ids this bundle declares it uses (the enforcement and cascade set).
  std::vector<uint64_t> DeclaredContractIds() const;
};

// Manifests larger than this are rejected before parsing.
inline constexpr size_t kMaxManifestBytes = 1 << 20;

// Parses TOML text. `path` is only used to name the file in errors. Integers above
// INT64_MAX (real ids) are accepted for the u64 fields. Does not validate.
absl::StatusOr<Manifest> ParseManifest(absl::string_view text, const std::filesystem::path& path);

// polyplug's order: loader, name, file, id != 0, id == FNV(name) (BundleTampered),
// provides/bundle_dependencies grammar, dependency contract ids. Errors name file and field.
absl::Status ValidateManifest(const Manifest& manifest);

// Reads <dir>/manifest.toml (or the manifest of the bundle containing `path` when it is a
// file), parses and validates it.
absl::StatusOr<Manifest> LoadManifest(const std::filesystem::path& bundle_path);

// "<os>.<arch>" of the running host, e.g. "linux.x86_64".
absl::string_view HostPlatform();

}  // namespace polyplug::core

#endif  // POLYPLUG_CORE_MANIFEST_H_
