#include "host/src/plugin_host_service.h"

#include <atomic>

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/src/paths.h"
#include "host/src/session_stream.h"
#include "host/src/status_mapping.h"
#include "polyplug/core/error.h"
#include "polyplug/core/ids.h"
#include "wire/wire.h"

namespace polyplug::host {
namespace {

namespace fs = std::filesystem;
using core::ErrorReason;
using core::MakeError;

constexpr size_t kMaxNameBytes = 1024;
constexpr size_t kMaxPathBytes = 4096;

absl::Status CheckName(absl::string_view field, const std::string& value) {
  if (value.empty()) {
    return MakeError(ErrorReason::kInvalidArgument, absl::StrCat("field '", field, "' is empty"));
  }
  if (value.size() > kMaxNameBytes) {
    return MakeError(ErrorReason::kInvalidArgument,
                     absl::StrCat("field '", field, "' is ", value.size(), " bytes; the limit is ",
                                  kMaxNameBytes));
  }
  return absl::OkStatus();
}

}  // namespace

PluginHostService::PluginHostService(core::Runtime& runtime, PhaseHub& hub, OperationWorker& worker,
                                     RemoteInstances& instances, OperationWorker& calls,
                                     const TokenAuthorizer& authorizer,
                                     PluginHostServiceOptions options)
    : runtime_(runtime),
      hub_(hub),
      worker_(worker),
      instances_(instances),
      calls_(calls),
      authorizer_(authorizer),
      options_(std::move(options)) {}

void PluginHostService::SetListenAddresses(std::vector<std::string> addresses) {
  std::lock_guard<std::mutex> lock(listen_mu_);
  listen_addresses_ = std::move(addresses);
}

absl::StatusOr<fs::path> PluginHostService::ConfinePath(const std::string& path) const {
  if (path.empty() || path.size() > kMaxPathBytes || path.find('\0') != std::string::npos) {
    return MakeError(ErrorReason::kInvalidArgument,
                     "field 'path' must be a non-empty path of at most 4096 bytes");
  }
  std::error_code ec;
  std::vector<fs::path> candidates;
  if (fs::path(path).is_absolute()) {
    candidates.push_back(path);
  } else {
    for (const fs::path& root : options_.bundle_roots) candidates.push_back(root / path);
  }
  for (const fs::path& candidate : candidates) {
    const fs::path real = fs::weakly_canonical(candidate, ec);
    if (ec) continue;
    for (const fs::path& root : options_.bundle_roots) {
      if (core::IsPathWithin(real, root) && real != root) {
        if (candidates.size() == 1 || fs::exists(real, ec)) return real;
      }
    }
  }
  std::vector<std::string> roots;
  for (const fs::path& r : options_.bundle_roots) roots.push_back(r.string());
  return MakeError(
      ErrorReason::kPermissionDenied,
      absl::StrCat("path \"", path, "\" resolves outside the bundle roots (",
                   roots.empty() ? "none configured" : absl::StrJoin(roots, ", "),
                   "); '..', symlinks leading out and other absolute paths are refused"));
}

bool PluginHostService::Unauthorized(grpc::CallbackServerContext* context,
                                     grpc::ServerUnaryReactor* reactor) {
  grpc::Status auth = authorizer_.Check(context);
  if (auth.ok()) return false;
  reactor->Finish(auth);
  return true;
}

bool PluginHostService::Reject(grpc::CallbackServerContext* context,
                               grpc::ServerUnaryReactor* reactor, const absl::Status& status) {
  if (status.ok()) return false;
  reactor->Finish(ToGrpcStatus(status, context));
  return true;
}

std::vector<core::PhaseEvent> PluginHostService::EventsAfter(uint64_t seq) const {
  auto events = runtime_.journal().ReadAfter(seq);
  return events.ok() ? *std::move(events) : std::vector<core::PhaseEvent>{};
}

namespace {
grpc::Status ShuttingDown() {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE, "polyplug-host is shutting down");
}

bool Expired(grpc::CallbackServerContext* context) {
  return context->deadline() < std::chrono::system_clock::now();
}
}  // namespace

