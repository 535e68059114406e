#include "polyplug/host/remote_instances.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "polyplug/core/error.h"
#include "polyplug/core/ids.h"

namespace polyplug::host {

using core::ErrorReason;
using core::MakeError;

RemoteInstances::RemoteInstances(core::Runtime& runtime, RemoteInstancesOptions options)
    : runtime_(runtime), options_(options) {}

RemoteInstances::~RemoteInstances() {
  absl::flat_hash_map<uint64_t, Record> live;
  {
    std::lock_guard<std::mutex> lock(mu_);
    live.swap(live_);
  }
  auto guard = runtime_.Pin();
  for (auto& [id, record] : live) runtime_.DestroyInstance(*record.iface, record.instance);
}

absl::StatusOr<const PolyplugGuestContractInterface*> RemoteInstances::Resolve(
    core::ContractHandle handle, core::ContractEntry* entry) const {
  absl::StatusOr<core::ContractEntry> described = runtime_.registry().Describe(handle);
  if (!described.ok()) return described.status();
  *entry = *std::move(described);
  return runtime_.Resolve(handle);
}

absl::StatusOr<std::string> RemoteInstances::Call(const PolyplugGuestContractInterface& iface,
                                                  PolyplugGuestContractInstance instance,
                                                  absl::string_view label, absl::string_view method,
                                                  absl::string_view request) const {
  if (iface.invoke == nullptr) {
    return MakeError(ErrorReason::kNotInvocable,
                     absl::StrCat(label,
                                  " has no message-style invoke entry, so it cannot be called "
                                  "remotely (a bundle exposes methods by name with guest.hpp's "
                                  "Contract<...>().Method(name, fn))"));
  }
  std::string response;
  const PolyplugByteSink sink{&response, [](void* context, const uint8_t* data, size_t len) {
                                static_cast<std::string*>(context)->append(
                                    reinterpret_cast<const char*>(data), len);
                              }};
  const PolyplugAbiError error = iface.invoke(
      iface.user_data, instance, PolyplugStringView{method.data(), method.size()},
      PolyplugBytesView{reinterpret_cast<const uint8_t*>(request.data()), request.size()}, &sink);
  if (error.code == POLYPLUG_ABI_OK) return response;
  if (error.code == POLYPLUG_ABI_FUNCTION_NOT_AVAILABLE) {
    return MakeError(
        ErrorReason::kMethodNotFound,
        absl::StrCat(label, " has no method \"", method, "\": ", core::DescribeAbiError(error)));
  }
  return MakeError(ErrorReason::kCallFailed,
                   absl::StrCat("method \"", method, "\" of ", label,
                                " failed: ", core::DescribeAbiError(error)));
}

namespace {

std::string LabelOf(const core::ContractEntry& entry, const std::string& bundle_name) {
  return absl::StrCat(entry.contract_name, "@", entry.version.major, " from bundle ",
                      bundle_name.empty() ? core::FormatBundleId(entry.bundle_id) : bundle_name);
}

}  // namespace

absl::StatusOr<uint64_t> RemoteInstances::Create(core::ContractHandle handle,
                                                 absl::string_view args) {
  auto guard = runtime_.Pin();
  core::ContractEntry entry;
  absl::StatusOr<const PolyplugGuestContractInterface*> iface = Resolve(handle, &entry);
  if (!iface.ok()) return iface.status();
  std::string bundle_name;
  for (const core::BundleInfo& b : runtime_.ListBundles()) {
    if (b.id == entry.bundle_id) bundle_name = b.name;
  }
  const std::string label = LabelOf(entry, bundle_name);
  if ((*iface)->invoke == nullptr) {
    return MakeError(ErrorReason::kNotInvocable,
                     absl::StrCat(label,
                                  " has no message-style invoke entry, so its instances cannot "
                                  "be called remotely"));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto closed = closed_bundles_.find(entry.bundle_id); closed != closed_bundles_.end()) {
      return MakeError(ErrorReason::kInstanceInvalidatedByReload,
                       absl::StrCat("cannot make an instance of ", label, ": ", closed->second,
                                    "; make it again once the bundle's reload ended"));
    }
    if (live_.size() >= options_.max_instances) {
      return absl::ResourceExhaustedError(
          absl::StrCat("too many remote instances (", live_.size(), "); destroy some first"));
    }
    ++calls_by_bundle_[entry.bundle_id];
  }
  absl::StatusOr<PolyplugGuestContractInstance> instance = runtime_.CreateInstance(
      **iface, PolyplugBytesView{reinterpret_cast<const uint8_t*>(args.data()), args.size()});
  std::lock_guard<std::mutex> lock(mu_);
  EndCallLocked(entry.bundle_id);
  if (!instance.ok()) return instance.status();
  if (auto closed = closed_bundles_.find(entry.bundle_id); closed != closed_bundles_.end()) {
    // A reload began while create_instance ran and did not see this instance: it must not
    // outlive the code that made it.
    std::string why = closed->second;
    runtime_.DestroyInstance(**iface, *instance);
    return MakeError(
        ErrorReason::kInstanceInvalidatedByReload,
        absl::StrCat("the instance of ", label, " was destroyed as it was made: ", why));
  }
  const uint64_t id = next_id_++;
  live_.emplace(id, Record{handle, entry.bundle_id, label, *iface, *instance, 0});
  return id;
}

