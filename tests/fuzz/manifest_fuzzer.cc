// libFuzzer target: arbitrary bytes as a bundle's manifest.toml, parsed and validated the way
// LoadManifest does (ParseManifest, then ValidateManifest), then the derived contract ids.
// Crashes, sanitizer reports and timeouts are findings; rejected manifests are not.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "polyplug/core/manifest.h"
#include "polyplug/core/version.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace core = ::polyplug::core;
  // LoadManifest rejects larger files before parsing.
  if (size > core::kMaxManifestBytes) return -1;
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  static const std::filesystem::path kPath = "fuzz/bundle/manifest.toml";
  absl::StatusOr<core::Manifest> manifest = core::ParseManifest(text, kPath);
  if (!manifest.ok()) return 0;
  const absl::Status valid = core::ValidateManifest(*manifest);
  // Touch every field the runtime reads from a parsed manifest.
  volatile uint64_t sink = manifest->id;
  for (const uint64_t id : manifest->DeclaredContractIds()) sink = sink ^ id;
  for (const core::ManifestDependency& dependency : manifest->dependencies) {
    sink = sink ^ dependency.DeclaredContractId();
  }
  for (const core::ContractRef& ref : manifest->provides) sink = sink ^ ref.ToString().size();
  for (const core::ContractRef& ref : manifest->bundle_dependencies) {
    sink = sink ^ ref.ToString().size();
  }
  sink = sink ^ manifest->version.ToString().size();
  if (valid.ok()) {
    // A valid manifest's references all parse on their own.
    for (const core::ContractRef& ref : manifest->provides) {
      sink = sink ^ static_cast<uint64_t>(core::ParseContractRef(ref.ToString()).ok());
    }
  }
  (void)sink;
  return 0;
}