// The reactor of a load, reload or unload. Such a call may wait long for its turn (the
// worker, or an application's RunPendingOperations); a caller that gives up meanwhile gets
// its answer at once and the call's resources go, instead of at the operation's turn. Who
// finishes the call is decided once, through `state`, which the posted task shares and
// which outlives the reactor: the task (kClaimed: it runs the operation), the cancellation
// (kAbandoned: the task then touches nothing of the call), or, while the call is still
// being checked (kChecking), the check that refuses it.
class OperationReactor final : public grpc::ServerUnaryReactor {
 public:
  enum State : int { kChecking, kWaiting, kClaimed, kAbandoned };

  const std::shared_ptr<std::atomic<int>>& state() const { return state_; }
  // The call waits for its turn from now on; `what` ("reload", ...) names it in messages.
  void Queue(std::string what) {
    what_ = std::move(what);
    int expected = kChecking;
    state_->compare_exchange_strong(expected, kWaiting);
  }
  static bool Claim(std::atomic<int>& state) {
    int expected = kWaiting;
    return state.compare_exchange_strong(expected, kClaimed);
  }

  void OnCancel() override {
    int expected = kWaiting;
    if (!state_->compare_exchange_strong(expected, kAbandoned)) return;
    Finish(grpc::Status(grpc::StatusCode::CANCELLED,
                        absl::StrCat("the caller gave up before the ", what_,
                                     " started (its deadline passed, or it cancelled); it did "
                                     "not run")));
  }
  void OnDone() override { delete this; }

 private:
  const std::shared_ptr<std::atomic<int>> state_ = std::make_shared<std::atomic<int>>(kChecking);
  std::string what_;
};

void PluginHostService::PostOperation(grpc::CallbackServerContext* context,
                                      OperationReactor* reactor, absl::string_view what,
                                      std::function<grpc::Status()> run) {
  reactor->Queue(std::string(what));
  worker_.Post(
      [this, context, reactor, state = reactor->state(), what = std::string(what),
       run = std::move(run)] {
        if (!OperationReactor::Claim(*state)) return;  // the call ended while it waited
        // A caller that gave up just now (its cancellation not delivered yet) is answered
        // so: nobody would learn the outcome of an operation run for it.
        grpc::Status status;
        if (context->IsCancelled() || Expired(context)) {
          status = grpc::Status(
              Expired(context) ? grpc::StatusCode::DEADLINE_EXCEEDED : grpc::StatusCode::CANCELLED,
              absl::StrCat("the caller gave up before the ", what, " started; it did not run"));
        } else {
          status = run();
        }
        // Sending the reply is gRPC's work: not on an application's thread, which runs
        // the operation at its frame boundary and must get back to its frame.
        if (options_.reply_worker == nullptr) {
          reactor->Finish(std::move(status));
          return;
        }
        options_.reply_worker->Post([reactor, status] { reactor->Finish(status); },
                                    [reactor, status] { reactor->Finish(status); });
      },
      [this, context, reactor, state = reactor->state(), what = std::string(what)] {
        if (!OperationReactor::Claim(*state)) return;
        const std::string message =
            options_.operations_wait_for_application
                ? absl::StrCat("the application stopped the host before its loop ran this ", what,
                               " (it waited for RunPendingOperations); it did not run")
                : absl::StrCat("polyplug-host shut down before it ran this ", what,
                               "; it did not run");
        reactor->Finish(ToGrpcStatus(MakeError(ErrorReason::kShuttingDown, message), context));
      });
}