absl::Status RemoteInstances::Invalidated(uint64_t id) const {
  if (auto it = invalidated_.find(id); it != invalidated_.end()) {
    return MakeError(ErrorReason::kInstanceInvalidatedByReload, it->second);
  }
  return MakeError(ErrorReason::kInstanceNotFound,
                   absl::StrCat("no instance ", id,
                                " on this host: it was destroyed, or made by another host "
                                "process (epoch)"));
}

void RemoteInstances::RememberLocked(uint64_t id, std::string why) {
  invalidated_[id] = std::move(why);
  invalidated_order_.push_back(id);
  while (invalidated_order_.size() > options_.remembered_invalidations) {
    invalidated_.erase(invalidated_order_.front());
    invalidated_order_.pop_front();
  }
}

void RemoteInstances::EndCallLocked(uint64_t bundle_id) {
  if (auto it = calls_by_bundle_.find(bundle_id); it != calls_by_bundle_.end()) {
    if (--it->second == 0) calls_by_bundle_.erase(it);
  }
  calls_done_.notify_all();
}

absl::StatusOr<std::string> RemoteInstances::Invoke(uint64_t id, absl::string_view method,
                                                    absl::string_view request) {
  auto guard = runtime_.Pin();  // keeps the instance's code mapped until the call returns
  Record record;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(id);
    if (it == live_.end()) return Invalidated(id);
    ++it->second.calls;
    ++calls_by_bundle_[it->second.bundle_id];
    record = it->second;
  }
  absl::StatusOr<const PolyplugGuestContractInterface*> iface = runtime_.Resolve(record.handle);
  absl::StatusOr<std::string> result =
      !iface.ok() ? iface.status()
                  : Call(*record.iface, record.instance, record.label, method, request);
  std::optional<Record> destroy;
  {
    std::lock_guard<std::mutex> lock(mu_);
    EndCallLocked(record.bundle_id);
    if (auto it = live_.find(id); it != live_.end()) {
      --it->second.calls;
    } else if (auto dying = dying_.find(id); dying != dying_.end() && --dying->second.calls == 0) {
      destroy = std::move(dying->second);
      dying_.erase(dying);
    }
  }
  // A reload stopped waiting for this call: the instance goes now, while its code is pinned.
  if (destroy) runtime_.DestroyInstance(*destroy->iface, destroy->instance);
  return result;
}

