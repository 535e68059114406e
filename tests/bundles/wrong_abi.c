/* wrong_abi: plain C. Reports ABI version 999, so loading must fail with ABI_MISMATCH
 * before polyplug_init (which would succeed) is ever called. */
#include <stddef.h>
#include <stdint.h>

#include "polyplug/abi.h"

POLYPLUG_EXPORT uint32_t polyplug_abi_version(void);
POLYPLUG_EXPORT PolyplugAbiError polyplug_init(const PolyplugHostApi* host,
                                               const PolyplugBundleInitContext* ctx);

POLYPLUG_EXPORT uint32_t polyplug_abi_version(void) { return 999u; }

POLYPLUG_EXPORT PolyplugAbiError polyplug_init(const PolyplugHostApi* host,
                                               const PolyplugBundleInitContext* ctx) {
  (void)host;
  (void)ctx;
  PolyplugAbiError ok = {POLYPLUG_ABI_OK, {NULL, 0}};
  return ok;
}
