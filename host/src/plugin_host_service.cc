#include "host/src/plugin_host_service.h"

#include <atomic>
#include <cstdio>
#include <mutex>
#include <optional>

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/src/paths.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "host/src/bundle_listing.h"
#include "host/src/fetch_reactor.h"
#include "host/src/session_stream.h"
#include "host/src/status_mapping.h"
#include "host/src/upload_worker.h"
#include "polyplug/core/bundle_signature.h"
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

// The reactor of a load, reload or unload (see OperationCall).
class OperationReactor final : public grpc::ServerUnaryReactor, public OperationCall {
 public:
  void FinishCall(grpc::Status status) override { Finish(std::move(status)); }
  void OnCancel() override { AbandonIfWaiting(); }
  void OnDone() override { delete this; }
};

void PluginHostService::PostOperation(grpc::CallbackServerContext* context, OperationCall* reactor,
                                      absl::string_view what, std::function<grpc::Status()> run,
                                      std::string request_id,
                                      const google::protobuf::Message* response) {
  reactor->Queue(std::string(what));
  worker_.Post(
      [this, context, reactor, state = reactor->state(), what = std::string(what),
       run = std::move(run), request_id, response] {
        if (!OperationCall::Claim(*state)) {  // the call ended while it waited
          if (!request_id.empty()) {
            operation_log_.Forget(request_id, grpc::Status(grpc::StatusCode::CANCELLED,
                                                           absl::StrCat("the first call with this "
                                                                        "request_id gave up "
                                                                        "before the ",
                                                                        what,
                                                                        " started; it did "
                                                                        "not run")));
          }
          return;
        }
        // A caller that gave up just now (its cancellation not delivered yet) is answered
        // so: nobody would learn the outcome of an operation run for it.
        grpc::Status status;
        if (context->IsCancelled() || Expired(context)) {
          status = grpc::Status(
              Expired(context) ? grpc::StatusCode::DEADLINE_EXCEEDED : grpc::StatusCode::CANCELLED,
              absl::StrCat("the caller gave up before the ", what, " started; it did not run"));
          if (!request_id.empty()) operation_log_.Forget(request_id, status);
        } else {
          status = run();
          // What a retry, or GetOperation, answers from now on.
          if (!request_id.empty()) {
            operation_log_.Finish(request_id, status,
                                  status.ok() ? response->SerializeAsString() : "");
          }
        }
        // Sending the reply is gRPC's work: not on an application's thread, which runs
        // the operation at its frame boundary and must get back to its frame.
        if (options_.reply_worker == nullptr) {
          reactor->FinishCall(std::move(status));
          return;
        }
        options_.reply_worker->Post([reactor, status] { reactor->FinishCall(status); },
                                    [reactor, status] { reactor->FinishCall(status); });
      },
      [this, context, reactor, state = reactor->state(), what = std::string(what), request_id] {
        const std::string message =
            options_.operations_wait_for_application
                ? absl::StrCat("the application stopped the host before its loop ran this ", what,
                               " (it waited for RunPendingOperations); it did not run")
                : absl::StrCat("polyplug-host shut down before it ran this ", what,
                               "; it did not run");
        const grpc::Status status =
            ToGrpcStatus(MakeError(ErrorReason::kShuttingDown, message), nullptr);
        if (!request_id.empty()) operation_log_.Forget(request_id, status);
        if (!OperationCall::Claim(*state)) return;
        reactor->FinishCall(ToGrpcStatus(MakeError(ErrorReason::kShuttingDown, message), context));
      });
}

