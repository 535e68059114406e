#include "polyplug/client/live_instance.h"

#include <algorithm>
#include <deque>
#include <mutex>
#include <string>
#include <utility>

#include "polyplug/client/host_client.h"
#include "src/connection.h"

namespace polyplug::client {
namespace v1 = host::v1;

struct LiveInstance::State {
  std::shared_ptr<const internal::Connection> connection;
  std::string contract;
  uint32_t min_version = 0;
  std::string args;
  LiveInstanceOptions options;

  // An instance and its generation (1 for the first one made).
  struct Made {
    v1::InstanceRef ref;
    uint64_t generation = 0;
  };

  // Held while an instance is made, so that concurrent Invokes make one, not several.
  mutable std::mutex mu;
  std::optional<v1::InstanceRef> current;    // guarded by mu
  bool used = false;                         // guarded by mu; an Invoke ran: keep one ready
  uint64_t made = 0;                         // guarded by mu
  std::optional<v1::InstanceRef> last_made;  // guarded by mu; survives Drop
  uint64_t last_answered = 0;                // guarded by mu; generation of the last success

  // Re-creations waiting for on_recreated, in generation order; whichever thread finds no
  // one announcing announces them, so that the callback runs one call at a time (and may
  // call Invoke, which may queue another).
  std::mutex announce_mu;
  std::deque<InstanceRecreated> to_announce;  // guarded by announce_mu
  bool announcing = false;                    // guarded by announce_mu
  bool closed = false;                        // guarded by announce_mu; ~LiveInstance ran

  // The instance to call: the current one, or a new one.
  absl::StatusOr<Made> Ensure(const CallOptions& call) {
    bool announce = false;
    Made result;
    {
      std::lock_guard<std::mutex> lock(mu);
      used = true;
      if (current) return Made{*current, made};
      v1::CreateInstanceRequest request;
      request.set_contract(contract);
      request.set_min_version(min_version);
      request.set_args(args);
      absl::StatusOr<v1::InstanceRef> made_now =
          internal::CreateLeasedInstance(*connection, std::move(request), call);
      if (!made_now.ok()) return made_now.status();
      current = *made_now;
      ++made;
      result = Made{*made_now, made};
      if (made > 1 && options.on_recreated) {
        // Queued under `mu`, so the queue is in generation order.
        std::lock_guard<std::mutex> announce_lock(announce_mu);
        to_announce.push_back({made, last_made.value_or(v1::InstanceRef()), *made_now});
        announce = true;
      }
      last_made = *made_now;
    }
    if (announce) Announce();
    return result;
  }

  // Runs on_recreated for the queued re-creations, unless another thread (or an outer
  // frame of this one) is doing so.
  void Announce() {
    {
      std::lock_guard<std::mutex> lock(announce_mu);
      if (announcing) return;
      announcing = true;
    }
    while (true) {
      InstanceRecreated next;
      {
        std::lock_guard<std::mutex> lock(announce_mu);
        if (to_announce.empty() || closed) {
          to_announce.clear();
          announcing = false;
          return;
        }
        next = std::move(to_announce.front());
        to_announce.pop_front();
      }
      options.on_recreated(next);
    }
  }

  // Forgets instance `id` (if it is still the current one) and destroys it on the host,
  // where a reload has usually destroyed it already.
  void Drop(uint64_t id) {
    std::optional<v1::InstanceRef> dropped;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!current || current->instance_id() != id) return;
      dropped = std::move(current);
      current.reset();
    }
    Destroy(*dropped);
  }

  void Destroy(const v1::InstanceRef& instance) const {
    v1::DestroyInstanceRequest request;
    *request.mutable_instance() = instance;
    CallOptions quick;
    quick.timeout = std::min(connection->options.call_timeout, absl::Seconds(5));
    (void)internal::CallUnary<v1::DestroyInstanceResponse>(
        *connection, &v1::PluginHost::Stub::DestroyInstance, request, quick);
  }

  // The tracker saw the provider change (reloaded, replaced, unloaded, host restarted):
  // an instance made before that is gone or stale. Make the next one now, if in use.
  void OnRefreshed(const absl::StatusOr<v1::ContractHandle>& now) {
    std::optional<v1::InstanceRef> old;
    bool remake = false;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (current) {
        const v1::ContractHandle& made_from = current->handle();
        const bool newer = now.ok() && made_from.host_epoch() == now->host_epoch() &&
                           made_from.registry_revision() >= now->registry_revision();
        if (newer) return;  // made after the change (e.g. by an Invoke's retry)
        old = std::move(current);
        current.reset();
      }
      remake = used && now.ok();
    }
    if (old) Destroy(*old);
    if (remake) (void)Ensure(CallOptions{});
  }
};

