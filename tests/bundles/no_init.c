/* no_init: plain C. Exports polyplug_abi_version but no polyplug_init, so loading must fail
 * with INIT_SYMBOL_MISSING. */
#include <stdint.h>

#include "polyplug/abi.h"

POLYPLUG_EXPORT uint32_t polyplug_abi_version(void);

POLYPLUG_EXPORT uint32_t polyplug_abi_version(void) { return POLYPLUG_ABI_VERSION; }
