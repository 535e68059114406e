#include "host/src/health_service.h"

#include <algorithm>
#include <deque>
#include <utility>

#include "host/src/status_mapping.h"

namespace polyplug::host {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

namespace {

// The wire value of a table status: an unknown name is SERVICE_UNKNOWN.
HealthCheckResponse::ServingStatus ToWire(
    std::optional<HealthCheckResponse::ServingStatus> status) {
  return status.value_or(HealthCheckResponse::SERVICE_UNKNOWN);
}

grpc::Status NameTooLong() {
  return grpc::Status(
      grpc::StatusCode::INVALID_ARGUMENT,
      "service name longer than " + std::to_string(HealthService::kMaxServiceNameBytes) + " bytes");
}

}  // namespace

// One Watch stream. Owned by the service's table from the Watch handler until OnDone;
// SetStatus/Shutdown hold extra references while they queue a change outside the table's
// lock, so Push never runs on a destroyed watcher (and after Finish it does nothing).
//
// mu_ guards all state. StartWrite is called with mu_ held: gRPC 1.51 never runs a reaction
// inline from it (write tags are can_inline=false). Finish is called after mu_ is released,
// once finished_ was set under it, so an OnDone run inline from Finish could not deadlock
// on mu_. Before the handler returns the reactor, StartWrite and Finish go to the reactor's
// backlog, which gRPC guards itself, so Push may run from any thread at any time.
class HealthService::Watcher final : public grpc::ServerWriteReactor<HealthCheckResponse> {
 public:
  Watcher(HealthService* service, std::string name) : service_(service), name_(std::move(name)) {}

  const std::string& name() const { return name_; }

  // Makes `status` the latest state of the stream unless a change with a newer `version`
  // arrived first. With `finish`, the stream ends with OK once everything queued is written.
  void Push(ServingStatus status, uint64_t version, bool finish) {
    std::optional<grpc::Status> finish_now;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (finished_) return;
      if (!pushed_ || version > version_) {
        pushed_ = true;
        version_ = version;
        if (writing_) {
          // Coalesce, but keep a transition visible: at most two statuses wait, each
          // different from the one before it, so SERVING -> NOT_SERVING -> SERVING during a
          // write still shows the NOT_SERVING; beyond two only the newest replaces the last.
          const std::optional<ServingStatus> tail =
              pending_.empty() ? last_written_ : std::optional<ServingStatus>(pending_.back());
          if (status != tail) {
            if (pending_.size() < 2) {
              pending_.push_back(status);
            } else {
              pending_.back() = status;
              if (pending_.front() == status) pending_.pop_back();
            }
          }
        } else if (status != last_written_) {
          StartWriteLocked(status);
        }
      }
      if (finish) {
        finish_wanted_ = true;
        if (!writing_) finish_now = FinishLocked(grpc::Status::OK);
      }
    }
    if (finish_now.has_value()) Finish(*std::move(finish_now));
  }

  void OnWriteDone(bool ok) override {
    std::optional<grpc::Status> finish;
    {
      std::lock_guard<std::mutex> lock(mu_);
      writing_ = false;
      if (!ok) {  // the client went away; OnCancel follows (or already ran)
        pending_.clear();
        finish = FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "write failed"));
      } else if (finished_) {
        // Cancelled while the write was in flight: nothing more to do.
      } else if (!pending_.empty()) {
        const ServingStatus next = pending_.front();
        pending_.pop_front();
        StartWriteLocked(next);
      } else if (finish_wanted_) {
        finish = FinishLocked(grpc::Status::OK);
      }
    }
    if (finish.has_value()) Finish(*std::move(finish));
  }

  // Client cancel, deadline, or server shutdown. Every RPC must still be finished; a write
  // in flight then completes with ok=false.
  void OnCancel() override {
    std::optional<grpc::Status> finish;
    {
      std::lock_guard<std::mutex> lock(mu_);
      pending_.clear();
      finish = FinishLocked(grpc::Status::CANCELLED);
    }
    if (finish.has_value()) Finish(*std::move(finish));
  }

  // Last reaction: leaves the table. The returned reference may be the last one, so this
  // object may be destroyed when `self` goes out of scope; nothing touches it after that.
  // Taking mu_ first orders that destruction after every earlier reaction in a way
  // ThreadSanitizer can see (gRPC's own synchronization is invisible to it on Debian).
  void OnDone() override {
    { std::lock_guard<std::mutex> lock(mu_); }
    std::shared_ptr<Watcher> self = service_->Unregister(name_, this);
  }

 private:
  void StartWriteLocked(ServingStatus status) {
    writing_ = true;
    last_written_ = status;
    response_.set_status(status);
    StartWrite(&response_);
  }

  // Every RPC is finished exactly once, cancelled ones included: returns the status to pass
  // to Finish (after releasing mu_), or nullopt when the stream was finished already.
  std::optional<grpc::Status> FinishLocked(grpc::Status status) {
    if (finished_) return std::nullopt;
    finished_ = true;
    return status;
  }

  HealthService* const service_;
  const std::string name_;
  std::mutex mu_;
  HealthCheckResponse response_;               // the message of the write in flight
  bool writing_ = false;                       // one write in flight at most
  std::optional<ServingStatus> last_written_;  // handed to StartWrite last
  std::deque<ServingStatus> pending_;          // at most 2 unwritten statuses, while writing_
  bool pushed_ = false;
  uint64_t version_ = 0;  // of the newest change applied
  bool finish_wanted_ = false;
  bool finished_ = false;
};

