/* misregistration: plain C. One contract registered with something wrong that the host must
 * refuse (failing the load) instead of picking one of two answers silently. One source, two
 * bundles:
 *
 * POLYPLUG_MISREGISTRATION_ID_IMPOSTOR (contract_id_impostor): test.impostor@1 stamped with
 *   the contract id of test.counter@1 instead of its own. Real FNV-1a 64 collisions are
 *   impractical to find, so this is how a bundle claims a contract id that belongs to
 *   another name.
 * POLYPLUG_MISREGISTRATION_VERSION_MISMATCH (version_mismatch): test.version_mismatch with
 *   descriptor.version 1.5.0 but iface.contract_version 1.0.0: the version given twice,
 *   differently.
 *
 * polyplug_init returns the host's refusal. */
#include <stddef.h>
#include <stdint.h>

#include "polyplug/abi.h"

#if defined(POLYPLUG_MISREGISTRATION_ID_IMPOSTOR)
static const char kContract[] = "test.impostor";
static const char kClaimedContract[] = "test.counter";
static const PolyplugVersion kDescriptorVersion = {1, 0, 0};
#elif defined(POLYPLUG_MISREGISTRATION_VERSION_MISMATCH)
static const char kContract[] = "test.version_mismatch";
static const char kClaimedContract[] = "test.version_mismatch";
static const PolyplugVersion kDescriptorVersion = {1, 5, 0};
#else
#error "define POLYPLUG_MISREGISTRATION_ID_IMPOSTOR or POLYPLUG_MISREGISTRATION_VERSION_MISMATCH"
#endif

POLYPLUG_EXPORT uint32_t polyplug_abi_version(void);
POLYPLUG_EXPORT PolyplugAbiError polyplug_init(const PolyplugHostApi* host,
                                               const PolyplugBundleInitContext* ctx);

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
  PolyplugPluginDescriptor descriptor = {
      ctx->bundle_name, {kContract, sizeof kContract - 1}, kDescriptorVersion};
  PolyplugGuestContractInterface iface = {0};
  iface.contract_id = polyplug_guest_contract_id(kClaimedContract, sizeof kClaimedContract - 1, 1);
  iface.contract_version.major = 1;
  iface.dispatch_type = POLYPLUG_DISPATCH_NATIVE;
  iface.create_instance = CreateInstance;
  iface.destroy_instance = DestroyInstance;
  PolyplugAbiError err = {POLYPLUG_ABI_OK, {NULL, 0}};
  host->register_guest_contract(host, &descriptor, &iface, &err);
  return err;
}
