// Identity hashing: FNV-1a 64 over UTF-8 bytes, bit-exact with polyplug's ids.
#ifndef POLYPLUG_CORE_IDS_H_
#define POLYPLUG_CORE_IDS_H_

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"

namespace polyplug::core {

inline constexpr uint64_t kFnvOffsetBasis = 0xcbf29ce484222325ULL;
inline constexpr uint64_t kFnvPrime = 0x100000001b3ULL;

constexpr uint64_t Fnv1a64(absl::string_view bytes) {
  uint64_t hash = kFnvOffsetBasis;
  for (char c : bytes) {
    hash ^= static_cast<uint8_t>(c);
    hash *= kFnvPrime;
  }
  return hash;
}

// Bundle id = FNV-1a 64 of the bundle name. Id 0 is reserved for the host itself.
constexpr uint64_t BundleId(absl::string_view name) { return Fnv1a64(name); }

// FNV-1a 64 of "guest_contract:<name>@<major>" (decimal major).
uint64_t GuestContractId(absl::string_view name, uint32_t major);

// FNV-1a 64 of "host_contract:<name>@<major>".
uint64_t HostContractId(absl::string_view name, uint32_t major);

// "0x" + lower-case hex without padding, as runtime error messages print bundle ids.
std::string FormatBundleId(uint64_t id);

// "0x" + 16 upper-case hex digits, as registry errors print contract ids.
std::string FormatContractId(uint64_t id);

}  // namespace polyplug::core

#endif  // POLYPLUG_CORE_IDS_H_
