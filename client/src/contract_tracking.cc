#include "src/contract_tracking.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace polyplug::client {
namespace v1 = host::v1;

namespace {

// The tracker whose on_refreshed runs on this thread, so that its destructor, called from
// the callback, does not wait for itself.
thread_local const TrackedContract::State* calling_back = nullptr;

// Whether two lookups name the same provider implementation (registry revisions aside).
bool SameHandle(const absl::StatusOr<v1::ContractHandle>& a,
                const absl::StatusOr<v1::ContractHandle>& b) {
  if (a.ok() != b.ok()) return false;
  if (!a.ok()) return a.status().code() == b.status().code();
  return a->index() == b->index() && a->generation() == b->generation() &&
         a->host_epoch() == b->host_epoch() && a->contract_id() == b->contract_id() &&
         a->provider_bundle_id() == b->provider_bundle_id() &&
         a->provider_version().SerializeAsString() == b->provider_version().SerializeAsString() &&
         a->contract_version().SerializeAsString() == b->contract_version().SerializeAsString() &&
         a->plugin_name() == b->plugin_name();
}

// A failure that says nothing about the contract, only that the host could not be asked.
bool IsTransient(const absl::Status& status) {
  return absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status) ||
         absl::IsCancelled(status) || absl::IsResourceExhausted(status);
}

}  // namespace

