// Identity hashing: FNV-1a 64 over UTF-8 bytes, bit-exact with polyplug's ids.
#ifndef POLYPLUG_CORE_IDS_H_
#define POLYPLUG_CORE_IDS_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/strings/string_view.h"
#include "polyplug/identity.hpp"

namespace polyplug::core {

inline constexpr uint64_t kFnvOffsetBasis = ::polyplug::kFnvOffsetBasis;
inline constexpr uint64_t kFnvPrime = ::polyplug::kFnvPrime;

constexpr uint64_t Fnv1a64(absl::string_view bytes) {
  return ::polyplug::Fnv1a64(std::string_view(bytes.data(), bytes.size()));
}

// Bundle id = FNV-1a 64 of the bundle name. Id 0 is reserved for the host itself.
constexpr uint64_t BundleId(absl::string_view name) { return Fnv1a64(name); }

// FNV-1a 64 of "guest_contract:<name>@<major>" (decimal major).
constexpr uint64_t GuestContractId(absl::string_view name, uint32_t major) {
  return ::polyplug::GuestContractId(std::string_view(name.data(), name.size()), major);
}

// FNV-1a 64 of "host_contract:<name>@<major>".
constexpr uint64_t HostContractId(absl::string_view name, uint32_t major) {
  return ::polyplug::HostContractId(std::string_view(name.data(), name.size()), major);
}

// "0x" + lower-case hex without padding, as runtime error messages print bundle ids.
std::string FormatBundleId(uint64_t id);

// "0x" + 16 upper-case hex digits, as registry errors print contract ids.
std::string FormatContractId(uint64_t id);

}  // namespace polyplug::core

#endif  // POLYPLUG_CORE_IDS_H_
