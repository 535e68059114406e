#include "host/src/session_stream.h"

#include <atomic>
#include <string>

#include "host/src/status_mapping.h"
#include "wire/wire.h"

namespace polyplug::host {
namespace {

class SessionStream : public grpc::ServerWriteReactor<v1::SessionEvent> {
 public:
  SessionStream(RemoteInstances& instances, OperationWorker& calls, uint64_t session,
                v1::SessionEvent first)
      : instances_(instances), calls_(calls), session_(session), first_(std::move(first)) {
    StartWrite(&first_);
  }

  void OnWriteDone(bool ok) override {
    // The id is out; the stream now only waits for its end (OnCancel).
    if (!ok) FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "session stream broken"));
  }

  void OnCancel() override {
    FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "session closed"));
  }

  void OnDone() override {
    RemoteInstances* instances = &instances_;
    const uint64_t session = session_;
    // Destroying instances runs bundle code: not on this gRPC thread. At shutdown the
    // server's teardown destroys whatever is left.
    calls_.Post([instances, session] { instances->CloseSession(session); }, [] {});
    delete this;
  }

 private:
  // Finish may run OnDone (which deletes this) before it returns: nothing after it.
  void FinishOnce(grpc::Status status) {
    if (!finished_.exchange(true)) Finish(std::move(status));
  }

  RemoteInstances& instances_;
  OperationWorker& calls_;
  const uint64_t session_;
  v1::SessionEvent first_;
  std::atomic<bool> finished_{false};
};

}  // namespace

grpc::ServerWriteReactor<v1::SessionEvent>* StartSessionStream(grpc::CallbackServerContext* context,
                                                               RemoteInstances& instances,
                                                               OperationWorker& calls,
                                                               uint64_t host_epoch) {
  absl::StatusOr<uint64_t> session = instances.OpenSession();
  if (!session.ok())
    return RefusedStream<v1::SessionEvent>(ToGrpcStatus(session.status(), context));
  v1::SessionEvent first;
  first.set_session_id(*session);
  first.set_host_epoch(host_epoch);
  *first.mutable_sessionless_idle_timeout() =
      wire::ToProto(instances.options().sessionless_idle_timeout);
  return new SessionStream(instances, calls, *session, std::move(first));
}

}  // namespace polyplug::host