// "" (the host) is known from the start and NOT_SERVING until the host sets it, so probes
// see "starting" rather than "unknown" while bundles load.
HealthService::HealthService() { entries_[""].status = HealthCheckResponse::NOT_SERVING; }

// Taking mu_ orders destruction after the last OnDone's Unregister in a way ThreadSanitizer
// can see; the real ordering comes from grpc::Server::Shutdown (see the header).
HealthService::~HealthService() { std::lock_guard<std::mutex> lock(mu_); }

void HealthService::SetStatus(const std::string& service, bool serving) {
  Update(service, serving ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING);
}

void HealthService::Clear(const std::string& service) { Update(service, std::nullopt); }

void HealthService::Update(const std::string& service, std::optional<ServingStatus> status) {
  std::vector<std::shared_ptr<Watcher>> watchers;
  uint64_t version = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutdown_ && status.has_value()) status = HealthCheckResponse::NOT_SERVING;
    auto it = entries_.find(service);
    if (it == entries_.end()) {
      if (!status.has_value()) return;  // unknown already
      it = entries_.emplace(service, Entry{}).first;
    }
    Entry& entry = it->second;
    if (entry.status == status) return;
    entry.status = status;
    version = ++version_;
    watchers = entry.watchers;
    if (!entry.status.has_value() && entry.watchers.empty()) entries_.erase(it);
  }
  // Outside the lock: a slow or large set of watchers never delays Check or other setters.
  for (const std::shared_ptr<Watcher>& watcher : watchers) {
    watcher->Push(ToWire(status), version, /*finish=*/false);
  }
}

void HealthService::Shutdown() {
  std::vector<std::pair<std::shared_ptr<Watcher>, ServingStatus>> finals;
  uint64_t version = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutdown_) return;
    shutdown_ = true;
    version = ++version_;
    for (auto& [name, entry] : entries_) {
      if (entry.status.has_value()) entry.status = HealthCheckResponse::NOT_SERVING;
      for (const std::shared_ptr<Watcher>& watcher : entry.watchers) {
        finals.emplace_back(watcher, ToWire(entry.status));
      }
    }
  }
  for (const auto& [watcher, status] : finals) watcher->Push(status, version, /*finish=*/true);
}

size_t HealthService::watch_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return watch_count_;
}

bool HealthService::WaitForWatchCount(size_t count, std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(mu_);
  return watch_count_changed_.wait_for(lock, timeout, [&] { return watch_count_ == count; });
}

grpc::ServerUnaryReactor* HealthService::Check(grpc::CallbackServerContext* context,
                                               const HealthCheckRequest* request,
                                               HealthCheckResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (request->service().size() > kMaxServiceNameBytes) {
    reactor->Finish(NameTooLong());
    return reactor;
  }
  std::optional<ServingStatus> status;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(request->service());
    if (it != entries_.end()) status = it->second.status;
  }
  if (!status.has_value()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                 "unknown service \"" + request->service() + "\""));
    return reactor;
  }
  response->set_status(*status);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<HealthCheckResponse>* HealthService::Watch(
    grpc::CallbackServerContext* /*context*/, const HealthCheckRequest* request) {
  if (request->service().size() > kMaxServiceNameBytes)
    return RefusedStream<HealthCheckResponse>(NameTooLong());
  auto watcher = std::make_shared<Watcher>(this, request->service());
  ServingStatus status = HealthCheckResponse::SERVICE_UNKNOWN;
  uint64_t version = 0;
  bool finish = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Entry& entry = entries_[watcher->name()];
    entry.watchers.push_back(watcher);
    ++watch_count_;
    status = ToWire(entry.status);
    version = version_;
    finish = shutdown_;
    watch_count_changed_.notify_all();
  }
  // A change made after the registration above carries a newer version, so this initial
  // status cannot overwrite it even if it is pushed later.
  watcher->Push(status, version, finish);
  return watcher.get();  // the table keeps it alive until OnDone
}

std::shared_ptr<HealthService::Watcher> HealthService::Unregister(const std::string& service,
                                                                  const Watcher* watcher) {
  std::shared_ptr<Watcher> removed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(service);
    if (it != entries_.end()) {
      std::vector<std::shared_ptr<Watcher>>& watchers = it->second.watchers;
      auto found = std::find_if(watchers.begin(), watchers.end(),
                                [&](const auto& w) { return w.get() == watcher; });
      if (found != watchers.end()) {
        removed = std::move(*found);
        *found = std::move(watchers.back());
        watchers.pop_back();
        --watch_count_;
      }
      if (!it->second.status.has_value() && watchers.empty()) entries_.erase(it);
    }
    // Under mu_, so that ~HealthService (which takes mu_) is ordered after it.
    watch_count_changed_.notify_all();
  }
  return removed;
}

}  // namespace polyplug::host