namespace {

// `op` as GetOperation returns it.
void OperationToProto(const LoggedOperation& op, uint64_t host_epoch, v1::Operation* out) {
  out->set_request_id(op.request_id);
  out->set_method(op.method);
  out->set_done(op.done);
  *out->mutable_started() = wire::ToProto(op.started);
  out->set_host_epoch(host_epoch);
  if (!op.done) return;
  *out->mutable_finished() = wire::ToProto(op.finished);
  out->set_code(static_cast<int32_t>(op.status.error_code()));
  if (!op.status.ok()) {
    out->set_message(op.status.error_message());
    out->set_reason(wire::ReasonOfToken(ReasonTokenIn(op.status)));
    return;
  }
  google::protobuf::Message* response = nullptr;
  if (op.method == "Reload") response = out->mutable_reload();
  if (op.method == "LoadBundle") response = out->mutable_load();
  if (op.method == "UnloadBundle") response = out->mutable_unload();
  if (op.method == "PushBundle") response = out->mutable_push();
  if (response != nullptr) response->ParseFromString(op.response);
}

// The events a finished operation caused, as its response lists them.
std::vector<v1::ReloadPhaseEvent> EventsOf(const v1::Operation& op) {
  switch (op.response_case()) {
    case v1::Operation::kReload:
      return {op.reload().events().begin(), op.reload().events().end()};
    case v1::Operation::kLoad:
      if (op.load().has_event()) return {op.load().event()};
      return {};
    case v1::Operation::kUnload:
      return {op.unload().events().begin(), op.unload().events().end()};
    case v1::Operation::kPush:
      return {op.push().events().begin(), op.push().events().end()};
    default:
      return {};
  }
}

absl::Status UnknownOperation(const std::string& request_id, uint64_t host_epoch) {
  return MakeError(ErrorReason::kOperationNotFound,
                   absl::StrCat("this host (epoch ", host_epoch,
                                ") remembers no operation with request_id \"", request_id,
                                "\": it never arrived, did not run (its caller gave up before "
                                "its turn), is older than the last 1024, or the host "
                                "restarted since"));
}

// What a request asks, without its request_id: a retry has the same.
template <typename Request>
std::string FingerprintOf(Request request) {
  request.clear_request_id();
  std::string bytes;
  google::protobuf::io::StringOutputStream stream(&bytes);
  google::protobuf::io::CodedOutputStream coded(&stream);
  coded.SetSerializationDeterministic(true);
  request.SerializeToCodedStream(&coded);
  coded.Trim();
  return bytes;
}
}  // namespace

bool PluginHostService::AnsweredFromLog(grpc::CallbackServerContext* context, OperationCall* call,
                                        absl::string_view method, const std::string& request_id,
                                        const std::string& fingerprint,
                                        google::protobuf::Message* response,
                                        const std::function<void()>& discard) {
  if (request_id.empty()) return false;
  if (absl::Status s = OperationLog::CheckRequestId(request_id); !s.ok()) {
    if (discard) discard();
    call->FinishCall(ToGrpcStatus(s, context));
    return true;
  }
  LoggedOperation seen;
  const OperationLog::Admission admission =
      operation_log_.Admit(request_id, method, fingerprint, &seen);
  if (admission == OperationLog::Admission::kNew) return false;
  if (discard) discard();
  switch (admission) {
    case OperationLog::Admission::kNew:
      return false;
    case OperationLog::Admission::kConflict:
      call->FinishCall(ToGrpcStatus(
          MakeError(ErrorReason::kRequestIdReused,
                    absl::StrCat("request_id \"", request_id, "\" was used at ",
                                 absl::FormatTime(seen.started), " for another request (",
                                 seen.method == method ? "other arguments" : "a " + seen.method,
                                 "); a new request needs a new id")),
          context));
      return true;
    case OperationLog::Admission::kDuplicate:
      break;
  }
  // A retry: the first call's outcome, now or when it is done.
  call->Queue(absl::StrCat("retry of ", method));
  operation_log_.Await(
      request_id, [call, state = call->state(), context, response](const LoggedOperation& op) {
        if (!OperationCall::Claim(*state)) return;  // this retry gave up meanwhile
        if (op.status.ok()) {
          response->ParseFromString(op.response);
        } else if (const std::string token = ReasonTokenIn(op.status); !token.empty()) {
          context->AddTrailingMetadata(wire::kReasonTrailer, token);
        }
        call->FinishCall(op.status);
      });
  return true;
}

