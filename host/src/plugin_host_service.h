// PluginHostService: polyplug.host.v1.PluginHost over a core::Runtime (callback API).
//
// Lookups and listings answer on the gRPC thread (they never wait for a reload);
// Reload, LoadBundle and UnloadBundle run on the OperationWorker and finish from there;
// CreateInstance, Invoke and DestroyInstance run the bundle's code on the call pool, but
// for one Invoke at a time, which runs on the gRPC thread (see Invoke); FetchBundle reads
// and hashes files there too.
#ifndef POLYPLUG_HOST_SRC_PLUGIN_HOST_SERVICE_H_
#define POLYPLUG_HOST_SRC_PLUGIN_HOST_SERVICE_H_

#include <atomic>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "host/src/authorization.h"
#include "host/src/crash_recovery.h"
#include "host/src/deploy_root.h"
#include "host/src/operation_call.h"
#include "host/src/operation_log.h"
#include "host/src/operation_worker.h"
#include "host/src/phase_stream.h"
#include "host/src/remote_instances.h"
#include "polyplug/core/runtime.h"
#include "polyplug/host/v1/host.grpc.pb.h"

namespace polyplug::host {

class PushReactor;  // plugin_host_service.cc

struct PluginHostServiceOptions {
  std::vector<std::filesystem::path> bundle_roots;  // canonical
  absl::Time started = absl::Now();
  const CrashRecovery* recovery = nullptr;  // under --supervise: restarts and quarantine
  // Mutations wait for an application's RunPendingOperations() (what an error says when
  // the host stops before running one).
  bool operations_wait_for_application = false;
  // Where the calls of those operations are finished (their replies sent); null: on the
  // thread that ran the operation.
  OperationWorker* reply_worker = nullptr;
  // Where PushBundle places uploads; null: PushBundle is refused.
  DeployRoot* deploy_root = nullptr;
  // The server's largest message (--max-message-bytes), which FetchBundle's messages stay
  // under.
  int max_message_bytes = 4 << 20;
};

// PluginHost's callback service with SubscribeReloadPhases raw (ByteBuffer), so that the
// hub serialises each live event once for all its subscribers. Spelled out rather than
// wrapping CallbackService: the raw method would hide the typed one (-Woverloaded-virtual).
using PluginHostCallbackService = v1::PluginHost::WithCallbackMethod_Reload<
    v1::PluginHost::WithCallbackMethod_LoadBundle<v1::PluginHost::WithCallbackMethod_UnloadBundle<
        v1::PluginHost::WithCallbackMethod_FindContract<
            v1::PluginHost::WithCallbackMethod_ListBundles<
                v1::PluginHost::WithCallbackMethod_ListContracts<
                    v1::PluginHost::WithCallbackMethod_GetHostInfo<
                        v1::PluginHost::WithRawCallbackMethod_SubscribeReloadPhases<
                            v1::PluginHost::WithCallbackMethod_OpenSession<
                                v1::PluginHost::WithCallbackMethod_CreateInstance<
                                    v1::PluginHost::WithCallbackMethod_Invoke<
                                        v1::PluginHost::WithCallbackMethod_DestroyInstance<
                                            v1::PluginHost::WithCallbackMethod_Echo<
                                                v1::PluginHost::WithCallbackMethod_PushBundle<
                                                    v1::PluginHost::WithCallbackMethod_EchoStream<
                                                        v1::PluginHost::
                                                            WithCallbackMethod_GetOperation<
                                                                v1::PluginHost::
                                                                    WithCallbackMethod_FetchBundle<
                                                                        v1::PluginHost::
                                                                            Service>>>>>>>>>>>>>>>>>;

class PluginHostService final : public PluginHostCallbackService {
 public:
  // `worker` runs mutations; `calls` runs the bundles' code for remote calls.
  // `authorizer` checks every call first (see authorization.h) and outlives the service.
  PluginHostService(core::Runtime& runtime, PhaseHub& hub, OperationWorker& worker,
                    RemoteInstances& instances, OperationWorker& calls,
                    const TokenAuthorizer& authorizer, PluginHostServiceOptions options);

  // What GetHostInfo reports as listen_addresses (known only once the server listens).
  void SetListenAddresses(std::vector<std::string> addresses);

  // `path` resolved inside a bundle root (relative paths against the first root that
  // has them); PERMISSION_DENIED when it leads outside every root.
  absl::StatusOr<std::filesystem::path> ConfinePath(const std::string& path) const;

