#include "host/src/remote_instances.h"

#include <algorithm>
#include <optional>
#include <utility>
#include <vector>

#include "absl/random/distributions.h"
#include "absl/strings/str_cat.h"
#include "polyplug/core/error.h"
#include "polyplug/core/ids.h"

namespace polyplug::host {

using core::ErrorReason;
using core::MakeError;

RemoteInstances::RemoteInstances(core::Runtime& runtime, RemoteInstancesOptions options)
    : runtime_(runtime), options_(options), reaper_([this] { ReapIdle(); }) {}

RemoteInstances::~RemoteInstances() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  reaper_wakeup_.notify_all();
  reaper_.join();
  std::vector<Record> live;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, record] : live_) live.push_back(std::move(record));
    live_.clear();
  }
  DestroyAll(std::move(live));
}

void RemoteInstances::DestroyAll(std::vector<Record> records) {
  for (Record& r : records) runtime_.DestroyInstance(*r.iface, r.instance);
}

namespace {

std::string LabelOf(const core::ContractEntry& entry, const std::string& bundle_name) {
  return absl::StrCat(entry.contract_name, "@", entry.version.major, " from bundle ",
                      bundle_name.empty() ? core::FormatBundleId(entry.bundle_id) : bundle_name);
}

}  // namespace

absl::Status RemoteInstances::BeginBundleCall(uint64_t bundle, absl::string_view label,
                                              absl::Time deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  // A reload ends soon: wait for it, then the call runs on the new version. (No pin is
  // held here, or the reload's swap would wait for us while we wait for it.)
  while (true) {
    auto closed = closed_bundles_.find(bundle);
    if (closed == closed_bundles_.end()) break;
    if (!closed->second.reloading) {
      return MakeError(ErrorReason::kInstanceInvalidatedByReload,
                       absl::StrCat("cannot use ", label, ": ", closed->second.why));
    }
    // Bounded even for a call without a deadline: a reload does not take an hour.
    const absl::Time until = std::min(deadline, absl::Now() + absl::Hours(1));
    if (changed_.wait_until(lock, absl::ToChronoTime(until)) == std::cv_status::timeout &&
        closed_bundles_.contains(bundle)) {
      return MakeError(ErrorReason::kInstanceInvalidatedByReload,
                       absl::StrCat("cannot use ", label, ": ", closed_bundles_.at(bundle).why,
                                    " and did not end before the call's deadline"));
    }
  }
  ++calls_by_bundle_[bundle];
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> RemoteInstances::Create(core::ContractHandle handle,
                                                 absl::string_view args,
                                                 const CreateOptions& options) {
  const absl::Duration idle_timeout = options.idle_timeout > absl::ZeroDuration()
                                          ? options.idle_timeout
                                      : options.session != 0 ? absl::InfiniteDuration()
                                                             : options_.sessionless_idle_timeout;
  while (true) {
    absl::StatusOr<core::ContractEntry> entry = runtime_.registry().Describe(handle);
    if (!entry.ok()) return entry.status();
    auto bundle = runtime_.BundleNameAndVersion(entry->bundle_id);
    const std::string label = LabelOf(*entry, bundle.ok() ? bundle->first : "");
    if (!entry->has_invoke) {
      return MakeError(ErrorReason::kNotInvocable,
                       absl::StrCat(label,
                                    " has no message-style invoke entry, so its instances "
                                    "cannot be called remotely"));
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (live_.size() >= options_.max_instances) {
        return absl::ResourceExhaustedError(
            absl::StrCat("too many remote instances (", live_.size(), "); destroy some first"));
      }
      if (options.session != 0 && !sessions_.contains(options.session)) {
        return MakeError(ErrorReason::kLeaseExpired,
                         absl::StrCat("session ", options.session,
                                      " is not open: it ended when its OpenSession stream "
                                      "closed, or it belongs to another host process; open a "
                                      "new session"));
      }
    }
    if (absl::Status s = BeginBundleCall(entry->bundle_id, label, options.deadline); !s.ok()) {
      return s;
    }
    absl::StatusOr<std::shared_ptr<const PolyplugGuestContractInterface>> iface =
        runtime_.Retain(handle);
    absl::StatusOr<PolyplugGuestContractInstance> instance =
        iface.ok() ? runtime_.CreateInstance(
                         **iface, PolyplugBytesView{reinterpret_cast<const uint8_t*>(args.data()),
                                                    args.size()})
                   : absl::StatusOr<PolyplugGuestContractInstance>(iface.status());
    std::unique_lock<std::mutex> lock(mu_);
    EndCallLocked(entry->bundle_id);
    if (!instance.ok()) return instance.status();
    const bool session_gone = options.session != 0 && !sessions_.contains(options.session);
    if (ClosedLocked(entry->bundle_id) || session_gone) {
      // A reload began while create_instance ran and did not see this instance: it must
      // not outlive the code that made it. Make it again once the reload ended. (Or the
      // session ended meanwhile: then the instance has no owner.)
      lock.unlock();
      runtime_.DestroyInstance(**iface, *instance);
      if (session_gone) {
        return MakeError(
            ErrorReason::kLeaseExpired,
            absl::StrCat("session ", options.session, " ended while the instance was being made"));
      }
      continue;
    }
    const uint64_t id = next_id_++;
    live_.emplace(id, Record{handle, entry->bundle_id, label, *std::move(iface), *instance, 0,
                             options.session, idle_timeout, absl::Now()});
    if (idle_timeout != absl::InfiniteDuration()) reaper_wakeup_.notify_all();
    return id;
  }
}

absl::Status RemoteInstances::Invalidated(uint64_t id) const {
  if (auto it = invalidated_.find(id); it != invalidated_.end()) {
    return MakeError(it->second.reason, it->second.message);
  }
  return MakeError(ErrorReason::kInstanceNotFound,
                   absl::StrCat("no instance ", id,
                                " on this host: it was destroyed, or made by another host "
                                "process (epoch)"));
}

void RemoteInstances::RememberLocked(uint64_t id, ErrorReason reason, std::string why) {
  invalidated_[id] = Invalidation{reason, std::move(why)};
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
  changed_.notify_all();
}

absl::StatusOr<std::string> RemoteInstances::Invoke(uint64_t id, absl::string_view method,
                                                    absl::string_view request) {
  Record record;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(id);
    if (it == live_.end()) return Invalidated(id);
    ++it->second.calls;
    ++calls_by_bundle_[it->second.bundle_id];
    record = it->second;  // shares the retained interface: its code stays mapped
  }
  absl::StatusOr<std::string> result =
      runtime_.Invoke(*record.iface, record.instance, record.label, method, request);
  std::optional<Record> destroy;
  {
    std::lock_guard<std::mutex> lock(mu_);
    EndCallLocked(record.bundle_id);
    if (auto it = live_.find(id); it != live_.end()) {
      --it->second.calls;
      it->second.last_used = absl::Now();
    } else if (auto dying = dying_.find(id); dying != dying_.end() && --dying->second.calls == 0) {
      destroy = std::move(dying->second);
      dying_.erase(dying);
    }
  }
  // It was retired while this call ran (reload, lease, owner): the last call destroys it.
  if (destroy) runtime_.DestroyInstance(*destroy->iface, destroy->instance);
  return result;
}