absl::StatusOr<std::string> RemoteInstances::InvokeOnce(core::ContractHandle handle,
                                                        absl::string_view method,
                                                        absl::string_view request) {
  auto guard = runtime_.Pin();
  core::ContractEntry entry;
  absl::StatusOr<const PolyplugGuestContractInterface*> iface = Resolve(handle, &entry);
  if (!iface.ok()) return iface.status();
  const std::string label = LabelOf(entry, "");
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto closed = closed_bundles_.find(entry.bundle_id); closed != closed_bundles_.end()) {
      return MakeError(ErrorReason::kInstanceInvalidatedByReload,
                       absl::StrCat("cannot call ", label, ": ", closed->second));
    }
    ++calls_by_bundle_[entry.bundle_id];
  }
  absl::StatusOr<std::string> result;
  if ((*iface)->invoke == nullptr) {
    result = Call(**iface, PolyplugGuestContractInstance{}, label, method, request);
  } else {
    absl::StatusOr<PolyplugGuestContractInstance> instance =
        runtime_.CreateInstance(**iface, PolyplugBytesView{nullptr, 0});
    if (!instance.ok()) {
      result = instance.status();
    } else {
      result = Call(**iface, *instance, label, method, request);
      runtime_.DestroyInstance(**iface, *instance);
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  EndCallLocked(entry.bundle_id);
  return result;
}

absl::Status RemoteInstances::Destroy(uint64_t id) {
  auto guard = runtime_.Pin();
  Record record;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(id);
    if (it == live_.end()) {
      if (invalidated_.contains(id) || dying_.contains(id)) return absl::OkStatus();
      return Invalidated(id);
    }
    if (it->second.calls > 0) {
      // Destroyed when its last call returns; no new call reaches it.
      RememberLocked(id, absl::StrCat("instance ", id, " of ", it->second.label,
                                      " was destroyed by its owner"));
      dying_.emplace(id, std::move(it->second));
      live_.erase(it);
      return absl::OkStatus();
    }
    record = std::move(it->second);
    live_.erase(it);
  }
  runtime_.DestroyInstance(*record.iface, record.instance);
  return absl::OkStatus();
}

absl::StatusOr<core::ContractHandle> RemoteInstances::HandleOf(uint64_t id) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = live_.find(id); it != live_.end()) return it->second.handle;
  return Invalidated(id);
}

void RemoteInstances::OnPhase(const core::PhaseEvent& event) {
  const uint64_t bundle = event.bundle_id;
  switch (event.phase) {
    case core::Phase::kPreparing:
    case core::Phase::kUnloading:
      break;
    default: {
      std::lock_guard<std::mutex> lock(mu_);
      closed_bundles_.erase(bundle);
      return;
    }
  }
  const std::string why = event.phase == core::Phase::kPreparing
                              ? absl::StrCat("bundle '", event.bundle_name,
                                             "' is reloading (reload ", event.reload_id, ")")
                              : absl::StrCat("bundle '", event.bundle_name, "' is being unloaded");
  std::vector<Record> doomed;
  {
    std::unique_lock<std::mutex> lock(mu_);
    closed_bundles_[bundle] = why;
    for (auto it = live_.begin(); it != live_.end();) {
      auto current = it++;
      Record& record = current->second;
      if (record.bundle_id != bundle) continue;
      RememberLocked(current->first,
                     absl::StrCat("instance ", current->first, " of ", record.label,
                                  " was destroyed because ", why, "; make a new instance"));
      if (record.calls > 0) {
        dying_.emplace(current->first, std::move(record));
      } else {
        doomed.push_back(std::move(record));
      }
      live_.erase(current);
    }
    // Calls in flight on the bundle (on its instances, one-shot calls, creations) finish
    // first, within the drain timeout; a call still running after it destroys its
    // instance itself when it returns.
    calls_done_.wait_for(lock, absl::ToChronoNanoseconds(options_.drain_timeout),
                         [&] { return !calls_by_bundle_.contains(bundle); });
  }
  auto guard = runtime_.Pin();
  for (Record& record : doomed) runtime_.DestroyInstance(*record.iface, record.instance);
}

size_t RemoteInstances::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return live_.size();
}

}  // namespace polyplug::host
