#include "polyplug/core/ids.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace polyplug::core {

std::string FormatBundleId(uint64_t id) { return absl::StrCat("0x", absl::Hex(id)); }

std::string FormatContractId(uint64_t id) { return absl::StrFormat("0x%016X", id); }

}  // namespace polyplug::core