grpc::ServerUnaryReactor* PluginHostService::Reload(grpc::CallbackServerContext* context,
                                                    const v1::ReloadRequest* request,
                                                    v1::ReloadResponse* response) {
  auto* reactor = new OperationReactor();  // deletes itself when the call is done
  if (Unauthorized(context, reactor)) return reactor;
  fs::path path;
  std::string name;
  switch (request->bundle_case()) {
    case v1::ReloadRequest::kName:
      if (Reject(context, reactor, CheckName("name", request->name()))) return reactor;
      name = request->name();
      break;
    case v1::ReloadRequest::kPath: {
      auto confined = ConfinePath(request->path());
      if (Reject(context, reactor, confined.status())) return reactor;
      path = *confined;
      break;
    }
    default:
      Reject(
          context, reactor,
          MakeError(ErrorReason::kInvalidArgument, "set 'name' or 'path' of the bundle to reload"));
      return reactor;
  }
  PostOperation(context, reactor, "reload", [this, context, response, name, path] {
    auto outcome = name.empty() ? runtime_.ReloadBundle(path) : runtime_.ReloadBundleByName(name);
    if (!outcome.ok()) {
      return ToGrpcStatus(outcome.status(), context);
    }
    // A reload whose cascade left a dependent behind is not RELOADED: a check of `outcome`
    // alone (a CI script, grpcurl) must not read it as a success.
    for (const core::PhaseEvent& e : outcome->events) {
      if (e.phase == core::Phase::kFailed && e.parent_reload_id != 0) {
        response->add_failed_dependents(e.bundle_name);
      }
    }
    response->set_outcome(!outcome->ok() ? v1::RELOAD_OUTCOME_FAILED
                          : response->failed_dependents_size() > 0
                              ? v1::RELOAD_OUTCOME_DEPENDENTS_FAILED
                              : v1::RELOAD_OUTCOME_RELOADED);
    if (!outcome->ok()) {
      response->set_reason(ToProtoReason(core::ReasonOf(outcome->status)));
      response->set_message(std::string(outcome->status.message()));
    }
    response->set_reload_id(outcome->reload_id);
    for (const core::PhaseEvent& e : outcome->events) ToProto(e, response->add_events());
    if (!outcome->events.empty()) response->set_bundle_name(outcome->events.front().bundle_name);
    response->set_registry_revision(outcome->registry_revision);
    response->set_host_epoch(runtime_.host_epoch());
    return grpc::Status::OK;
  });
  return reactor;
}

grpc::ServerUnaryReactor* PluginHostService::LoadBundle(grpc::CallbackServerContext* context,
                                                        const v1::LoadBundleRequest* request,
                                                        v1::LoadBundleResponse* response) {
  auto* reactor = new OperationReactor();  // deletes itself when the call is done
  if (Unauthorized(context, reactor)) return reactor;
  auto confined = ConfinePath(request->path());
  if (Reject(context, reactor, confined.status())) return reactor;
  PostOperation(context, reactor, "load", [this, context, response, path = *confined] {
    const uint64_t before = runtime_.journal().last_seq();
    auto info = runtime_.LoadBundle(path);
    if (!info.ok()) {
      return ToGrpcStatus(info.status(), context);
    }
    ToProto(*info, runtime_, response->mutable_bundle());
    for (const core::PhaseEvent& e : EventsAfter(before)) {
      if (e.bundle_id == info->id && e.phase == core::Phase::kLoaded)
        ToProto(e, response->mutable_event());
    }
    response->set_registry_revision(runtime_.registry().revision());
    return grpc::Status::OK;
  });
  return reactor;
}

