#include "polyplug/core/registry.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/src/read_epoch.h"
#include "polyplug/core/error.h"
#include "polyplug/core/ids.h"

namespace polyplug::core {

struct Registry::Record {
  uint64_t bundle_id = 0;
  std::string contract_name;
  std::string plugin_name;
  Version version;
  PolyplugGuestContractInterface iface{};
  std::shared_ptr<const void> code;
};

// Immutable snapshot read by lookups. It shares the records, so a record stays alive
// while any published view that holds it can still be read.
struct Registry::View {
  struct SlotView {
    uint32_t generation = 0;
    std::shared_ptr<const Record> record;
  };
  std::vector<SlotView> slots;
  absl::flat_hash_map<uint64_t, std::vector<uint32_t>> index;  // registration order
};

namespace {

std::string ContractLabel(absl::string_view name, const Version& version) {
  return absl::StrCat(name, "@", version.major);
}

}  // namespace

Registry::Registry() : view_(new View()), epoch_(std::make_unique<ReadEpoch>()) {}

Registry::~Registry() { delete view_.load(); }

ReadPin Registry::Pin() const { return epoch_->Enter(); }

absl::StatusOr<ContractHandle> Registry::Find(uint64_t contract_id, uint32_t min_major) const {
  auto guard = epoch_->Enter();
  const View* view = view_.load(std::memory_order_acquire);
  if (auto it = view->index.find(contract_id); it != view->index.end()) {
    for (uint32_t index : it->second) {
      const View::SlotView& slot = view->slots[index];
      if (slot.record && slot.record->iface.contract_version.major >= min_major) {
        return ContractHandle{index, slot.generation};
      }
    }
  }
  return MakeError(ErrorReason::kContractNotFound,
                   absl::StrCat("no provider of contract ", FormatContractId(contract_id),
                                " with major version >= ", min_major));
}

absl::StatusOr<ContractHandle> Registry::FindInBundle(uint64_t bundle_id, uint64_t contract_id,
                                                      uint32_t min_major) const {
  auto guard = epoch_->Enter();
  const View* view = view_.load(std::memory_order_acquire);
  if (auto it = view->index.find(contract_id); it != view->index.end()) {
    for (uint32_t index : it->second) {
      const View::SlotView& slot = view->slots[index];
      if (slot.record && slot.record->bundle_id == bundle_id &&
          slot.record->iface.contract_version.major >= min_major) {
        return ContractHandle{index, slot.generation};
      }
    }
  }
  return MakeError(
      ErrorReason::kContractNotFound,
      absl::StrCat("bundle ", FormatBundleId(bundle_id), " provides no contract ",
                   FormatContractId(contract_id), " with major version >= ", min_major));
}

absl::StatusOr<const std::shared_ptr<const Registry::Record>*> Registry::RecordOf(
    const View& view, ContractHandle handle) {
  if (handle.index >= view.slots.size()) {
    return MakeError(ErrorReason::kInvalidHandle,
                     absl::StrCat("handle index ", handle.index, " is out of range"));
  }
  const View::SlotView& slot = view.slots[handle.index];
  if (slot.generation != handle.generation) {
    return MakeError(ErrorReason::kStaleHandle,
                     absl::StrCat("handle {index ", handle.index, ", generation ",
                                  handle.generation, "} is stale: the slot is at generation ",
                                  slot.generation, " (its provider was unloaded)"));
  }
  if (!slot.record) {
    return MakeError(ErrorReason::kInvalidHandle,
                     absl::StrCat("handle index ", handle.index, " names an empty slot"));
  }
  return &slot.record;
}

absl::StatusOr<const PolyplugGuestContractInterface*> Registry::Resolve(
    ContractHandle handle) const {
  auto guard = epoch_->Enter();
  auto record = RecordOf(*view_.load(std::memory_order_acquire), handle);
  if (!record.ok()) return record.status();
  return &(**record)->iface;
}

absl::StatusOr<std::shared_ptr<const PolyplugGuestContractInterface>> Registry::Retain(
    ContractHandle handle) const {
  auto guard = epoch_->Enter();
  auto record = RecordOf(*view_.load(std::memory_order_acquire), handle);
  if (!record.ok()) return record.status();
  // Shares ownership of the record, which holds both the interface and the code.
  return std::shared_ptr<const PolyplugGuestContractInterface>(**record, &(**record)->iface);
}

absl::StatusOr<ContractEntry> Registry::Describe(ContractHandle handle) const {
  auto resolved = Resolve(handle);
  if (!resolved.ok()) return resolved.status();
  std::lock_guard<std::mutex> lock(mu_);
  if (handle.index >= slots_.size() || slots_[handle.index].generation != handle.generation ||
      !slots_[handle.index].record) {
    return MakeError(ErrorReason::kStaleHandle, "the handle's provider changed meanwhile");
  }
  return EntryOf(handle.index, slots_[handle.index]);
}

ContractEntry Registry::EntryOf(uint32_t index, const Slot& slot) const {
  ContractEntry e;
  e.handle = {index, slot.generation};
  e.contract_id = slot.record->iface.contract_id;
  e.contract_name = slot.record->contract_name;
  e.plugin_name = slot.record->plugin_name;
  e.version = slot.record->version;
  e.bundle_id = slot.record->bundle_id;
  e.has_invoke = slot.record->iface.invoke != nullptr;
  return e;
}

absl::Status Registry::Check(uint64_t bundle_id, const std::vector<Registration>& staged) const {
  std::lock_guard<std::mutex> lock(mu_);
  return CheckLocked(bundle_id, staged);
}

absl::Status Registry::CheckLocked(uint64_t bundle_id,
                                   const std::vector<Registration>& staged) const {
  (void)bundle_id;
  absl::flat_hash_map<uint64_t, const Registration*> seen;
  for (const Registration& reg : staged) {
    const uint64_t id = reg.iface.contract_id;
    if (auto it = contract_names_.find(id);
        it != contract_names_.end() && it->second != reg.contract_name) {
      return MakeError(
          ErrorReason::kContractIdCollision,
          absl::StrCat("contract id ", FormatContractId(id), " of \"", reg.contract_name,
                       "\" collides with \"", it->second, "\", which already uses it"));
    }
    auto [it, inserted] = seen.emplace(id, &reg);
    if (!inserted) {
      if (it->second->contract_name != reg.contract_name) {
        return MakeError(
            ErrorReason::kContractIdCollision,
            absl::StrCat("contract id ", FormatContractId(id), " of \"", reg.contract_name,
                         "\" collides with \"", it->second->contract_name, "\""));
      }
      return MakeError(ErrorReason::kDuplicateProvider,
                       absl::StrCat("contract ", ContractLabel(reg.contract_name, reg.version),
                                    " registered twice (by \"", it->second->plugin_name,
                                    "\" and \"", reg.plugin_name, "\")"));
    }
  }
  return absl::OkStatus();
}

std::shared_ptr<const Registry::Record> Registry::MakeRecord(uint64_t bundle_id,
                                                             Registration reg) const {
  auto record = std::make_shared<Record>();
  record->bundle_id = bundle_id;
  record->contract_name = std::move(reg.contract_name);
  record->plugin_name = std::move(reg.plugin_name);
  record->version = reg.version;
  record->iface = reg.iface;
  record->code = std::move(reg.code);
  return record;
}

uint32_t Registry::AllocateSlotLocked() {
  if (!free_slots_.empty()) {
    auto lowest = std::min_element(free_slots_.begin(), free_slots_.end());
    uint32_t index = *lowest;
    free_slots_.erase(lowest);
    return index;
  }
  slots_.emplace_back();
  return static_cast<uint32_t>(slots_.size() - 1);
}

void Registry::VacateLocked(uint32_t index) {
  Slot& slot = slots_[index];
  if (!slot.record) return;
  auto& in_index = index_[slot.record->iface.contract_id];
  in_index.erase(std::remove(in_index.begin(), in_index.end(), index), in_index.end());
  if (in_index.empty()) index_.erase(slot.record->iface.contract_id);
  slot.generation += 1;  // wrapping: stale handles must never match again soon
  slot.record.reset();
  free_slots_.push_back(index);
}

absl::StatusOr<std::vector<ContractHandle>> Registry::Publish(uint64_t bundle_id,
                                                              std::vector<Registration> staged) {
  std::vector<ContractHandle> handles;
  const View* old_view = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (bundle_slots_.contains(bundle_id)) {
      return MakeError(
          ErrorReason::kBundleAlreadyLoaded,
          absl::StrCat("bundle ", FormatBundleId(bundle_id), " already has published contracts"));
    }
    if (absl::Status s = CheckLocked(bundle_id, staged); !s.ok()) return s;
    std::vector<uint32_t>& owned = bundle_slots_[bundle_id];
    for (Registration& reg : staged) {
      uint32_t index = AllocateSlotLocked();
      contract_names_[reg.iface.contract_id] = reg.contract_name;
      index_[reg.iface.contract_id].push_back(index);
      slots_[index].record = MakeRecord(bundle_id, std::move(reg));
      owned.push_back(index);
      handles.push_back({index, slots_[index].generation});
    }
    old_view = PublishLocked();
  }
  Retire(old_view);
  return handles;
}

