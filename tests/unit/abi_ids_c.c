/* abi_ids_c.c: abi.h's id helpers compiled as C (C11, -Wall -Wextra -Werror, and pedantic
 * diagnostics as errors here), as a plain C bundle would use them. abi_ids_test.cc calls
 * these and compares them with identity.hpp. */
#if defined(__cplusplus)
#error "abi_ids_c.c must be compiled as C"
#endif
#if !defined(__STDC_VERSION__) || __STDC_VERSION__ < 201112L
#error "abi_ids_c.c must be compiled as C11 or later"
#endif
#pragma GCC diagnostic error "-Wpedantic"

#include <stddef.h>
#include <stdint.h>

#include "polyplug/abi.h"

uint64_t polyplug_test_c_fnv1a64(const char* bytes, size_t len, uint64_t seed);
uint64_t polyplug_test_c_bundle_id(const char* name, size_t len);
uint64_t polyplug_test_c_guest_contract_id(const char* name, size_t len, uint32_t major);
uint64_t polyplug_test_c_offset_basis(void);

uint64_t polyplug_test_c_fnv1a64(const char* bytes, size_t len, uint64_t seed) {
  return polyplug_fnv1a64(bytes, len, seed);
}

uint64_t polyplug_test_c_bundle_id(const char* name, size_t len) {
  return polyplug_bundle_id(name, len);
}

uint64_t polyplug_test_c_guest_contract_id(const char* name, size_t len, uint32_t major) {
  return polyplug_guest_contract_id(name, len, major);
}

uint64_t polyplug_test_c_offset_basis(void) { return POLYPLUG_FNV1A64_OFFSET_BASIS; }
