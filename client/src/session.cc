#include "src/session.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "src/connection.h"

namespace polyplug::client::internal {
namespace v1 = host::v1;

// One OpenSession call. Its first message carries the id; a second read then stays
// pending until the stream ends, which is how the end is noticed.
class Session::Stream : public grpc::ClientReadReactor<v1::SessionEvent> {
 public:
  void Start(const Connection& connection, const CallOptions& call) {
    connection.PrepareStream(context_);
    context_.set_wait_for_ready(call.wait_for_ready);
    connection.stub->async()->OpenSession(&context_, &request_, this);
    StartRead(&event_);
    StartCall();
  }

  // The session id once the host sent it; an error once the stream ended first or the
  // deadline passed.
  absl::StatusOr<uint64_t> WaitForId(const Connection& connection, absl::Time deadline,
                                     absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    changed_.wait_until(lock, absl::ToChronoTime(deadline), [&] { return id_ != 0 || done_; });
    if (id_ != 0 && !done_) return id_;
    if (done_) {
      if (status_.ok()) return absl::UnavailableError("the host ended the session at once");
      return connection.ToStatus(status_, context_, timeout);
    }
    return absl::DeadlineExceededError(absl::StrCat("no session opened by ", connection.target,
                                                    " within ", absl::FormatDuration(timeout)));
  }

  bool ended() {
    std::lock_guard<std::mutex> lock(mu_);
    return done_;
  }

  uint64_t id() {
    std::lock_guard<std::mutex> lock(mu_);
    return id_;
  }

  // Cancels the stream and waits until gRPC is done with it.
  void Stop() {
    context_.TryCancel();
    std::unique_lock<std::mutex> lock(mu_);
    changed_.wait(lock, [&] { return done_; });
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream ended: OnDone follows
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (id_ == 0) id_ = event_.session_id();
    }
    changed_.notify_all();
    StartRead(&event_);
  }

  void OnDone(const grpc::Status& status) override {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    status_ = status;
    // Notified under the lock: Stop()'s caller may destroy this as soon as it sees done_.
    changed_.notify_all();
  }

 private:
  grpc::ClientContext context_;
  v1::OpenSessionRequest request_;
  v1::SessionEvent event_;
  std::mutex mu_;
  std::condition_variable changed_;
  uint64_t id_ = 0;      // guarded by mu_
  bool done_ = false;    // guarded by mu_
  grpc::Status status_;  // guarded by mu_
};

Session::Session(const Connection& connection) : connection_(connection) {}

Session::~Session() {
  std::shared_ptr<Stream> stream;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stream = std::move(stream_);
  }
  if (stream) stream->Stop();
}

absl::StatusOr<uint64_t> Session::Id(const CallOptions& call) {
  const absl::Duration timeout =
      call.timeout > absl::ZeroDuration() ? call.timeout : connection_.options.call_timeout;
  std::shared_ptr<Stream> stream;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stream_ || stream_->ended()) {
      stream_ = std::make_shared<Stream>();
      stream_->Start(connection_, call);
    }
    stream = stream_;
  }
  return stream->WaitForId(connection_, absl::Now() + timeout, timeout);
}

void Session::Forget(uint64_t id) {
  std::shared_ptr<Stream> stale;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stream_ || stream_->id() != id) return;
    stale = std::move(stream_);
  }
  stale->Stop();
}

absl::StatusOr<v1::InstanceRef> CreateLeasedInstance(const Connection& connection,
                                                     v1::CreateInstanceRequest request,
                                                     const CallOptions& call) {
  for (int attempt = 0;; ++attempt) {
    absl::StatusOr<uint64_t> session = connection.session->Id(call);
    if (!session.ok()) return session.status();
    request.set_session_id(*session);
    absl::StatusOr<v1::InstanceRef> made = CallUnary<v1::InstanceRef>(
        connection, &v1::PluginHost::Stub::CreateInstance, request, call);
    if (made.ok() || attempt == 1 ||
        FailureReasonOf(made.status()) != v1::FAILURE_REASON_LEASE_EXPIRED) {
      return made;
    }
    connection.session->Forget(*session);  // it ended on the host meanwhile
  }
}

}  // namespace polyplug::client::internal