absl::Status Registry::Swap(uint64_t bundle_id, std::vector<Registration> staged) {
  const View* old_view = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (absl::Status s = CheckLocked(bundle_id, staged); !s.ok()) return s;
    std::vector<uint32_t>& owned = bundle_slots_[bundle_id];
    absl::flat_hash_map<uint64_t, uint32_t> old_by_contract;
    for (uint32_t index : owned) {
      if (slots_[index].record) old_by_contract[slots_[index].record->iface.contract_id] = index;
    }
    std::vector<uint32_t> next_owned;
    for (Registration& reg : staged) {
      const uint64_t id = reg.iface.contract_id;
      contract_names_[id] = reg.contract_name;
      if (auto it = old_by_contract.find(id); it != old_by_contract.end()) {
        // Same slot, same generation: handles taken before the reload stay valid.
        slots_[it->second].record = MakeRecord(bundle_id, std::move(reg));
        next_owned.push_back(it->second);
        old_by_contract.erase(it);
      } else {
        uint32_t index = AllocateSlotLocked();
        index_[id].push_back(index);
        slots_[index].record = MakeRecord(bundle_id, std::move(reg));
        next_owned.push_back(index);
      }
    }
    for (const auto& [id, index] : old_by_contract) VacateLocked(index);  // dropped contracts
    owned = std::move(next_owned);
    old_view = PublishLocked();
  }
  Retire(old_view);
  return absl::OkStatus();
}