grpc::ServerUnaryReactor* PluginHostService::GetOperation(grpc::CallbackServerContext* context,
                                                          const v1::GetOperationRequest* request,
                                                          v1::Operation* response) {
  auto* reactor = new OperationReactor();  // deletes itself when the call is done
  if (Unauthorized(context, reactor)) return reactor;
  const std::string& id = request->request_id();
  if (Reject(context, reactor, OperationLog::CheckRequestId(id))) return reactor;
  auto fill = [epoch = runtime_.host_epoch(), response](const LoggedOperation& op) {
    OperationToProto(op, epoch, response);
  };
  LoggedOperation op;
  if (!operation_log_.Find(id, &op)) {
    Reject(context, reactor, UnknownOperation(id, runtime_.host_epoch()));
    return reactor;
  }
  if (op.done || !request->wait()) {
    fill(op);
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
  reactor->Queue("wait for the operation");
  operation_log_.Await(id, [reactor, state = reactor->state(), fill](const LoggedOperation& op) {
    if (!OperationCall::Claim(*state)) return;
    fill(op);
    reactor->FinishCall(grpc::Status::OK);
  });
  return reactor;
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
  core::ReloadOptions reload_options;
  reload_options.expected_sha256 = request->expected_sha256();
  if (!reload_options.expected_sha256.empty() &&
      !core::IsSha256Hex(reload_options.expected_sha256)) {
    Reject(context, reactor,
           MakeError(ErrorReason::kInvalidArgument,
                     "field 'expected_sha256' must be 64 lowercase hex digits (what sha256sum "
                     "prints for the artifact)"));
    return reactor;
  }
  if (AnsweredFromLog(context, reactor, "Reload", request->request_id(), FingerprintOf(*request),
                      response)) {
    return reactor;
  }
  PostOperation(
      context, reactor, "reload",
      [this, context, response, name, path, reload_options] {
        auto outcome = name.empty() ? runtime_.ReloadBundle(path, reload_options)
                                    : runtime_.ReloadBundleByName(name, reload_options);
        if (!outcome.ok()) {
          return ToGrpcStatus(outcome.status(), context);
        }
        // A reload whose cascade left a dependent behind is not RELOADED: a check of `outcome`
        // alone (a CI script, grpcurl) must not read it as a success.
        for (const std::string& dependent : outcome->FailedDependents()) {
          response->add_failed_dependents(dependent);
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
        if (!outcome->events.empty())
          response->set_bundle_name(outcome->events.front().bundle_name);
        response->set_registry_revision(outcome->registry_revision);
        response->set_host_epoch(runtime_.host_epoch());
        return grpc::Status::OK;
      },
      request->request_id(), response);
  return reactor;
}

grpc::ServerUnaryReactor* PluginHostService::LoadBundle(grpc::CallbackServerContext* context,
                                                        const v1::LoadBundleRequest* request,
                                                        v1::LoadBundleResponse* response) {
  auto* reactor = new OperationReactor();  // deletes itself when the call is done
  if (Unauthorized(context, reactor)) return reactor;
  auto confined = ConfinePath(request->path());
  if (Reject(context, reactor, confined.status())) return reactor;
  if (AnsweredFromLog(context, reactor, "LoadBundle", request->request_id(),
                      FingerprintOf(*request), response)) {
    return reactor;
  }
  PostOperation(
      context, reactor, "load",
      [this, context, response, path = *confined] {
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
      },
      request->request_id(), response);
  return reactor;
}

grpc::ServerUnaryReactor* PluginHostService::UnloadBundle(grpc::CallbackServerContext* context,
                                                          const v1::UnloadBundleRequest* request,
                                                          v1::UnloadBundleResponse* response) {
  auto* reactor = new OperationReactor();  // deletes itself when the call is done
  if (Unauthorized(context, reactor)) return reactor;
  if (Reject(context, reactor, CheckName("name", request->name()))) return reactor;
  if (AnsweredFromLog(context, reactor, "UnloadBundle", request->request_id(),
                      FingerprintOf(*request), response)) {
    return reactor;
  }
  PostOperation(
      context, reactor, "unload",
      [this, context, response, name = request->name(), cascade = request->cascade()] {
        const uint64_t before = runtime_.journal().last_seq();
        auto unloaded = runtime_.UnloadBundle(
            name, cascade ? core::UnloadMode::kCascade : core::UnloadMode::kRefuseIfInUse);
        if (!unloaded.ok()) {
          return ToGrpcStatus(unloaded.status(), context);
        }
        for (const std::string& n : *unloaded) response->add_unloaded(n);
        for (const core::PhaseEvent& e : EventsAfter(before)) {
          if (e.phase == core::Phase::kUnloading) ToProto(e, response->add_events());
        }
        response->set_registry_revision(runtime_.registry().revision());
        return grpc::Status::OK;
      },
      request->request_id(), response);
  return reactor;
}

// The reactor of a PushBundle: receives the upload, which an UploadWorker writes and
// checks on a thread of its own as it arrives, then posts its placement and load or reload
// as an operation (OperationCall). At most kQueuedChunks messages wait to be written, so a
// slow disk slows the sender instead of filling memory.
//
// Threads: gRPC's (Start, OnReadDone, OnCancel, OnDone) and the worker's (its callbacks:
// the next read once there is room, the end of the upload). `mu_` orders the call's reads
// and its Finish, so that nothing is read once the call is finished.
class PushReactor final : public grpc::ServerReadReactor<v1::PushBundleRequest>,
                          public OperationCall {
 public:
  PushReactor(PluginHostService& service, grpc::CallbackServerContext* context,
              v1::PushBundleResponse* response)
      : service_(service), context_(context), response_(response) {}

  void Start() {
    if (grpc::Status auth = service_.authorizer_.Check(context_); !auth.ok()) {
      return FinishCall(auth);
    }
    if (service_.options_.deploy_root == nullptr) {
      return Refuse(MakeError(ErrorReason::kNoDeployRoot,
                              "this host takes no pushes: start polyplug-host with "
                              "--deploy-root DIR (a directory it owns for pushed bundles)"));
    }
    ReadNext();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return OnSenderDone();
    if (!worker_) {
      if (Begin()) ReadNext();
      return;
    }
    switch (request_.part_case()) {
      case v1::PushBundleRequest::kData:
        if (digests_) {
          return RefuseWhileReceiving(MakeError(ErrorReason::kInvalidArgument,
                                                "the upload sent 'data' after its 'digests' "
                                                "message, which must be the last"));
        }
        bytes_read_ += request_.data().size();
        // False: the worker asks for the next read once a chunk is written.
        if (worker_->Add(std::move(*request_.mutable_data()))) ReadNext();
        return;
      case v1::PushBundleRequest::kDigests:
        if (digests_ || header_has_digests_) {
          return RefuseWhileReceiving(MakeError(
              ErrorReason::kInvalidArgument, digests_
                                                 ? "the upload sent a second 'digests' message"
                                                 : "the upload sent a 'digests' message but its "
                                                   "header carried the digests already; send them "
                                                   "in one place"));
        }
        digests_ = std::move(*request_.mutable_digests());
        return ReadNext();
      default:
        return RefuseWhileReceiving(
            MakeError(ErrorReason::kInvalidArgument,
                      "a PushBundle upload has one header, in its first message; the "
                      "messages after it carry 'data', then (unless the header had "
                      "them) 'digests'"));
    }
  }

  void FinishCall(grpc::Status status) override {
    std::lock_guard lock(mu_);
    if (finished_) return;
    finished_ = true;
    Finish(std::move(status));
  }
  void OnCancel() override { AbandonIfWaiting(); }
  void OnDone() override { delete this; }

 private:
  // Chunks waiting for the worker: with polyplugctl's 1 MiB messages, 4 MiB.
  static constexpr size_t kQueuedChunks = 4;

  // Any thread: the next message, unless the call is finished. gRPC may run OnReadDone
  // before StartRead returns, hence the recursive mutex.
  void ReadNext() {
    std::lock_guard lock(mu_);
    if (!finished_) StartRead(&request_);
  }

  // Ends the call with `status`; the upload's files go first (`upload`, or the worker's),
  // then a log line says so. An upload that failed did not run: a retry with its request_id
  // sends it again.
  void Refuse(const absl::Status& status, std::unique_ptr<BundleUpload> upload = nullptr) {
    if (!request_id_.empty()) {
      service_.operation_log_.Forget(request_id_, ToGrpcStatus(status, nullptr));
    }
    Drop(absl::StrCat("refused: [", core::ReasonToken(core::ReasonOf(status)), "] ",
                      status.message()),
         std::move(upload));
    FinishCall(ToGrpcStatus(status, context_));
  }

  // gRPC thread, once the worker runs: stops it (its upload and staging directory go with
  // it), then refuses. Should a write fail meanwhile, the worker's refusal is the answer.
  void RefuseWhileReceiving(const absl::Status& status) {
    worker_.reset();
    Refuse(status);
  }

  void Drop(absl::string_view why, std::unique_ptr<BundleUpload> upload) {
    upload.reset();
    std::fprintf(stderr, "polyplug-host: push%s%s after %llu bytes %s; nothing was placed\n",
                 bundle_name_.empty() ? "" : " of ", bundle_name_.c_str(),
                 static_cast<unsigned long long>(bytes_read_.load()), std::string(why).c_str());
  }

  // The header: refused, a retry answered from the operation log (false: read no more), or
  // the start of the upload (true: read on).
  bool Begin() {
    if (request_.part_case() != v1::PushBundleRequest::kHeader) {
      Refuse(MakeError(ErrorReason::kInvalidArgument,
                       "the first message of a PushBundle upload must be its 'header'"));
      return false;
    }
    v1::PushBundleHeader& header = *request_.mutable_header();
    header_has_digests_ = !header.bundle_digest().empty();
    if (header_has_digests_) {
      // The request is known in full: a retry is answered before its bytes are read.
      if (service_.AnsweredFromLog(context_, this, "PushBundle", header.request_id(),
                                   FingerprintOf(header), response_)) {
        return false;
      }
      request_id_ = header.request_id();
    } else if (!header.request_id().empty()) {
      if (absl::Status s = OperationLog::CheckRequestId(header.request_id()); !s.ok()) {
        Refuse(s);
        return false;
      }
      header_ = header;  // the request is this plus the digests that follow the bytes
    }
    bundle_name_ = header.bundle_name();
    auto upload = service_.options_.deploy_root->BeginUpload(UploadHeaderOf(std::move(header)));
    if (!upload.ok()) {
      Refuse(upload.status());
      return false;
    }
    std::fprintf(stderr, "polyplug-host: push of %s: receiving %llu bytes in %zu files\n",
                 bundle_name_.c_str(), static_cast<unsigned long long>((*upload)->bytes_expected()),
                 (*upload)->header().files.size());
    worker_ = std::make_unique<UploadWorker>(
        *std::move(upload), kQueuedChunks, [this] { ReadNext(); },
        [this](absl::Status status, std::unique_ptr<BundleUpload> upload) {
          OnUploadWritten(std::move(status), std::move(upload));
        });
    return true;
  }

  // gRPC thread: the sender closed its side, or went away.
  void OnSenderDone() {
    if (worker_) return worker_->Close();  // OnUploadWritten follows
    if (context_->IsCancelled()) return Cancelled();
    Refuse(MakeError(ErrorReason::kInvalidArgument, "the upload ended before its header"));
  }

  void Cancelled(std::unique_ptr<BundleUpload> upload = nullptr) {
    if (!request_id_.empty()) {
      service_.operation_log_.Forget(
          request_id_, grpc::Status(grpc::StatusCode::CANCELLED,
                                    "the first upload with this request_id was cancelled"));
    }
    Drop("cancelled by the client", std::move(upload));
    FinishCall(grpc::Status(
        grpc::StatusCode::CANCELLED,
        absl::StrCat("the upload was cancelled after ", bytes_read_.load(),
                     " bytes; nothing was placed and the running version is unchanged")));
  }

  // Worker thread: every byte is written (`status` OK, after OnSenderDone), or a write
  // failed. Checks the whole upload, then posts it.
  void OnUploadWritten(absl::Status status, std::unique_ptr<BundleUpload> upload) {
    if (!status.ok()) return Refuse(status, std::move(upload));
    if (context_->IsCancelled()) return Cancelled(std::move(upload));
    if (digests_) {
      status = upload->SetDigests({digests_->file_sha256().begin(), digests_->file_sha256().end()},
                                  digests_->bundle_digest());
      if (!status.ok()) return Refuse(status, std::move(upload));
    }
    if (status = upload->Finish(); !status.ok()) return Refuse(status, std::move(upload));
    if (!header_has_digests_ && !header_.request_id().empty()) {
      // Now that the digests are known, the request is: the same as a header carrying them.
      for (int i = 0; i < header_.files_size(); ++i) {
        header_.mutable_files(i)->set_sha256(upload->header().files[i].sha256);
      }
      header_.set_bundle_digest(upload->header().bundle_digest);
      if (service_.AnsweredFromLog(context_, this, "PushBundle", header_.request_id(),
                                   FingerprintOf(header_), response_,
                                   [&upload] { upload.reset(); })) {
        return;
      }
      request_id_ = header_.request_id();
    }
    service_.PostDeploy(context_, this, std::shared_ptr<BundleUpload>(std::move(upload)),
                        request_id_, response_);
  }

  PluginHostService& service_;
  grpc::CallbackServerContext* const context_;
  v1::PushBundleResponse* const response_;
  std::recursive_mutex mu_;
  bool finished_ = false;  // guarded by mu_
  v1::PushBundleRequest request_;
  std::string bundle_name_;
  std::atomic<uint64_t> bytes_read_ = 0;  // the worker reads it when it refuses
  bool header_has_digests_ = false;
  v1::PushBundleHeader header_;  // with a request_id and no digests: the request, for the log
  std::optional<v1::PushBundleDigests> digests_;  // set before the worker's end callback
  std::string request_id_;  // admitted as new: the log waits for this upload's outcome
  // Last, so that it is destroyed first: its thread may be finishing a callback into the
  // members above, and the destructor waits for it.
  std::unique_ptr<UploadWorker> worker_;
};

grpc::ServerReadReactor<v1::EchoRequest>* PluginHostService::EchoStream(
    grpc::CallbackServerContext* context, v1::EchoStreamResponse* response) {
  // Counts what arrives, one message at a time, as PushReactor reads.
  class Reactor final : public grpc::ServerReadReactor<v1::EchoRequest> {
   public:
    explicit Reactor(v1::EchoStreamResponse* response) : response_(response) {}
    void Start() { StartRead(&request_); }
    void OnReadDone(bool ok) override {
      if (!ok) return Finish(grpc::Status::OK);
      response_->set_bytes(response_->bytes() + request_.payload().size());
      response_->set_messages(response_->messages() + 1);
      StartRead(&request_);
    }
    void OnDone() override { delete this; }

   private:
    v1::EchoStreamResponse* const response_;
    v1::EchoRequest request_;
  };
  auto* reactor = new Reactor(response);  // deletes itself when done
  if (grpc::Status auth = authorizer_.Check(context); !auth.ok()) {
    reactor->Finish(auth);
  } else {
    reactor->Start();
  }
  return reactor;
}

grpc::ServerReadReactor<v1::PushBundleRequest>* PluginHostService::PushBundle(
    grpc::CallbackServerContext* context, v1::PushBundleResponse* response) {
  auto* reactor = new PushReactor(*this, context, response);  // deletes itself when done
  reactor->Start();
  return reactor;
}

grpc::ServerWriteReactor<v1::PushBundleRequest>* PluginHostService::FetchBundle(
    grpc::CallbackServerContext* context, const v1::FetchBundleRequest* request) {
  if (grpc::Status auth = authorizer_.Check(context); !auth.ok()) {
    return RefusedStream<v1::PushBundleRequest>(auth);
  }
  const std::string& name = request->bundle_name();
  if (absl::Status s = CheckName("bundle_name", name); !s.ok()) {
    return RefuseFetch(context, "", s);
  }
  if (!core::IsSha256Hex(request->bundle_digest())) {
    return RefuseFetch(
        context, name,
        MakeError(ErrorReason::kInvalidArgument,
                  request->bundle_digest().empty()
                      ? "field 'bundle_digest' is empty: name the build wanted by its bundle "
                        "digest (64 lowercase hex digits; `polyplugctl digest DIR` prints it)"
                      : "field 'bundle_digest' must be 64 lowercase hex digits (what "
                        "`polyplugctl digest DIR` prints)"));
  }
  absl::StatusOr<core::BundleInfo> bundle = runtime_.GetBundle(name);
  if (!bundle.ok()) return RefuseFetch(context, name, bundle.status());
  return StartFetch(
      context, FetchSource{name, bundle->dir, request->bundle_digest()}, calls_,
      FetchLimits{FetchChunkBytes(options_.max_message_bytes), options_.max_message_bytes});
}

void PluginHostService::PostDeploy(grpc::CallbackServerContext* context, OperationCall* call,
                                   std::shared_ptr<BundleUpload> upload,
                                   const std::string& request_id,
                                   v1::PushBundleResponse* response) {
  PostOperation(
      context, call, "push",
      [this, upload = std::move(upload), response]() mutable {
        DeployOutcome out = options_.deploy_root->Deploy(runtime_, *upload);
        switch (out.action) {
          case DeployOutcome::Action::kLoaded:
            response->set_outcome(v1::PUSH_OUTCOME_LOADED);
            break;
          case DeployOutcome::Action::kReloaded:
            response->set_outcome(v1::PUSH_OUTCOME_RELOADED);
            break;
          case DeployOutcome::Action::kDependentsFailed:
            response->set_outcome(v1::PUSH_OUTCOME_DEPENDENTS_FAILED);
            break;
          case DeployOutcome::Action::kFailed:
            response->set_outcome(v1::PUSH_OUTCOME_FAILED);
            response->set_reason(ToProtoReason(core::ReasonOf(out.failure)));
            response->set_message(std::string(out.failure.message()));
            break;
        }
        response->set_bundle_name(upload->header().bundle_name);
        response->set_dir(out.dir.string());
        response->set_bundle_digest(upload->header().bundle_digest);
        response->set_bytes_received(upload->bytes_received());
        response->set_reload_id(out.reload_id);
        for (const core::PhaseEvent& e : out.events) ToProto(e, response->add_events());
        for (const std::string& name : out.failed_dependents) response->add_failed_dependents(name);
        if (out.bundle) ToProto(*out.bundle, runtime_, response->mutable_bundle());
        response->set_registry_revision(runtime_.registry().revision());
        response->set_host_epoch(runtime_.host_epoch());
        upload.reset();  // the files replaced (or refused) go before the caller hears the outcome
        return grpc::Status::OK;
      },
      request_id, response);
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
  const BundleListing listing = ListAtJournalPosition(runtime_, options_.recovery);
  for (const core::BundleInfo& b : listing.bundles) ToProto(b, runtime_, response->add_bundles());
  response->set_host_epoch(runtime_.host_epoch());
  response->mutable_cursor()->set_host_epoch(runtime_.host_epoch());
  response->mutable_cursor()->set_seq(listing.seq);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* PluginHostService::ListContracts(grpc::CallbackServerContext* context,
                                                           const v1::ListContractsRequest* request,
                                                           v1::ListContractsResponse* response) {
  auto* reactor = context->DefaultReactor();
  if (Unauthorized(context, reactor)) return reactor;
  uint64_t bundle_id = 0;
  if (!request->bundle().empty()) {
    if (Reject(context, reactor, CheckName("bundle", request->bundle()))) return reactor;
    if (auto b = runtime_.GetBundle(request->bundle()); !b.ok()) {
      Reject(context, reactor, b.status());
      return reactor;
    }
    bundle_id = core::BundleId(request->bundle());
  }
  const BundleListing listing =
      ListAtJournalPosition(runtime_, options_.recovery, /*contracts=*/true, bundle_id);
  for (const core::ContractEntry& e : listing.contracts) {
    ToProto(e, runtime_, response->add_contracts());
  }
  response->mutable_cursor()->set_host_epoch(runtime_.host_epoch());
  response->mutable_cursor()->set_seq(listing.seq);
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
  if (parsed.until_request_done().empty()) return hub_.Open(context, std::move(parsed));
  return OpenOperationStream(context, std::move(parsed));
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* PluginHostService::OpenOperationStream(
    grpc::CallbackServerContext* context, v1::SubscribeReloadPhasesRequest request) {
  const std::string id = request.until_request_done();
  if (request.has_resume_after() || request.include_snapshot() ||
      request.until_terminal_of_reload() != 0 || request.until_next_terminal()) {
    return RefusedStream<grpc::ByteBuffer>(ToGrpcStatus(
        MakeError(ErrorReason::kInvalidArgument,
                  "field 'until_request_done' streams one operation's events; it does not go "
                  "with 'resume_after', 'include_snapshot', 'until_terminal_of_reload' or "
                  "'until_next_terminal'"),
        context));
  }
  absl::Status known = OperationLog::CheckRequestId(id);
  LoggedOperation op;
  if (known.ok() && !operation_log_.Find(id, &op)) {
    known = UnknownOperation(id, runtime_.host_epoch());
  }
  if (!known.ok()) return RefusedStream<grpc::ByteBuffer>(ToGrpcStatus(known, context));
  PhaseHub::OperationStream ends;
  auto* stream = hub_.Open(context, std::move(request), &ends);
  auto end = [ends, epoch = runtime_.host_epoch()](const LoggedOperation& op) {
    v1::Operation proto;
    OperationToProto(op, epoch, &proto);
    ends.End(op.status, EventsOf(proto));
  };
  if (!operation_log_.Await(id, end)) {  // forgotten since Find: it never ran
    ends.End(ToGrpcStatus(UnknownOperation(id, runtime_.host_epoch()), nullptr), {});
  }
  return stream;
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
