// Registry: the slots of every published guest contract (docs/SEMANTICS.md §2).
//
// Lookups (Find, Resolve) are lock-free: they read an immutable view published by the
// last write. Writes are transactional: a bundle's providers appear together (Publish),
// are swapped into their old slots on reload keeping generations (Swap), or are vacated
// together with a generation bump (Remove). Each write bumps the revision once.
#ifndef POLYPLUG_CORE_REGISTRY_H_
#define POLYPLUG_CORE_REGISTRY_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "polyplug/abi.h"
#include "polyplug/core/read_pin.h"
#include "polyplug/core/version.h"

namespace polyplug::core {

class ReadEpoch;

struct ContractHandle {
  uint32_t index = POLYPLUG_NULL_HANDLE_INDEX;
  uint32_t generation = 0;

  bool is_null() const { return index == POLYPLUG_NULL_HANDLE_INDEX; }
  PolyplugGuestContractHandle ToAbi() const { return {index, generation}; }
  friend bool operator==(const ContractHandle&, const ContractHandle&) = default;
};

// One provider staged by a bundle's polyplug_init.
struct Registration {
  std::string plugin_name;
  std::string contract_name;  // bare, e.g. "image.decode"
  Version version;
  PolyplugGuestContractInterface iface{};
  // Keeps the code `iface` points into mapped (the bundle's library); may be null.
  std::shared_ptr<const void> code;
};

// A published provider, as listed.
struct ContractEntry {
  ContractHandle handle;
  uint64_t contract_id = 0;
  std::string contract_name;
  std::string plugin_name;
  Version version;
  uint64_t bundle_id = 0;
  bool has_invoke = false;
};

class Registry {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Keeps every interface pointer resolved under it valid until it is destroyed. Writers
  // wait for pins, so a thread must not load, reload or unload while it holds one.
  ReadPin Pin() const;

  // First provider (in registration order) of contract_id whose major >= min_major.
  // CONTRACT_NOT_FOUND otherwise. Lock-free.
  absl::StatusOr<ContractHandle> Find(uint64_t contract_id, uint32_t min_major) const;
  absl::StatusOr<ContractHandle> FindInBundle(uint64_t bundle_id, uint64_t contract_id,
                                              uint32_t min_major) const;

  // INVALID_HANDLE when out of range or vacant, STALE_HANDLE when the generation moved
  // on. The pointer is valid while a Pin is held, or until the provider next changes.
  absl::StatusOr<const PolyplugGuestContractInterface*> Resolve(ContractHandle handle) const;

  // Like Resolve, but the interface and the code it points into stay valid for as long as
  // the returned pointer lives, even after its provider is reloaded or unloaded, with no
  // pin held: for calls that may run long (remote calls) and must not hold up writers.
  absl::StatusOr<std::shared_ptr<const PolyplugGuestContractInterface>> Retain(
      ContractHandle handle) const;

  // The entry behind a handle (same errors as Resolve).
  absl::StatusOr<ContractEntry> Describe(ContractHandle handle) const;

  uint64_t revision() const { return revision_.load(std::memory_order_acquire); }

  // Checks staged registrations for collisions and duplicates without publishing.
  absl::Status Check(uint64_t bundle_id, const std::vector<Registration>& staged) const;

  // Publishes all of a bundle's providers in one write. Fails, publishing nothing, on
  // a contract id collision, a duplicate, or when the bundle already has slots.
  absl::StatusOr<std::vector<ContractHandle>> Publish(uint64_t bundle_id,
                                                      std::vector<Registration> staged);

  // Reload swap: each staged provider whose contract the bundle already provided moves
  // into the old slot (same index and generation); old providers with no successor are
  // vacated; new contracts get new slots. Returns once no reader can see the old ones.
  absl::Status Swap(uint64_t bundle_id, std::vector<Registration> staged);

  // Vacates every slot of the bundle (generation + 1). Returns the number vacated, after
  // no reader can see them any more.
  size_t Remove(uint64_t bundle_id);

  // Published providers, in slot order; or those of one bundle.
  std::vector<ContractEntry> List() const;
  std::vector<ContractEntry> ListBundle(uint64_t bundle_id) const;

 private:
  struct Record;
  struct View;
  struct Slot {
    uint32_t generation = 0;
    std::shared_ptr<const Record> record;  // null = vacant
  };

  // Publishes a view of the current slots and bumps the revision; returns the old view.
  const View* PublishLocked();
  // Waits until no reader can see `old_view`, then frees it.
  void Retire(const View* old_view);
  absl::Status CheckLocked(uint64_t bundle_id, const std::vector<Registration>& staged) const;
  void VacateLocked(uint32_t index);
  uint32_t AllocateSlotLocked();
  // The record behind a handle in `view`, or why there is none.
  static absl::StatusOr<const std::shared_ptr<const Record>*> RecordOf(const View& view,
                                                                       ContractHandle handle);
  std::shared_ptr<const Record> MakeRecord(uint64_t bundle_id, Registration reg) const;
  ContractEntry EntryOf(uint32_t index, const Slot& slot) const;

  mutable std::mutex mu_;  // writers only
  std::mutex sync_mu_;     // serializes grace periods
  std::vector<Slot> slots_;
  std::vector<uint32_t> free_slots_;
  absl::flat_hash_map<uint64_t, std::string> contract_names_;
  absl::flat_hash_map<uint64_t, std::vector<uint32_t>> index_;
  absl::flat_hash_map<uint64_t, std::vector<uint32_t>> bundle_slots_;

  std::atomic<const View*> view_;
  std::atomic<uint64_t> revision_{0};
  const std::unique_ptr<ReadEpoch> epoch_;  // readers enter it; writers wait for it
};

}  // namespace polyplug::core

#endif  // POLYPLUG_CORE_REGISTRY_H_
