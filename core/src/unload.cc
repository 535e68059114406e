// Unloading (docs/SEMANTICS.md §6): refused while other bundles depend on the bundle, or
// with those dependents unloaded first (depth first, in name order). Each bundle fires
// UNLOADING while its code is still mapped, then leaves the registry and is closed.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/src/runtime_impl.h"
#include "polyplug/core/error.h"
#include "polyplug/core/ids.h"

namespace polyplug::core {

absl::StatusOr<std::vector<std::string>> Runtime::Impl::Unload(absl::string_view name,
                                                               UnloadMode mode) {
  if (absl::Status s = CheckNotReentrant(); !s.ok()) return s;
  OperationLock op(this);
  const uint64_t id = BundleId(name);
  {
    std::lock_guard<std::mutex> lock(bundles_mu_);
    if (!bundles_.contains(id)) return BundleNotFound(name);
  }
  OperationContext ctx;
  std::vector<std::string> unloaded;
  if (mode == UnloadMode::kRefuseIfInUse) {
    std::vector<std::string> dependents;
    {
      std::lock_guard<std::mutex> lock(bundles_mu_);
      for (uint64_t d : DependentsLocked(id, ExportedContractsLocked(id)))
        dependents.push_back(bundles_.at(d).manifest.name);
    }
    if (!dependents.empty()) {
      std::sort(dependents.begin(), dependents.end());
      return MakeError(
          ErrorReason::kDependencyInUse,
          absl::StrCat("cannot unload \"", name, "\": bundle(s) ", absl::StrJoin(dependents, ", "),
                       " depend on its contracts; unload them first or cascade"));
    }
    UnloadOne(id, NextOperationId(), ctx, unloaded);
  } else {
    std::set<uint64_t> visited;
    UnloadCascade(id, ctx, visited, unloaded);
  }
  return unloaded;
}

void Runtime::Impl::UnloadCascade(uint64_t id, OperationContext& ctx, std::set<uint64_t>& visited,
                                  std::vector<std::string>& unloaded) {
  if (!visited.insert(id).second) return;  // a cycle
  std::vector<std::pair<std::string, uint64_t>> dependents;
  {
    std::lock_guard<std::mutex> lock(bundles_mu_);
    for (uint64_t d : DependentsLocked(id, ExportedContractsLocked(id)))
      dependents.push_back({bundles_.at(d).manifest.name, d});
  }
  std::sort(dependents.begin(), dependents.end());
  for (const auto& d : dependents) UnloadCascade(d.second, ctx, visited, unloaded);
  bool still_loaded;
  {
    std::lock_guard<std::mutex> lock(bundles_mu_);
    still_loaded = bundles_.contains(id);
  }
  if (still_loaded) UnloadOne(id, NextOperationId(), ctx, unloaded);
}

void Runtime::Impl::UnloadOne(uint64_t id, uint64_t op_id, OperationContext& ctx,
                              std::vector<std::string>& unloaded) {
  Manifest manifest;
  {
    std::lock_guard<std::mutex> lock(bundles_mu_);
    manifest = bundles_.at(id).manifest;
  }
  PhaseEvent event = BaseEvent(Phase::kUnloading, manifest);
  event.reload_id = event.root_reload_id = op_id;
  event.live_instances = LiveInstancesOf(id);
  Emit(ctx, std::move(event));
  if (const uint64_t live = LiveInstancesOf(id); live > 0) {
    runtime_->Log(LogLevel::kWarn, "runtime",
                  absl::StrCat(live, " live guest instance(s) of bundle \"", manifest.name,
                               "\" remain after UNLOADING; unloading anyway"));
  }
  DropBundle(id);
  unloaded.push_back(manifest.name);
}

void Runtime::Impl::DropBundle(uint64_t id) {
  // The contracts it provided, before they leave the registry: their instances die with it.
  std::vector<uint64_t> contracts;
  for (const ContractEntry& e : runtime_->registry_.ListBundle(id))
    contracts.push_back(e.contract_id);
  runtime_->registry_.Remove(id);  // waits until no reader can reach its interfaces
  ForgetInstances(contracts);
  std::shared_ptr<NativeLibrary> library;
  std::string name;
  {
    std::lock_guard<std::mutex> lock(bundles_mu_);
    auto it = bundles_.find(id);
    if (it == bundles_.end()) return;
    library = std::move(it->second.library);
    name = it->second.manifest.name;
    bundles_.erase(it);
  }
  CloseLibrary(std::move(library), name);
}

}  // namespace polyplug::core