namespace internal {

ContractTracking::ContractTracking(std::shared_ptr<const Connection> connection)
    : connection_(std::move(connection)) {}

std::shared_ptr<ContractTracking> ContractTracking::Start(
    std::shared_ptr<const Connection> connection) {
  std::shared_ptr<ContractTracking> tracking(new ContractTracking(connection));
  ContractTracking* self = tracking.get();  // the subscription stops before *self goes
  PhaseHandlers handlers;
  handlers.on_reloaded = [self](const PhaseEvent& e) { self->OnEvent(e); };
  handlers.on_unloading = [self](const PhaseEvent& e) { self->OnEvent(e); };
  handlers.on_loaded = [self](const PhaseEvent& e) { self->OnEvent(e); };
  handlers.on_resynced = [self](const Resynced&) {
    self->MarkFirstAttemptDone();
    {
      std::lock_guard<std::mutex> lock(self->refresh_mu_);
      self->leaving_bundles_.clear();
    }
    self->Refresh({.everyone = true});
  };
  handlers.on_connection_changed = [self](const absl::Status& status) {
    if (!status.ok()) self->MarkFirstAttemptDone();
  };
  handlers.on_stopped = [self](const absl::Status&) { self->MarkFirstAttemptDone(); };
  SubscribeOptions options;
  options.synthesize_transitions = false;  // a resync refreshes everyone anyway
  tracking->subscription_ = std::unique_ptr<Subscription>(
      new Subscription(std::move(connection), std::move(handlers), std::move(options)));
  // Trackers look their contract up after the subscription's snapshot, so that every
  // reload after their first lookup reaches them as an event. A host that cannot be
  // reached ends the wait at once (the trackers catch up when it comes); one that does not
  // answer, after the call timeout.
  std::unique_lock<std::mutex> lock(tracking->mu_);
  tracking->first_attempt_cv_.wait_for(
      lock, absl::ToChronoNanoseconds(tracking->connection_->options.call_timeout),
      [self] { return self->first_attempt_done_; });
  return tracking;
}

void ContractTracking::MarkFirstAttemptDone() {
  std::lock_guard<std::mutex> lock(mu_);
  if (first_attempt_done_) return;
  first_attempt_done_ = true;
  first_attempt_cv_.notify_all();
}

ContractTracking::~ContractTracking() {
  // A refresh in progress must not hold the join up on a host that does not answer.
  {
    std::lock_guard<std::mutex> lock(call_mu_);
    stopping_ = true;
    if (call_ != nullptr) call_->TryCancel();
  }
  subscription_.reset();
}

template <typename Request, typename Response, typename Method>
absl::Status ContractTracking::Call(Method method, const Request& request, Response* response) {
  grpc::ClientContext context;
  connection_->PrepareCall(context, {});
  {
    std::lock_guard<std::mutex> lock(call_mu_);
    if (stopping_) return absl::CancelledError("tracking stopped");
    call_ = &context;
  }
  const grpc::Status status = ((*connection_->stub).*method)(&context, request, response);
  {
    std::lock_guard<std::mutex> lock(call_mu_);
    call_ = nullptr;
  }
  return connection_->ToStatus(status, context, connection_->options.call_timeout);
}

void ContractTracking::OnEvent(const PhaseEvent& event) {
  switch (event.phase) {
    case Phase::kReloaded:
      // A reload may also add or drop contracts of the bundle: look everyone up again.
      return Refresh({.reloaded_bundle_id = event.bundle_id,
                      .event_epoch = event.host_epoch,
                      .event_revision = event.registry_revision,
                      .everyone = true});
    case Phase::kUnloading: {
      {
        std::lock_guard<std::mutex> lock(refresh_mu_);
        leaving_bundles_.insert(event.bundle_id);
      }
      return Refresh({.unloading_bundle_id = event.bundle_id});
    }
    case Phase::kLoaded: {
      {
        std::lock_guard<std::mutex> lock(refresh_mu_);
        leaving_bundles_.erase(event.bundle_id);
      }
      return Refresh({.everyone = true});
    }
    default:
      return;
  }
}

absl::StatusOr<v1::ContractHandle> ContractTracking::Lookup(const TrackedContract::State& state) {
  v1::FindContractRequest request;
  request.set_name(state.contract);
  request.set_min_version(state.min_version);
  v1::ContractHandle found;
  if (absl::Status s = Call(&v1::PluginHost::Stub::FindContract, request, &found); !s.ok()) {
    return s;
  }
  if (!leaving_bundles_.contains(found.provider_bundle_id())) return found;
  // The first provider is being unloaded (its UNLOADING came before the registry dropped
  // it): take the next provider that stays, if any.
  v1::ListContractsResponse all;
  if (absl::Status s = Call(&v1::PluginHost::Stub::ListContracts, v1::ListContractsRequest(), &all);
      !s.ok()) {
    return s;
  }
  for (const v1::ContractHandle& h : all.contracts()) {
    if (h.contract_id() == found.contract_id() &&
        !leaving_bundles_.contains(h.provider_bundle_id()) &&
        h.contract_version().major() >= state.min_version) {
      return h;
    }
  }
  return absl::NotFoundError(absl::StrCat("[CONTRACT_NOT_FOUND] no provider of ", state.contract,
                                          " remains: '", found.provider_bundle_name(),
                                          "' is being unloaded"));
}

std::shared_ptr<TrackedContract::State> ContractTracking::Add(absl::string_view contract,
                                                              uint32_t min_version,
                                                              RefreshCallback on_refreshed) {
  auto state = std::make_shared<TrackedContract::State>();
  state->contract = std::string(contract);
  state->min_version = min_version;
  state->on_refreshed = std::move(on_refreshed);
  std::lock_guard<std::mutex> refresh_lock(refresh_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    trackers_.push_back(state);
  }
  absl::StatusOr<v1::ContractHandle> first = Lookup(*state);
  std::lock_guard<std::mutex> lock(state->mu);
  if (first.ok()) {
    state->known_epoch = first->host_epoch();
    state->known_revision = first->registry_revision();
  }
  state->current = std::move(first);
  return state;
}

void ContractTracking::Remove(const TrackedContract::State* state) {
  std::lock_guard<std::mutex> lock(mu_);
  trackers_.erase(std::remove_if(trackers_.begin(), trackers_.end(),
                                 [state](const auto& s) { return s.get() == state; }),
                  trackers_.end());
}

void ContractTracking::Refresh(const Trigger& trigger) {
  std::vector<std::shared_ptr<TrackedContract::State>> trackers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    trackers = trackers_;
  }
  struct Change {
    std::shared_ptr<TrackedContract::State> state;
    absl::StatusOr<v1::ContractHandle> previous, current;
  };
  std::vector<Change> changes;
  {
    std::lock_guard<std::mutex> refresh_lock(refresh_mu_);
    for (const auto& state : trackers) {
      absl::StatusOr<v1::ContractHandle> previous;
      uint64_t known_epoch = 0, known_revision = 0;
      {
        std::lock_guard<std::mutex> lock(state->mu);
        previous = state->current;
        known_epoch = state->known_epoch;
        known_revision = state->known_revision;
      }
      const uint64_t provider = previous.ok() ? previous->provider_bundle_id() : 0;
      if (!trigger.everyone && provider != trigger.unloading_bundle_id) continue;
      absl::StatusOr<v1::ContractHandle> next = Lookup(*state);
      // The host could not be asked: keep what we have; the subscription resyncs (and
      // refreshes everyone) once it is back.
      if (!next.ok() && IsTransient(next.status())) continue;
      // A reload of the provider is news even when the handle stays the same, unless an
      // earlier refresh (e.g. on a dependent's RELOADED within the same cascade) already
      // saw the registry as of this event.
      const bool reloaded =
          provider != 0 && provider == trigger.reloaded_bundle_id &&
          (known_epoch != trigger.event_epoch || known_revision < trigger.event_revision);
      const bool changed = !SameHandle(previous, next) || reloaded;
      {
        std::lock_guard<std::mutex> lock(state->mu);
        state->current = next;
        if (changed) {
          ++state->change_count;
          if (next.ok()) {
            state->known_epoch = next->host_epoch();
            state->known_revision = next->registry_revision();
          }
        }
      }
      if (changed) changes.push_back({state, std::move(previous), std::move(next)});
    }
  }
  for (Change& change : changes) {
    TrackedContract::State& state = *change.state;
    std::lock_guard<std::mutex> lock(state.callback_mu);
    if (state.closed || !state.on_refreshed) continue;
    calling_back = &state;
    state.on_refreshed(change.previous, change.current);
    calling_back = nullptr;
  }
}

}  // namespace internal

TrackedContract::TrackedContract(std::shared_ptr<State> state) : state_(std::move(state)) {}

TrackedContract::~TrackedContract() {
  state_->tracking->Remove(state_.get());
  if (calling_back == state_.get()) {
    state_->closed = true;  // the callback running on this thread holds callback_mu
  } else {
    std::lock_guard<std::mutex> lock(state_->callback_mu);
    state_->closed = true;
  }
  state_->tracking.reset();
}

absl::StatusOr<v1::ContractHandle> TrackedContract::Current() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->current;
}

uint64_t TrackedContract::change_count() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->change_count;
}

}  // namespace polyplug::client