LiveInstance::LiveInstance(std::shared_ptr<State> state, std::unique_ptr<TrackedContract> tracked)
    : state_(std::move(state)), tracked_(std::move(tracked)) {}

LiveInstance::~LiveInstance() {
  tracked_.reset();  // no refresh runs after this
  {
    std::lock_guard<std::mutex> lock(state_->announce_mu);
    state_->closed = true;
  }
  std::optional<v1::InstanceRef> last;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    last = std::move(state_->current);
    state_->current.reset();
  }
  if (last) state_->Destroy(*last);
}

absl::StatusOr<v1::InvokeResponse> LiveInstance::Invoke(absl::string_view method,
                                                        absl::string_view request) {
  return Invoke(method, request, CallOptions{});
}

absl::StatusOr<v1::InvokeResponse> LiveInstance::Invoke(absl::string_view method,
                                                        absl::string_view request_bytes,
                                                        const CallOptions& call) {
  return Invoke(method, request_bytes, call, nullptr);
}

absl::StatusOr<v1::InvokeResponse> LiveInstance::Invoke(absl::string_view method,
                                                        absl::string_view request_bytes,
                                                        const CallOptions& call,
                                                        LiveCallInfo* info) {
  // Each retry follows a reload that destroyed the instance just made; a few are plenty
  // even for back-to-back reloads.
  constexpr int kMaxRetries = 16;
  for (int attempt = 0;; ++attempt) {
    absl::StatusOr<State::Made> instance = state_->Ensure(call);
    if (!instance.ok()) return instance.status();
    v1::InvokeRequest request;
    *request.mutable_instance() = instance->ref;
    request.set_method(std::string(method));
    request.set_request(std::string(request_bytes));
    absl::StatusOr<v1::InvokeResponse> response = internal::CallUnary<v1::InvokeResponse>(
        *state_->connection, &v1::PluginHost::Stub::Invoke, request, call);
    if (response.ok()) {
      std::lock_guard<std::mutex> lock(state_->mu);
      if (info != nullptr) {
        info->generation = instance->generation;
        info->recreated =
            state_->last_answered != 0 && instance->generation > state_->last_answered;
      }
      state_->last_answered = std::max(state_->last_answered, instance->generation);
      return response;
    }
    if (attempt == kMaxRetries) return response;
    const v1::FailureReason reason = FailureReasonOf(response.status());
    if (reason != v1::FAILURE_REASON_INSTANCE_INVALIDATED_BY_RELOAD &&
        reason != v1::FAILURE_REASON_INSTANCE_NOT_FOUND &&
        reason != v1::FAILURE_REASON_LEASE_EXPIRED) {
      return response;
    }
    // A reload, a host restart or a broken connection (which ended the session) took the
    // instance: make it again.
    state_->Drop(instance->ref.instance_id());
  }
}

std::optional<v1::InstanceRef> LiveInstance::instance() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->current;
}

uint64_t LiveInstance::instances_made() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->made;
}

uint64_t LiveInstance::recreations() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->made > 0 ? state_->made - 1 : 0;
}

}  // namespace polyplug::client

namespace polyplug::client {

std::unique_ptr<LiveInstance> HostClient::MakeLiveInstance(absl::string_view contract,
                                                           uint32_t min_version,
                                                           absl::string_view args,
                                                           LiveInstanceOptions options) {
  auto state = std::make_shared<LiveInstance::State>();
  state->connection = connection();
  state->contract = std::string(contract);
  state->min_version = min_version;
  state->args = std::string(args);
  state->options = std::move(options);
  std::unique_ptr<TrackedContract> tracked =
      TrackContract(contract, min_version,
                    [weak = std::weak_ptr<LiveInstance::State>(state)](
                        const absl::StatusOr<v1::ContractHandle>&,
                        const absl::StatusOr<v1::ContractHandle>& now) {
                      if (auto live = weak.lock()) live->OnRefreshed(now);
                    });
  return std::unique_ptr<LiveInstance>(new LiveInstance(std::move(state), std::move(tracked)));
}

}  // namespace polyplug::client