absl::StatusOr<std::string> RemoteInstances::InvokeOnce(core::ContractHandle handle,
                                                        absl::string_view method,
                                                        absl::string_view request,
                                                        absl::Time deadline) {
  absl::StatusOr<core::ContractEntry> entry = runtime_.registry().Describe(handle);
  if (!entry.ok()) return entry.status();
  const std::string label = LabelOf(*entry, "");
  if (absl::Status s = BeginBundleCall(entry->bundle_id, label, deadline); !s.ok()) return s;
  absl::StatusOr<std::string> result;
  absl::StatusOr<std::shared_ptr<const PolyplugGuestContractInterface>> iface =
      runtime_.Retain(handle);
  if (!iface.ok()) {
    result = iface.status();
  } else if ((*iface)->invoke == nullptr) {
    result = runtime_.Invoke(**iface, PolyplugGuestContractInstance{}, label, method, request);
  } else {
    absl::StatusOr<PolyplugGuestContractInstance> instance =
        runtime_.CreateInstance(**iface, PolyplugBytesView{nullptr, 0});
    if (!instance.ok()) {
      result = instance.status();
    } else {
      result = runtime_.Invoke(**iface, *instance, label, method, request);
      runtime_.DestroyInstance(**iface, *instance);
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  EndCallLocked(entry->bundle_id);
  return result;
}

std::optional<RemoteInstances::Record> RemoteInstances::RetireLocked(RecordMap::iterator it,
                                                                     ErrorReason reason,
                                                                     std::string why) {
  const uint64_t id = it->first;
  Record record = std::move(it->second);
  live_.erase(it);
  RememberLocked(id, reason, std::move(why));
  if (record.calls > 0) {
    dying_.emplace(id, std::move(record));
    return std::nullopt;
  }
  return record;
}

absl::Status RemoteInstances::Destroy(uint64_t id) {
  std::optional<Record> record;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(id);
    if (it == live_.end()) {
      if (invalidated_.contains(id) || dying_.contains(id)) return absl::OkStatus();
      return Invalidated(id);
    }
    record = RetireLocked(
        it, ErrorReason::kInstanceNotFound,
        absl::StrCat("instance ", id, " of ", it->second.label, " was destroyed by its owner"));
  }
  if (record) runtime_.DestroyInstance(*record->iface, record->instance);
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
      if (closed_bundles_.erase(bundle) > 0) changed_.notify_all();
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
    closed_bundles_[bundle] = Closed{why, event.phase == core::Phase::kPreparing};
    for (auto it = live_.begin(); it != live_.end();) {
      auto current = it++;
      if (current->second.bundle_id != bundle) continue;
      std::string message = absl::StrCat("instance ", current->first, " of ", current->second.label,
                                         " was destroyed because ", why, "; make a new instance");
      if (auto record = RetireLocked(current, ErrorReason::kInstanceInvalidatedByReload,
                                     std::move(message))) {
        doomed.push_back(*std::move(record));
      }
    }
    // Calls in flight on the bundle (on its instances, one-shot calls, creations) finish
    // first, within the drain timeout; a call still running after it destroys its
    // instance itself when it returns.
    changed_.wait_for(lock, absl::ToChronoNanoseconds(options_.drain_timeout),
                      [&] { return !calls_by_bundle_.contains(bundle); });
  }
  DestroyAll(std::move(doomed));
}

