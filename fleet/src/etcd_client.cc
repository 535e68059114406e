#include "fleet/src/etcd_client.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "etcdserverpb/rpc.grpc.pb.h"

namespace polyplug::fleet {
namespace {

namespace pb = etcdserverpb;

// A member that is down answers UNAVAILABLE at once (connection refused); one without a
// leader, or that lost it mid-call, answers UNAVAILABLE too ("etcdserver: no leader",
// "leader changed"). A member that hangs runs out its attempt's deadline. All three are
// worth trying the next member for; anything else is the request's own fault.
bool WorthAnotherMember(const grpc::Status& status) {
  return status.error_code() == grpc::StatusCode::UNAVAILABLE ||
         status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ||
         (status.error_code() == grpc::StatusCode::UNKNOWN &&
          absl::StrContains(status.error_message(), "leader"));
}

absl::Status FromGrpc(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

KeyValue FromProto(const mvccpb::KeyValue& kv) {
  return KeyValue{kv.key(),          kv.value(),   kv.create_revision(),
                  kv.mod_revision(), kv.version(), kv.lease()};
}

std::chrono::system_clock::time_point ToChrono(absl::Time t) { return absl::ToChronoTime(t); }

// A transaction whose success ops run only if `key`'s mod_revision is `expected` (0: only
// if the key does not exist).
pb::TxnRequest GuardedByModRevision(absl::string_view key, int64_t expected) {
  pb::TxnRequest request;
  pb::Compare* guard = request.add_compare();
  guard->set_key(std::string(key));
  guard->set_target(pb::Compare::MOD);
  guard->set_result(pb::Compare::EQUAL);
  guard->set_mod_revision(expected);
  return request;
}

}  // namespace

class EtcdClient::Impl : public std::enable_shared_from_this<Impl> {
 public:
  struct Member {
    std::string endpoint;
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<pb::KV::Stub> kv;
    std::unique_ptr<pb::Watch::Stub> watch;
    std::unique_ptr<pb::Lease::Stub> lease;
    std::unique_ptr<pb::Maintenance::Stub> maintenance;
  };

  EtcdOptions options;
  std::vector<Member> members;
  std::string label;
  // The member the last call succeeded on: the next call starts there.
  std::atomic<size_t> preferred{0};
  std::mutex shutdown_mu;
  std::condition_variable shutdown_cv;
  bool shut_down = false;  // guarded by shutdown_mu

  bool IsShutDown() {
    std::lock_guard<std::mutex> lock(shutdown_mu);
    return shut_down;
  }

  // Runs `attempt(member, context)` on one member after another, from the preferred one,
  // until one answers or `call_timeout` passes. `attempt` returns the gRPC status of its
  // call; a status worth another member moves on.
  template <typename Attempt>
  absl::Status Call(absl::string_view what, Attempt attempt) {
    const absl::Time deadline = absl::Now() + options.call_timeout;
    grpc::Status last;
    std::vector<std::string> failures;
    size_t index = preferred.load(std::memory_order_relaxed);
    for (int round = 0;; ++round) {
      for (size_t n = 0; n < members.size(); ++n, index = (index + 1) % members.size()) {
        const absl::Time now = absl::Now();
        if (now >= deadline) return Unreachable(what, failures);
        if (IsShutDown()) return absl::CancelledError(absl::StrCat("etcd ", what, ": shut down"));
        grpc::ClientContext context;
        context.set_deadline(ToChrono(std::min(deadline, now + options.attempt_timeout)));
        last = attempt(members[index], context);
        if (last.ok()) {
          preferred.store(index, std::memory_order_relaxed);
          return absl::OkStatus();
        }
        if (!WorthAnotherMember(last)) {
          return absl::Status(static_cast<absl::StatusCode>(last.error_code()),
                              absl::StrCat("etcd ", what, " at ", members[index].endpoint, ": ",
                                           last.error_message()));
        }
        if (round == 0) {
          failures.push_back(absl::StrCat(members[index].endpoint, ": ", last.error_message()));
        }
      }
      // Every member failed once: wait a little (a leader election takes about a second),
      // then go round again until the deadline.
      const absl::Duration pause =
          std::min(absl::Milliseconds(50 * (1 << std::min(round, 4))), deadline - absl::Now());
      if (pause > absl::ZeroDuration()) {
        std::unique_lock<std::mutex> lock(shutdown_mu);
        shutdown_cv.wait_for(lock, absl::ToChronoNanoseconds(pause), [&] { return shut_down; });
      }
    }
  }

  absl::Status Unreachable(absl::string_view what, const std::vector<std::string>& failures) {
    return absl::UnavailableError(
        absl::StrCat("etcd unreachable at ", label, " (", what, " for ",
                     absl::FormatDuration(options.call_timeout),
                     "): ", failures.empty() ? "no answer" : absl::StrJoin(failures, "; ")));
  }