size_t Registry::Remove(uint64_t bundle_id) {
  const View* old_view = nullptr;
  size_t removed = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = bundle_slots_.find(bundle_id);
    if (it == bundle_slots_.end()) return 0;
    for (uint32_t index : it->second) {
      if (slots_[index].record) ++removed;
      VacateLocked(index);
    }
    bundle_slots_.erase(it);
    old_view = PublishLocked();
  }
  Retire(old_view);
  return removed;
}

const Registry::View* Registry::PublishLocked() {
  auto* view = new View();
  view->slots.reserve(slots_.size());
  for (const Slot& slot : slots_) view->slots.push_back({slot.generation, slot.record});
  view->index = index_;
  const View* old = view_.exchange(view, std::memory_order_acq_rel);
  revision_.fetch_add(1, std::memory_order_acq_rel);
  return old;
}

void Registry::Retire(const View* old_view) {
  // Waiting happens outside mu_, so a reader that holds a Pin while listing (which takes
  // mu_) cannot deadlock a writer.
  std::lock_guard<std::mutex> lock(sync_mu_);
  epoch_->Synchronize();
  delete old_view;  // drops the last reference to replaced or vacated records
}

std::vector<ContractEntry> Registry::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<ContractEntry> out;
  for (uint32_t i = 0; i < slots_.size(); ++i) {
    if (slots_[i].record) out.push_back(EntryOf(i, slots_[i]));
  }
  return out;
}

std::vector<ContractEntry> Registry::ListBundle(uint64_t bundle_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<ContractEntry> out;
  auto it = bundle_slots_.find(bundle_id);
  if (it == bundle_slots_.end()) return out;
  for (uint32_t index : it->second) {
    if (slots_[index].record) out.push_back(EntryOf(index, slots_[index]));
  }
  return out;
}

}  // namespace polyplug::core
