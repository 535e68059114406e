#include "polyplug/client/live_instance.h"

#include <algorithm>
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

  // Held while an instance is made, so that concurrent Invokes make one, not several.
  mutable std::mutex mu;
  std::optional<v1::InstanceRef> current;  // guarded by mu
  bool used = false;                       // guarded by mu; an Invoke ran: keep one ready
  uint64_t made = 0;                       // guarded by mu

  // The instance to call: the current one, or a new one.
  absl::StatusOr<v1::InstanceRef> Ensure(const CallOptions& call) {
    std::lock_guard<std::mutex> lock(mu);
    used = true;
    if (current) return *current;
    v1::CreateInstanceRequest request;
    request.set_contract(contract);
    request.set_min_version(min_version);
    request.set_args(args);
    absl::StatusOr<v1::InstanceRef> made_now =
        internal::CreateLeasedInstance(*connection, std::move(request), call);
    if (!made_now.ok()) return made_now.status();
    current = *made_now;
    ++made;
    return *made_now;
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
  // Each retry follows a reload that destroyed the instance just made; a few are plenty
  // even for back-to-back reloads.
  constexpr int kMaxRetries = 16;
  for (int attempt = 0;; ++attempt) {
    absl::StatusOr<v1::InstanceRef> instance = state_->Ensure(call);
    if (!instance.ok()) return instance.status();
    v1::InvokeRequest request;
    *request.mutable_instance() = *instance;
    request.set_method(std::string(method));
    request.set_request(std::string(request_bytes));
    absl::StatusOr<v1::InvokeResponse> response = internal::CallUnary<v1::InvokeResponse>(
        *state_->connection, &v1::PluginHost::Stub::Invoke, request, call);
    if (response.ok() || attempt == kMaxRetries) return response;
    const v1::FailureReason reason = FailureReasonOf(response.status());
    if (reason != v1::FAILURE_REASON_INSTANCE_INVALIDATED_BY_RELOAD &&
        reason != v1::FAILURE_REASON_INSTANCE_NOT_FOUND &&
        reason != v1::FAILURE_REASON_LEASE_EXPIRED) {
      return response;
    }
    // A reload, a host restart or a broken connection (which ended the session) took the
    // instance: make it again.
    state_->Drop(instance->instance_id());
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

}  // namespace polyplug::client

namespace polyplug::client {

std::unique_ptr<LiveInstance> HostClient::MakeLiveInstance(absl::string_view contract,
                                                           uint32_t min_version,
                                                           absl::string_view args) {
  auto state = std::make_shared<LiveInstance::State>();
  state->connection = connection();
  state->contract = std::string(contract);
  state->min_version = min_version;
  state->args = std::string(args);
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