grpc::ServerUnaryReactor* PluginHostService::UnloadBundle(grpc::CallbackServerContext* context,
                                                          const v1::UnloadBundleRequest* request,
                                                          v1::UnloadBundleResponse* response) {
  auto* reactor = new OperationReactor();  // deletes itself when the call is done
  if (Unauthorized(context, reactor)) return reactor;
  if (Reject(context, reactor, CheckName("name", request->name()))) return reactor;
  PostOperation(context, reactor, "unload",
                [this, context, response, name = request->name(), cascade = request->cascade()] {
                  const uint64_t before = runtime_.journal().last_seq();
                  auto unloaded =
                      runtime_.UnloadBundle(name, cascade ? core::UnloadMode::kCascade
                                                          : core::UnloadMode::kRefuseIfInUse);
                  if (!unloaded.ok()) {
                    return ToGrpcStatus(unloaded.status(), context);
                  }
                  for (const std::string& n : *unloaded) response->add_unloaded(n);
                  for (const core::PhaseEvent& e : EventsAfter(before)) {
                    if (e.phase == core::Phase::kUnloading) ToProto(e, response->add_events());
                  }
                  response->set_registry_revision(runtime_.registry().revision());
                  return grpc::Status::OK;
                });
  return reactor;
}

absl::StatusOr<core::ContractHandle> PluginHostService::LookUp(
    const v1::FindContractRequest& request, absl::string_view name_field) const {
  uint64_t contract_id = 0;
  std::string label;
  if (request.contract_case() == v1::FindContractRequest::kContractId) {
    contract_id = request.contract_id();
    label = core::FormatContractId(contract_id);
  } else if (request.contract_case() == v1::FindContractRequest::kName) {
    if (absl::Status s = CheckName(name_field, request.name()); !s.ok()) return s;
    auto ref = core::ParseContractRef(request.name());
    if (!ref.ok()) {
      return MakeError(ErrorReason::kInvalidArgument,
                       absl::StrCat("field '", name_field, "': ", ref.status().message()));
    }
    const uint32_t major = ref->version ? ref->major() : request.major();
    contract_id = core::GuestContractId(ref->name, major);
    label = absl::StrCat(ref->name, "@", major);
  } else {
    return MakeError(ErrorReason::kInvalidArgument,
                     "set 'name' (\"contract@major\") or 'contract_id' of the contract to find");
  }
  absl::StatusOr<core::ContractHandle> handle;
  if (!request.bundle().empty()) {
    if (absl::Status s = CheckName("bundle", request.bundle()); !s.ok()) return s;
    handle = runtime_.registry().FindInBundle(core::BundleId(request.bundle()), contract_id,
                                              request.min_version());
  } else {
    handle = runtime_.Find(contract_id, request.min_version());
  }
  if (!handle.ok()) {
    return MakeError(
        ErrorReason::kContractNotFound,
        absl::StrCat(
            "no provider of contract ", label,
            request.min_version() ? absl::StrCat(" with major >= ", request.min_version()) : "",
            request.bundle().empty() ? "" : absl::StrCat(" in bundle \"", request.bundle(), "\""),
            " is loaded"));
  }
  return handle;
}

absl::StatusOr<core::ContractHandle> PluginHostService::HandleOf(
    const v1::ContractHandle& handle) const {
  if (handle.host_epoch() != 0 && handle.host_epoch() != runtime_.host_epoch()) {
    return MakeError(ErrorReason::kStaleHandle,
                     absl::StrCat("the handle is from host epoch ", handle.host_epoch(),
                                  " but this host's epoch is ", runtime_.host_epoch(),
                                  " (the host restarted); look the contract up again"));
  }
  return core::ContractHandle{handle.index(), handle.generation()};
}

