#include "host/src/bundle_listing.h"

#include <algorithm>
#include <map>
#include <string>

namespace polyplug::host {

BundleListing ListAtJournalPosition(const core::Runtime& runtime, const CrashRecovery* recovery,
                                    bool contracts, uint64_t bundle_id) {
  const core::EventJournal& journal = runtime.journal();
  BundleListing listing;
  for (int attempt = 0; attempt < 16; ++attempt) {
    listing.seq = journal.last_seq();
    listing.bundles = runtime.ListBundles();
    if (contracts) {
      listing.contracts =
          bundle_id == 0 ? runtime.registry().List() : runtime.registry().ListBundle(bundle_id);
    }
    if (recovery) listing.not_restored = recovery->NotRestored();
    if (journal.last_seq() == listing.seq) break;
  }
  // An unload announces UNLOADING before it removes the bundle: one whose last event up to
  // the position is UNLOADING is gone as of it, even if it is still listed.
  constexpr uint64_t kRecentEvents = 64;
  const uint64_t from = listing.seq > kRecentEvents ? listing.seq - kRecentEvents : 0;
  const uint64_t earliest = journal.earliest_seq();
  auto recent = journal.ReadAfter(std::max(from, earliest > 0 ? earliest - 1 : 0));
  if (recent.ok()) {
    std::map<std::string, core::Phase> last_phase;
    for (const core::PhaseEvent& e : *recent) {
      if (e.seq <= listing.seq) last_phase[e.bundle_name] = e.phase;
    }
    auto unloading = [&](const std::string& name) {
      auto it = last_phase.find(name);
      return it != last_phase.end() && it->second == core::Phase::kUnloading;
    };
    std::vector<uint64_t> gone;
    for (const core::BundleInfo& b : listing.bundles) {
      if (unloading(b.name)) gone.push_back(b.id);
    }
    std::erase_if(listing.bundles, [&](const core::BundleInfo& b) { return unloading(b.name); });
    std::erase_if(listing.contracts, [&](const core::ContractEntry& c) {
      return std::find(gone.begin(), gone.end(), c.bundle_id) != gone.end();
    });
  }
  // A bundle that loaded since is no longer left out (its entry goes just after LOADED).
  std::erase_if(listing.not_restored, [&](const core::PhaseEvent& e) {
    return std::any_of(listing.bundles.begin(), listing.bundles.end(),
                       [&](const core::BundleInfo& b) { return b.name == e.bundle_name; });
  });
  return listing;
}

}  // namespace polyplug::host