  absl::StatusOr<TxnResult> Txn(absl::string_view what, const pb::TxnRequest& request) {
    pb::TxnResponse response;
    absl::Status s = Call(
        what, [&](Member& m, grpc::ClientContext& c) { return m.kv->Txn(&c, request, &response); });
    if (!s.ok()) return s;
    return TxnResult{response.succeeded(), response.header().revision()};
  }

  absl::StatusOr<RangeResult> Range(const pb::RangeRequest& request) {
    pb::RangeResponse response;
    absl::Status s = Call("read", [&](Member& m, grpc::ClientContext& c) {
      return m.kv->Range(&c, request, &response);
    });
    if (!s.ok()) return s;
    RangeResult result;
    result.revision = response.header().revision();
    for (const mvccpb::KeyValue& kv : response.kvs()) result.kvs.push_back(FromProto(kv));
    return result;
  }
};

namespace {

// Waits on `cv` for `timeout` or until `stop` is set; true when stopped.
bool WaitOrStop(std::mutex& mu, std::condition_variable& cv, const bool& stop,
                absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu);
  return cv.wait_for(lock, absl::ToChronoNanoseconds(timeout), [&] { return stop; });
}

class WatchImpl final : public EtcdWatch {
 public:
  WatchImpl(std::shared_ptr<EtcdClient::Impl> client, std::string prefix, int64_t start_revision,
            WatchHandler handler)
      : client_(std::move(client)),
        prefix_(std::move(prefix)),
        next_revision_(start_revision),
        handler_(std::move(handler)) {
    thread_ = std::thread([this] { Run(); });
  }

  ~WatchImpl() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      if (context_ != nullptr) context_->TryCancel();
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  void Run() {
    size_t index = client_->preferred.load(std::memory_order_relaxed);
    int failures = 0;
    while (true) {
      grpc::ClientContext context;
      // Ends the stream when the member loses its leader (etcd's "require leader"): a
      // member cut off from the others would otherwise keep the watch open and silent.
      context.AddMetadata("hasleader", "true");
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stop_) return;
        context_ = &context;
      }
      const absl::Status status = Stream(client_->members[index], context);
      {
        std::lock_guard<std::mutex> lock(mu_);
        context_ = nullptr;
        if (stop_) return;
      }
      if (handler_.on_disconnected) handler_.on_disconnected(status);
      index = (index + 1) % client_->members.size();
      ++failures;
      const absl::Duration pause = absl::Milliseconds(std::min(1000, 25 << std::min(failures, 6)));
      if (WaitOrStop(mu_, cv_, stop_, pause)) return;
      if (delivered_) failures = 0, delivered_ = false;
    }
  }

  // One stream on one member, until it breaks.
  absl::Status Stream(EtcdClient::Impl::Member& member, grpc::ClientContext& context) {
    auto stream = member.watch->Watch(&context);
    pb::WatchRequest request;
    pb::WatchCreateRequest* create = request.mutable_create_request();
    create->set_key(prefix_);
    create->set_range_end(EtcdClient::PrefixEnd(prefix_));
    create->set_start_revision(next_revision_);
    create->set_progress_notify(true);
    if (!stream->Write(request)) return FromGrpc(stream->Finish());
    pb::WatchResponse response;
    std::vector<WatchEvent> events;
    while (stream->Read(&response)) {
      if (response.compact_revision() > 0) {
        // Changes between next_revision_ and the compaction are gone: the handler re-reads.
        const int64_t listed = handler_.on_compacted();
        next_revision_ = listed + 1;
        delivered_ = true;
        context.TryCancel();
        break;
      }
      if (response.canceled()) {
        context.TryCancel();
        break;
      }
      if (response.events_size() == 0) {
        // A progress notification: nothing was missed up to its revision.
        if (!response.created() && response.header().revision() >= next_revision_) {
          next_revision_ = response.header().revision() + 1;
        }
        continue;
      }
      events.clear();
      for (const mvccpb::Event& e : response.events()) {
        events.push_back(WatchEvent{
            e.type() == mvccpb::Event::DELETE ? WatchEvent::Type::kDelete : WatchEvent::Type::kPut,
            FromProto(e.kv())});
      }
      const int64_t last = events.back().kv.mod_revision;
      handler_.on_events(events, last);
      next_revision_ = last + 1;
      delivered_ = true;
    }
    return FromGrpc(stream->Finish());
  }

  const std::shared_ptr<EtcdClient::Impl> client_;
  const std::string prefix_;
  int64_t next_revision_;   // the watch thread's
  bool delivered_ = false;  // the watch thread's: a stream delivered something
  const WatchHandler handler_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;                       // guarded by mu_
  grpc::ClientContext* context_ = nullptr;  // guarded by mu_: the open stream's
  std::thread thread_;
};