absl::StatusOr<uint64_t> RemoteInstances::OpenSession() {
  std::lock_guard<std::mutex> lock(mu_);
  if (sessions_.size() >= options_.max_sessions) {
    return absl::ResourceExhaustedError(
        absl::StrCat("too many open sessions (", sessions_.size(), "); close some first"));
  }
  // Random, so a session id kept from a host that restarted names no session of this one.
  uint64_t session = 0;
  while (session == 0 || sessions_.contains(session)) session = absl::Uniform<uint64_t>(random_);
  sessions_.insert(session);
  return session;
}

void RemoteInstances::CloseSession(uint64_t session) {
  std::vector<Record> doomed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (sessions_.erase(session) == 0) return;
    for (auto it = live_.begin(); it != live_.end();) {
      auto current = it++;
      if (current->second.session != session) continue;
      std::string message = absl::StrCat(
          "instance ", current->first, " of ", current->second.label,
          " was destroyed because its session ", session,
          " ended (the client that made it closed the session or disconnected); make a new "
          "instance");
      if (auto record = RetireLocked(current, ErrorReason::kLeaseExpired, std::move(message))) {
        doomed.push_back(*std::move(record));
      }
    }
  }
  DestroyAll(std::move(doomed));
}

void RemoteInstances::ReapIdle() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    const absl::Time now = absl::Now();
    absl::Time next = absl::InfiniteFuture();
    std::vector<Record> doomed;
    for (auto it = live_.begin(); it != live_.end();) {
      auto current = it++;
      const Record& r = current->second;
      if (r.idle_timeout == absl::InfiniteDuration()) continue;
      if (r.calls > 0) {  // its idle time starts when the call returns, not before now
        next = std::min(next, now + r.idle_timeout);
        continue;
      }
      const absl::Time expiry = r.last_used + r.idle_timeout;
      if (expiry > now) {
        next = std::min(next, expiry);
        continue;
      }
      std::string message =
          absl::StrCat("instance ", current->first, " of ", r.label, " was destroyed after ",
                       absl::FormatDuration(r.idle_timeout),
                       " without a call (its idle timeout); make a new instance");
      if (auto record = RetireLocked(current, ErrorReason::kLeaseExpired, std::move(message))) {
        doomed.push_back(*std::move(record));
      }
    }
    if (!doomed.empty()) {
      lock.unlock();
      DestroyAll(std::move(doomed));
      lock.lock();
      continue;
    }
    reaper_wakeup_.wait_until(lock, absl::ToChronoTime(std::min(next, now + absl::Minutes(1))));
  }
}

size_t RemoteInstances::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return live_.size();
}

size_t RemoteInstances::session_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return sessions_.size();
}

}  // namespace polyplug::host