grpc::ServerUnaryReactor* PluginHostService::FindContract(grpc::CallbackServerContext* context,
                                                          const v1::FindContractRequest* request,
                                                          v1::ContractHandle* response) {
  auto* reactor = context->DefaultReactor();
  if (Unauthorized(context, reactor)) return reactor;
  absl::StatusOr<core::ContractHandle> handle = LookUp(*request);
  if (Reject(context, reactor, handle.status())) return reactor;
  auto entry = runtime_.registry().Describe(*handle);
  if (Reject(context, reactor, entry.status())) return reactor;
  ToProto(*entry, runtime_, response);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* PluginHostService::ListBundles(grpc::CallbackServerContext* context,
                                                         const v1::ListBundlesRequest*,
                                                         v1::ListBundlesResponse* response) {
  auto* reactor = context->DefaultReactor();
  if (Unauthorized(context, reactor)) return reactor;
  response->set_registry_revision(runtime_.registry().revision());
  for (const core::BundleInfo& b : runtime_.ListBundles())
    ToProto(b, runtime_, response->add_bundles());
  response->set_host_epoch(runtime_.host_epoch());
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* PluginHostService::ListContracts(grpc::CallbackServerContext* context,
                                                           const v1::ListContractsRequest* request,
                                                           v1::ListContractsResponse* response) {
  auto* reactor = context->DefaultReactor();
  if (Unauthorized(context, reactor)) return reactor;
  std::vector<core::ContractEntry> entries;
  if (request->bundle().empty()) {
    entries = runtime_.registry().List();
  } else {
    if (Reject(context, reactor, CheckName("bundle", request->bundle()))) return reactor;
    if (auto b = runtime_.GetBundle(request->bundle()); !b.ok()) {
      Reject(context, reactor, b.status());
      return reactor;
    }
    entries = runtime_.registry().ListBundle(core::BundleId(request->bundle()));
  }
  for (const core::ContractEntry& e : entries) ToProto(e, runtime_, response->add_contracts());
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* PluginHostService::GetHostInfo(grpc::CallbackServerContext* context,
                                                         const v1::GetHostInfoRequest*,
                                                         v1::HostInfo* response) {
  auto* reactor = context->DefaultReactor();
  if (Unauthorized(context, reactor)) return reactor;
  response->set_version(POLYPLUG_HOST_VERSION);
  response->set_host_epoch(runtime_.host_epoch());
  response->set_registry_revision(runtime_.registry().revision());
  for (const fs::path& r : options_.bundle_roots) response->add_bundle_roots(r.string());
  response->set_hot_reload_enabled(runtime_.hot_reload_enabled());
  const absl::Duration uptime = absl::Now() - options_.started;
  *response->mutable_uptime() = wire::ToProto(uptime);
  response->set_bundle_count(static_cast<uint32_t>(runtime_.ListBundles().size()));
  response->set_contract_count(static_cast<uint32_t>(runtime_.registry().List().size()));
  response->set_subscriber_count(static_cast<uint32_t>(hub_.subscriber_count()));
  response->set_last_seq(runtime_.journal().last_seq());
  response->set_earliest_seq(runtime_.journal().earliest_seq());
  response->set_journal_capacity(runtime_.journal().capacity());
  response->set_instance_count(instances_.size());
  response->set_session_count(static_cast<uint32_t>(instances_.session_count()));
  {
    std::lock_guard<std::mutex> lock(listen_mu_);
    for (const std::string& a : listen_addresses_) response->add_listen_addresses(a);
  }
  if (const CrashRecovery* recovery = options_.recovery) {
    response->set_supervised(true);
    response->set_restarts(recovery->restart());
    for (const QuarantineEntry& e : recovery->quarantined()) {
      v1::QuarantinedVersion* q = response->add_quarantined();
      q->set_bundle_name(e.bundle_name);
      if (auto version = core::ParseVersion(e.version); version.ok()) {
        ToProto(*version, q->mutable_version());
      }
      q->set_artifact_sha256(e.sha256);
      q->set_signal(e.signal);
      q->set_during(e.during);
      *q->mutable_crashed_at() = wire::ToProto(e.crashed_at);
      q->set_restart(e.restart);
      q->set_message(e.message);
    }
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* PluginHostService::Echo(grpc::CallbackServerContext* context,
                                                  const v1::EchoRequest* request,
                                                  v1::EchoResponse* response) {
  auto* reactor = context->DefaultReactor();
  if (Unauthorized(context, reactor)) return reactor;
  response->set_payload(request->payload());
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* PluginHostService::SubscribeReloadPhases(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) {
  if (grpc::Status auth = authorizer_.Check(context); !auth.ok()) {
    return RefusedStream<grpc::ByteBuffer>(auth);
  }
  v1::SubscribeReloadPhasesRequest parsed;
  grpc::ByteBuffer copy(*request);  // Deserialize consumes its buffer
  if (!grpc::SerializationTraits<v1::SubscribeReloadPhasesRequest>::Deserialize(&copy, &parsed)
           .ok()) {
    return RefusedStream<grpc::ByteBuffer>(
        grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                     "the request is not a polyplug.host.v1.SubscribeReloadPhasesRequest"));
  }
  return hub_.Open(context, std::move(parsed));
}

// ---- Remote calls. The bundle's code runs on the call pool, except for one Invoke at a time,
// which runs on the gRPC thread that received it (see Invoke).

namespace {

// DEADLINE_EXCEEDED when the call's deadline passed while it waited for a pool thread.
grpc::Status ExpiredBeforeStart() {
  return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                      "the deadline passed before a call thread was free (see --call-threads)");
}

}  // namespace

absl::StatusOr<core::ContractHandle> PluginHostService::TargetOf(const v1::ContractHandle* handle,
                                                                 const std::string* contract,
                                                                 uint32_t min_version) const {
  if (handle != nullptr) return HandleOf(*handle);
  if (contract != nullptr) {
    v1::FindContractRequest find;
    find.set_name(*contract);
    find.set_min_version(min_version);
    return LookUp(find, "contract");
  }
  return MakeError(ErrorReason::kInvalidArgument,
                   "set the target: 'handle' (from FindContract) or 'contract' (\"name@major\")");
}

void PluginHostService::FillInstanceRef(uint64_t id, core::ContractHandle handle,
                                        v1::InstanceRef* out) const {
  out->set_instance_id(id);
  out->set_host_epoch(runtime_.host_epoch());
  if (auto entry = runtime_.registry().Describe(handle); entry.ok()) {
    ToProto(*entry, runtime_, out->mutable_handle());
  }
}

grpc::ServerWriteReactor<v1::SessionEvent>* PluginHostService::OpenSession(
    grpc::CallbackServerContext* context, const v1::OpenSessionRequest*) {
  if (grpc::Status auth = authorizer_.Check(context); !auth.ok()) {
    return RefusedStream<v1::SessionEvent>(auth);
  }
  return StartSessionStream(context, instances_, calls_, runtime_.host_epoch());
}

grpc::ServerUnaryReactor* PluginHostService::CreateInstance(
    grpc::CallbackServerContext* context, const v1::CreateInstanceRequest* request,
    v1::InstanceRef* response) {
  auto* reactor = context->DefaultReactor();
  if (Unauthorized(context, reactor)) return reactor;
  absl::StatusOr<core::ContractHandle> handle =
      TargetOf(request->has_handle() ? &request->handle() : nullptr,
               request->target_case() == v1::CreateInstanceRequest::kContract ? &request->contract()
                                                                              : nullptr,
               request->min_version());
  if (Reject(context, reactor, handle.status())) return reactor;
  if (request->idle_timeout().seconds() < 0 || request->idle_timeout().nanos() < 0) {
    Reject(context, reactor,
           MakeError(ErrorReason::kInvalidArgument, "field 'idle_timeout' is negative"));
    return reactor;
  }
  calls_.Post(
      [this, context, request, response, reactor, handle = *handle] {
        if (Expired(context)) return reactor->Finish(ExpiredBeforeStart());
        CreateOptions options;
        options.session = request->session_id();
        options.idle_timeout = wire::FromProto(request->idle_timeout());
        options.deadline = absl::FromChrono(context->deadline());
        absl::StatusOr<uint64_t> id = instances_.Create(handle, request->args(), options);
        if (Reject(context, reactor, id.status())) return;
        FillInstanceRef(*id, handle, response);
        reactor->Finish(grpc::Status::OK);
      },
      [reactor] { reactor->Finish(ShuttingDown()); });
  return reactor;
}

grpc::ServerUnaryReactor* PluginHostService::Invoke(grpc::CallbackServerContext* context,
                                                    const v1::InvokeRequest* request,
                                                    v1::InvokeResponse* response) {
  auto* reactor = context->DefaultReactor();
  if (Unauthorized(context, reactor)) return reactor;
  if (Reject(context, reactor, CheckName("method", request->method()))) return reactor;
  std::optional<uint64_t> instance;
  absl::StatusOr<core::ContractHandle> handle;
  if (request->target_case() == v1::InvokeRequest::kInstance) {
    const v1::InstanceRef& ref = request->instance();
    if (ref.host_epoch() != 0 && ref.host_epoch() != runtime_.host_epoch()) {
      Reject(context, reactor,
             MakeError(
                 ErrorReason::kInstanceNotFound,
                 absl::StrCat("instance ", ref.instance_id(), " is from host epoch ",
                              ref.host_epoch(), " but this host's epoch is ", runtime_.host_epoch(),
                              " (the host restarted); make a new instance")));
      return reactor;
    }
    instance = ref.instance_id();
    handle = instances_.HandleOf(*instance);
  } else {
    handle = TargetOf(
        request->target_case() == v1::InvokeRequest::kHandle ? &request->handle() : nullptr,
        request->target_case() == v1::InvokeRequest::kContract ? &request->contract() : nullptr,
        request->min_version());
  }
  if (Reject(context, reactor, handle.status())) return reactor;
  auto call = [this, context, request, response, reactor, instance, handle = *handle] {
    if (Expired(context)) return reactor->Finish(ExpiredBeforeStart());
    absl::StatusOr<std::string> result =
        instance ? instances_.Invoke(*instance, request->method(), request->request())
                 : instances_.InvokeOnce(handle, request->method(), request->request(),
                                         absl::FromChrono(context->deadline()));
    if (Reject(context, reactor, result.status())) return;
    *response->mutable_response() = *std::move(result);
    if (auto entry = runtime_.registry().Describe(handle); entry.ok()) {
      ToProto(*entry, runtime_, response->mutable_handle());
    }
    reactor->Finish(grpc::Status::OK);
  };
  // One call at a time runs right here, on the gRPC thread: handing it to the call pool
  // costs a thread wake-up, which on these VMs (idle vCPUs halt at once) is most of a
  // trivial call's cost. gRPC 1.51 serves callbacks on two threads, so one busy in bundle
  // code, even for long, leaves the other serving; every further call goes to the pool.
  if (inline_calls_.fetch_add(1) < kInlineCalls) {
    call();
    inline_calls_.fetch_sub(1);
    return reactor;
  }
  inline_calls_.fetch_sub(1);
  calls_.Post(std::move(call), [reactor] { reactor->Finish(ShuttingDown()); });
  return reactor;
}

grpc::ServerUnaryReactor* PluginHostService::DestroyInstance(
    grpc::CallbackServerContext* context, const v1::DestroyInstanceRequest* request,
    v1::DestroyInstanceResponse*) {
  auto* reactor = context->DefaultReactor();
  if (Unauthorized(context, reactor)) return reactor;
  const v1::InstanceRef& ref = request->instance();
  if (ref.host_epoch() != 0 && ref.host_epoch() != runtime_.host_epoch()) {
    // The host that made it is gone, and the instance with it.
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
  calls_.Post(
      [this, context, reactor, id = ref.instance_id()] {
        if (Reject(context, reactor, instances_.Destroy(id))) return;
        reactor->Finish(grpc::Status::OK);
      },
      [reactor] { reactor->Finish(ShuttingDown()); });
  return reactor;
}

}  // namespace polyplug::host
