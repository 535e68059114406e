// BundleListing: the loaded bundles as of one position of the event journal.
//
// What ListBundles, ListContracts and a subscription's snapshot return with the seq they
// are current at, so that watching from that cursor misses nothing and repeats nothing
// that matters (Kubernetes' list-then-watch with resourceVersion). Lookups never wait for
// mutations, so the position is found optimistically: the listing is read between two
// reads of the journal's last seq, again while they differ.
#ifndef POLYPLUG_HOST_SRC_BUNDLE_LISTING_H_
#define POLYPLUG_HOST_SRC_BUNDLE_LISTING_H_

#include <cstdint>
#include <vector>

#include "host/src/crash_recovery.h"
#include "polyplug/core/phase_event.h"
#include "polyplug/core/registry.h"
#include "polyplug/core/runtime.h"

namespace polyplug::host {

struct BundleListing {
  uint64_t seq = 0;  // every event up to it is reflected, none after it
  std::vector<core::BundleInfo> bundles;
  std::vector<core::ContractEntry> contracts;  // with `contracts` only
  std::vector<core::PhaseEvent> not_restored;  // with `recovery`: left out by a restart
};

// `recovery` may be null. With `contracts`, also the registry's entries (of `bundle_id`
// only, when not 0).
BundleListing ListAtJournalPosition(const core::Runtime& runtime, const CrashRecovery* recovery,
                                    bool contracts = false, uint64_t bundle_id = 0);

}  // namespace polyplug::host

#endif  // POLYPLUG_HOST_SRC_BUNDLE_LISTING_H_
