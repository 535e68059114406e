/* contract_id_impostor: plain C. Registers contract "test.impostor" (major 1) but stamps it with
 * the contract id of test.counter@1 (FNV-1a 64 of "guest_contract:test.counter@1") instead of its
 * own. Real FNV-1a 64 collisions are impractical to find, so this is how a bundle claims a
 * contract id that belongs to another name; the host must refuse the registration (the id does
 * not match the name) and fail the load. polyplug_init returns the host's error. */
#include <stddef.h>
#include <stdint.h>

#include "polyplug/abi.h"

POLYPLUG_EXPORT uint32_t polyplug_abi_version(void);
POLYPLUG_EXPORT PolyplugAbiError polyplug_init(const PolyplugHostApi* host,
                                               const PolyplugBundleInitContext* ctx);

static uint64_t Fnv1a64(const char* text) {
  uint64_t hash = 14695981039346656037ull;
  for (const char* p = text; *p != '\0'; ++p) {
    hash ^= (uint8_t)*p;
    hash *= 1099511628211ull;
  }
  return hash;
}

static PolyplugAbiError CreateInstance(void* user_data, const PolyplugHostApi* host,
                                       PolyplugBytesView args, PolyplugGuestContractInstance* out) {
  (void)user_data;
  (void)host;
  (void)args;
  out->data = NULL;
  PolyplugAbiError ok = {POLYPLUG_ABI_OK, {NULL, 0}};
  return ok;
}

static void DestroyInstance(void* user_data, const PolyplugHostApi* host,
                            PolyplugGuestContractInstance instance) {
  (void)user_data;
  (void)host;
  (void)instance;
}

POLYPLUG_EXPORT uint32_t polyplug_abi_version(void) { return POLYPLUG_ABI_VERSION; }

POLYPLUG_EXPORT PolyplugAbiError polyplug_init(const PolyplugHostApi* host,
                                               const PolyplugBundleInitContext* ctx) {
  (void)ctx;
  static const char kPlugin[] = "contract_id_impostor";
  static const char kName[] = "test.impostor";
  PolyplugPluginDescriptor descriptor = {
      {kPlugin, sizeof kPlugin - 1}, {kName, sizeof kName - 1}, {1, 0, 0}};
  PolyplugGuestContractInterface iface = {0};
  iface.contract_id = Fnv1a64("guest_contract:test.counter@1");
  iface.contract_version = descriptor.version;
  iface.dispatch_type = POLYPLUG_DISPATCH_NATIVE;
  iface.create_instance = CreateInstance;
  iface.destroy_instance = DestroyInstance;
  PolyplugAbiError err = {POLYPLUG_ABI_OK, {NULL, 0}};
  host->register_guest_contract(host, &descriptor, &iface, &err);
  return err;
}