  grpc::ServerUnaryReactor* Reload(grpc::CallbackServerContext* context,
                                   const v1::ReloadRequest* request,
                                   v1::ReloadResponse* response) override;
  grpc::ServerUnaryReactor* LoadBundle(grpc::CallbackServerContext* context,
                                       const v1::LoadBundleRequest* request,
                                       v1::LoadBundleResponse* response) override;
  grpc::ServerUnaryReactor* UnloadBundle(grpc::CallbackServerContext* context,
                                         const v1::UnloadBundleRequest* request,
                                         v1::UnloadBundleResponse* response) override;
  grpc::ServerUnaryReactor* FindContract(grpc::CallbackServerContext* context,
                                         const v1::FindContractRequest* request,
                                         v1::ContractHandle* response) override;
  grpc::ServerUnaryReactor* ListBundles(grpc::CallbackServerContext* context,
                                        const v1::ListBundlesRequest* request,
                                        v1::ListBundlesResponse* response) override;
  grpc::ServerUnaryReactor* ListContracts(grpc::CallbackServerContext* context,
                                          const v1::ListContractsRequest* request,
                                          v1::ListContractsResponse* response) override;
  grpc::ServerUnaryReactor* GetHostInfo(grpc::CallbackServerContext* context,
                                        const v1::GetHostInfoRequest* request,
                                        v1::HostInfo* response) override;
  // `request` is a serialised SubscribeReloadPhasesRequest.
  grpc::ServerWriteReactor<grpc::ByteBuffer>* SubscribeReloadPhases(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) override;
  grpc::ServerWriteReactor<v1::SessionEvent>* OpenSession(
      grpc::CallbackServerContext* context, const v1::OpenSessionRequest* request) override;
  grpc::ServerUnaryReactor* CreateInstance(grpc::CallbackServerContext* context,
                                           const v1::CreateInstanceRequest* request,
                                           v1::InstanceRef* response) override;
  grpc::ServerUnaryReactor* Invoke(grpc::CallbackServerContext* context,
                                   const v1::InvokeRequest* request,
                                   v1::InvokeResponse* response) override;
  grpc::ServerUnaryReactor* DestroyInstance(grpc::CallbackServerContext* context,
                                            const v1::DestroyInstanceRequest* request,
                                            v1::DestroyInstanceResponse* response) override;
  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* context,
                                 const v1::EchoRequest* request,
                                 v1::EchoResponse* response) override;
  grpc::ServerUnaryReactor* GetOperation(grpc::CallbackServerContext* context,
                                         const v1::GetOperationRequest* request,
                                         v1::Operation* response) override;
  grpc::ServerReadReactor<v1::EchoRequest>* EchoStream(grpc::CallbackServerContext* context,
                                                       v1::EchoStreamResponse* response) override;
  grpc::ServerReadReactor<v1::PushBundleRequest>* PushBundle(
      grpc::CallbackServerContext* context, v1::PushBundleResponse* response) override;
  // Streams a loaded bundle's files as a push would send them (fetch_reactor.h), read on
  // the call pool.
  grpc::ServerWriteReactor<v1::PushBundleRequest>* FetchBundle(
      grpc::CallbackServerContext* context, const v1::FetchBundleRequest* request) override;

 private:
  friend class PushReactor;
  // Runs `run` (a load, reload, unload or push, which fills `response` and returns the
  // call's status) on the worker, then finishes the call; says so when it never runs
  // (`what`: "reload", ...). With a `request_id` (admitted by AnsweredFromLog), the outcome
  // is recorded in the operation log, or forgotten when it did not run.
  void PostOperation(grpc::CallbackServerContext* context, OperationCall* reactor,
                     absl::string_view what, std::function<grpc::Status()> run,
                     std::string request_id = "",
                     const google::protobuf::Message* response = nullptr);
  // The request_id step of an operation's call: true when the call is taken care of (the id
  // is malformed or reused: refused; a retry: answered with the first outcome, now or when
  // it is done); false when the caller is to run the operation (no id, or a new one, now
  // recorded as running). `discard`, when given, runs first when the call is taken care of
  // (a push drops its received files before the caller hears).
  // SubscribeReloadPhases with until_request_done: the operation's events once it is done.
  grpc::ServerWriteReactor<grpc::ByteBuffer>* OpenOperationStream(
      grpc::CallbackServerContext* context, v1::SubscribeReloadPhasesRequest request);
  bool AnsweredFromLog(grpc::CallbackServerContext* context, OperationCall* call,
                       absl::string_view method, const std::string& request_id,
                       const std::string& fingerprint, google::protobuf::Message* response,
                       const std::function<void()>& discard = nullptr);
  // Places a received upload and loads or reloads it, as an operation; fills `response`.
  void PostDeploy(grpc::CallbackServerContext* context, OperationCall* call,
                  std::shared_ptr<BundleUpload> upload, const std::string& request_id,
                  v1::PushBundleResponse* response);
  // Finishes `reactor` with UNAUTHENTICATED unless the call carries the token.
  bool Unauthorized(grpc::CallbackServerContext* context, grpc::ServerUnaryReactor* reactor);
  // Finishes `reactor` with `status` if it is not OK; returns whether it did.
  bool Reject(grpc::CallbackServerContext* context, grpc::ServerUnaryReactor* reactor,
              const absl::Status& status);
  std::vector<core::PhaseEvent> EventsAfter(uint64_t seq) const;
  // The provider a FindContractRequest names, or CONTRACT_NOT_FOUND / INVALID_ARGUMENT.
  // `name_field` is how errors name the request's contract field.
  absl::StatusOr<core::ContractHandle> LookUp(const v1::FindContractRequest& request,
                                              absl::string_view name_field = "name") const;
  // A handle a client sent back; STALE_HANDLE when it is from another host epoch.
  absl::StatusOr<core::ContractHandle> HandleOf(const v1::ContractHandle& handle) const;
  // The target of CreateInstance or a one-shot Invoke: a handle, or a contract to look up.
  absl::StatusOr<core::ContractHandle> TargetOf(const v1::ContractHandle* handle,
                                                const std::string* contract,
                                                uint32_t min_version) const;
  void FillInstanceRef(uint64_t id, core::ContractHandle handle, v1::InstanceRef* out) const;

  core::Runtime& runtime_;
  PhaseHub& hub_;
  OperationWorker& worker_;
  RemoteInstances& instances_;
  OperationWorker& calls_;
  const TokenAuthorizer& authorizer_;
  // Invoke calls running on a gRPC thread (at most kInlineCalls; see Invoke).
  static constexpr int kInlineCalls = 1;
  std::atomic<int> inline_calls_{0};
  const PluginHostServiceOptions options_;
  OperationLog operation_log_;
  mutable std::mutex listen_mu_;
  std::vector<std::string> listen_addresses_;
};

}  // namespace polyplug::host

#endif  // POLYPLUG_HOST_SRC_PLUGIN_HOST_SERVICE_H_
