// polyplug/identity.hpp: identity hashing shared by bundles and the runtime.
//
// FNV-1a 64 over UTF-8 bytes, bit-exact with the polyplug runtime: bundle id = hash(name),
// contract ids hash "guest_contract:<name>@<major>" / "host_contract:<name>@<major>".
// Header-only and constexpr, so a bundle can compute ids at compile time.
#ifndef POLYPLUG_IDENTITY_HPP_
#define POLYPLUG_IDENTITY_HPP_

#include <cstdint>
#include <string_view>

namespace polyplug {

inline constexpr uint64_t kFnvOffsetBasis = 0xcbf29ce484222325ULL;
inline constexpr uint64_t kFnvPrime = 0x100000001b3ULL;

// `seed` allows hashing a string in pieces: Fnv1a64(b, Fnv1a64(a)) == Fnv1a64(a + b).
constexpr uint64_t Fnv1a64(std::string_view bytes, uint64_t seed = kFnvOffsetBasis) {
  uint64_t hash = seed;
  for (char c : bytes) {
    hash ^= static_cast<uint8_t>(c);
    hash *= kFnvPrime;
  }
  return hash;
}

// Bundle id = FNV-1a 64 of the bundle name (what manifest.toml's `id` holds).
constexpr uint64_t BundleId(std::string_view name) { return Fnv1a64(name); }

namespace detail {
// FNV-1a 64 of "<prefix><name>@<decimal major>", computed without building the string.
constexpr uint64_t PrefixedContractId(std::string_view prefix, std::string_view name,
                                      uint32_t major) {
  uint64_t hash = Fnv1a64(name, Fnv1a64(prefix));
  hash = Fnv1a64("@", hash);
  char digits[10] = {};
  int count = 0;
  do {
    digits[count++] = static_cast<char>('0' + major % 10);
    major /= 10;
  } while (major != 0);
  while (count > 0) hash = Fnv1a64(std::string_view(&digits[--count], 1), hash);
  return hash;
}
}  // namespace detail

// FNV-1a 64 of "guest_contract:<name>@<major>" (decimal major). Minor and patch never
// enter the id.
constexpr uint64_t GuestContractId(std::string_view name, uint32_t major) {
  return detail::PrefixedContractId("guest_contract:", name, major);
}

// FNV-1a 64 of "host_contract:<name>@<major>".
constexpr uint64_t HostContractId(std::string_view name, uint32_t major) {
  return detail::PrefixedContractId("host_contract:", name, major);
}

}  // namespace polyplug

#endif  // POLYPLUG_IDENTITY_HPP_