class LeaseImpl final : public EtcdLease {
 public:
  LeaseImpl(std::shared_ptr<EtcdClient::Impl> client, int64_t id, absl::Duration ttl,
            std::function<void()> on_lost)
      : client_(std::move(client)), id_(id), ttl_(ttl), on_lost_(std::move(on_lost)) {
    thread_ = std::thread([this] { Run(); });
  }

  ~LeaseImpl() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
    if (alive_.load()) {
      // Best effort, briefly: an unrevoked lease expires after its TTL anyway.
      pb::LeaseRevokeRequest request;
      request.set_id(id_);
      for (auto& member : client_->members) {
        grpc::ClientContext context;
        context.set_deadline(ToChrono(absl::Now() + absl::Milliseconds(500)));
        pb::LeaseRevokeResponse response;
        const grpc::Status s = member.lease->LeaseRevoke(&context, request, &response);
        if (s.ok() || !WorthAnotherMember(s)) break;
      }
    }
  }

  int64_t id() const override { return id_; }
  bool alive() const override { return alive_.load(); }

 private:
  void Run() {
    absl::Time renewed = absl::Now();
    while (!WaitOrStop(mu_, cv_, stop_, ttl_ / 3)) {
      pb::LeaseKeepAliveResponse response;
      const absl::Status s = client_->Call("lease keep-alive", [&](auto& m, auto& c) {
        auto stream = m.lease->LeaseKeepAlive(&c);
        pb::LeaseKeepAliveRequest request;
        request.set_id(id_);
        if (stream->Write(request) && stream->Read(&response)) {
          stream->WritesDone();
          c.TryCancel();
          (void)stream->Finish();
          return grpc::Status::OK;
        }
        return stream->Finish();
      });
      if (s.ok() && response.ttl() > 0) {
        renewed = absl::Now();
        continue;
      }
      // Gone for sure (etcd says so), or unrenewed for longer than the TTL: etcd has
      // deleted its keys by now.
      if ((s.ok() && response.ttl() <= 0) || absl::Now() - renewed > ttl_) {
        alive_.store(false);
        if (on_lost_) on_lost_();
        return;
      }
    }
  }

  const std::shared_ptr<EtcdClient::Impl> client_;
  const int64_t id_;
  const absl::Duration ttl_;
  const std::function<void()> on_lost_;
  std::atomic<bool> alive_{true};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<EtcdClient>> EtcdClient::Create(EtcdOptions options) {
  if (options.endpoints.empty()) {
    return absl::InvalidArgumentError("--etcd: no endpoint given (HOST:PORT, comma-separated)");
  }
  auto impl = std::make_shared<Impl>();
  std::vector<std::string> names;
  for (std::string endpoint : options.endpoints) {
    if (absl::StartsWith(endpoint, "https://")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--etcd ", endpoint, ": TLS to etcd is not supported; use http:// on a trusted network"));
    }
    if (absl::StartsWith(endpoint, "http://")) endpoint = endpoint.substr(7);
    while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
    const size_t colon = endpoint.rfind(':');
    uint32_t port = 0;
    if (colon == std::string::npos || colon == 0 ||
        !absl::SimpleAtoi(endpoint.substr(colon + 1), &port) || port == 0 || port > 65535) {
      return absl::InvalidArgumentError(
          absl::StrCat("--etcd ", endpoint, ": not HOST:PORT (e.g. 127.0.0.1:2379)"));
    }
    grpc::ChannelArguments args;
    // A member that restarts is tried again soon; the defaults wait up to two minutes.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    Impl::Member member;
    member.endpoint = endpoint;
    member.channel = grpc::CreateCustomChannel(endpoint, grpc::InsecureChannelCredentials(), args);
    member.kv = pb::KV::NewStub(member.channel);
    member.watch = pb::Watch::NewStub(member.channel);
    member.lease = pb::Lease::NewStub(member.channel);
    member.maintenance = pb::Maintenance::NewStub(member.channel);
    impl->members.push_back(std::move(member));
    names.push_back(endpoint);
  }
  impl->label = absl::StrJoin(names, ",");
  // Each client starts on a member of its own choosing, so that a fleet's hosts spread
  // their watches and keep-alives over the cluster instead of all using the first member.
  if (options.random_first_member) {
    impl->preferred = std::random_device{}() % impl->members.size();
  }
  impl->options = std::move(options);
  return std::unique_ptr<EtcdClient>(new EtcdClient(std::move(impl)));
}

EtcdClient::EtcdClient(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
EtcdClient::~EtcdClient() = default;

const std::string& EtcdClient::endpoints_label() const { return impl_->label; }

void EtcdClient::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(impl_->shutdown_mu);
    impl_->shut_down = true;
  }
  impl_->shutdown_cv.notify_all();
}

