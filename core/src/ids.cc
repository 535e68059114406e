#include "polyplug/core/ids.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace polyplug::core {

uint64_t GuestContractId(absl::string_view name, uint32_t major) {
  return Fnv1a64(absl::StrCat("guest_contract:", name, "@", major));
}

uint64_t HostContractId(absl::string_view name, uint32_t major) {
  return Fnv1a64(absl::StrCat("host_contract:", name, "@", major));
}

std::string FormatBundleId(uint64_t id) { return absl::StrCat("0x", absl::Hex(id)); }

std::string FormatContractId(uint64_t id) { return absl::StrFormat("0x%016X", id); }

}  // namespace polyplug::core