std::string EtcdClient::PrefixEnd(absl::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    if (static_cast<unsigned char>(end.back()) < 0xff) {
      end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

absl::Status EtcdClient::CheckReachable() {
  return impl_->Call("status", [](Impl::Member& m, grpc::ClientContext& c) {
    pb::StatusResponse response;
    grpc::Status s = m.maintenance->Status(&c, pb::StatusRequest(), &response);
    if (s.ok() && response.leader() == 0) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the member has no leader");
    }
    return s;
  });
}

absl::StatusOr<RangeResult> EtcdClient::Get(absl::string_view key) {
  pb::RangeRequest request;
  request.set_key(std::string(key));
  return impl_->Range(request);
}

absl::StatusOr<RangeResult> EtcdClient::GetPrefix(absl::string_view prefix, bool serializable) {
  pb::RangeRequest request;
  request.set_key(std::string(prefix));
  request.set_range_end(PrefixEnd(prefix));
  request.set_serializable(serializable);
  return impl_->Range(request);
}

absl::StatusOr<int64_t> EtcdClient::Put(absl::string_view key, absl::string_view value,
                                        int64_t lease) {
  pb::PutRequest request;
  request.set_key(std::string(key));
  request.set_value(std::string(value));
  request.set_lease(lease);
  pb::PutResponse response;
  absl::Status s = impl_->Call("write", [&](Impl::Member& m, grpc::ClientContext& c) {
    return m.kv->Put(&c, request, &response);
  });
  if (!s.ok()) return s;
  return response.header().revision();
}

absl::StatusOr<int64_t> EtcdClient::PutAll(
    const std::vector<std::pair<std::string, std::string>>& kvs, int64_t lease) {
  pb::TxnRequest request;
  for (const auto& [key, value] : kvs) {
    pb::PutRequest* put = request.add_success()->mutable_request_put();
    put->set_key(key);
    put->set_value(value);
    put->set_lease(lease);
  }
  auto result = impl_->Txn("write", request);
  if (!result.ok()) return result.status();
  return result->revision;
}

absl::StatusOr<TxnResult> EtcdClient::PutIfModRevision(absl::string_view key,
                                                       absl::string_view value,
                                                       int64_t expected_mod_revision,
                                                       int64_t lease) {
  pb::TxnRequest request = GuardedByModRevision(key, expected_mod_revision);
  pb::PutRequest* put = request.add_success()->mutable_request_put();
  put->set_key(std::string(key));
  put->set_value(std::string(value));
  put->set_lease(lease);
  return impl_->Txn("guarded write", request);
}

absl::StatusOr<TxnResult> EtcdClient::DeleteIfModRevision(absl::string_view key,
                                                          int64_t expected_mod_revision) {
  pb::TxnRequest request = GuardedByModRevision(key, expected_mod_revision);
  request.add_success()->mutable_request_delete_range()->set_key(std::string(key));
  return impl_->Txn("guarded delete", request);
}

absl::StatusOr<int64_t> EtcdClient::Delete(absl::string_view key) {
  pb::DeleteRangeRequest request;
  request.set_key(std::string(key));
  pb::DeleteRangeResponse response;
  absl::Status s = impl_->Call("delete", [&](Impl::Member& m, grpc::ClientContext& c) {
    return m.kv->DeleteRange(&c, request, &response);
  });
  if (!s.ok()) return s;
  return response.deleted();
}

absl::StatusOr<std::unique_ptr<EtcdLease>> EtcdClient::GrantLease(absl::Duration ttl,
                                                                  std::function<void()> on_lost) {
  const int64_t seconds = std::max<int64_t>(1, absl::ToInt64Seconds(ttl));
  pb::LeaseGrantRequest request;
  request.set_ttl(seconds);
  pb::LeaseGrantResponse response;
  absl::Status s = impl_->Call("lease grant", [&](Impl::Member& m, grpc::ClientContext& c) {
    return m.lease->LeaseGrant(&c, request, &response);
  });
  if (!s.ok()) return s;
  if (!response.error().empty()) {
    return absl::UnavailableError(absl::StrCat("etcd lease grant: ", response.error()));
  }
  return std::unique_ptr<EtcdLease>(
      new LeaseImpl(impl_, response.id(), absl::Seconds(seconds), std::move(on_lost)));
}

std::unique_ptr<EtcdWatch> EtcdClient::WatchPrefix(std::string prefix, int64_t start_revision,
                                                   WatchHandler handler) {
  return std::make_unique<WatchImpl>(impl_, std::move(prefix), start_revision, std::move(handler));
}

}  // namespace polyplug::fleet
