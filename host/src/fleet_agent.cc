#include "host/src/fleet_agent.h"

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "host/src/bundle_upload.h"
#include "host/src/deploy_root.h"
#include "host/src/operation_worker.h"
#include "polyplug/core/bundle_signature.h"
#include "polyplug/core/error.h"
#include "polyplug/core/runtime.h"
#include "polyplug/host/v1/host.grpc.pb.h"

namespace polyplug::host {
namespace {

namespace v1 = ::polyplug::host::v1;
namespace fv1 = ::polyplug::fleet::v1;
using core::ErrorReason;
using core::MakeError;

std::string Short(const std::string& digest) { return digest.substr(0, 12); }

// The fleet-level reason of a failed apply: the core's token when the error has one.
std::string ReasonTokenOf(const absl::Status& status, absl::string_view otherwise) {
  const ErrorReason reason = core::ReasonOf(status);
  if (reason == ErrorReason::kUnspecified) return std::string(otherwise);
  return std::string(core::ReasonToken(reason));
}

}  // namespace

absl::StatusOr<std::unique_ptr<FleetAgent>> FleetAgent::Create(core::Runtime& runtime,
                                                               OperationWorker& worker,
                                                               DeployRoot& deploy_root,
                                                               FleetAgentOptions options) {
  if (absl::Status s = fleet::FleetKeys::CheckName("--fleet", options.fleet); !s.ok()) {
    return MakeError(ErrorReason::kInvalidArgument, s.message());
  }
  if (!options.host_id.empty()) {
    if (absl::Status s = fleet::FleetKeys::CheckName("--fleet-host-id", options.host_id); !s.ok()) {
      return MakeError(ErrorReason::kInvalidArgument, s.message());
    }
  }
  if (options.lease_ttl < absl::Seconds(2)) {
    return MakeError(ErrorReason::kInvalidArgument, "--fleet-lease-ttl must be at least 2s");
  }
  fleet::EtcdOptions etcd_options;
  etcd_options.endpoints = options.etcd_endpoints;
  // A call may wait through a leader election, but not for longer than the lease lives.
  etcd_options.call_timeout = std::min(absl::Seconds(5), options.lease_ttl / 2);
  auto etcd = fleet::EtcdClient::Create(std::move(etcd_options));
  if (!etcd.ok()) return MakeError(ErrorReason::kInvalidArgument, etcd.status().message());
  return std::unique_ptr<FleetAgent>(
      new FleetAgent(runtime, worker, deploy_root, std::move(options), *std::move(etcd)));
}

FleetAgent::FleetAgent(core::Runtime& runtime, OperationWorker& worker, DeployRoot& deploy_root,
                       FleetAgentOptions options, std::unique_ptr<fleet::EtcdClient> etcd)
    : runtime_(runtime),
      worker_(worker),
      deploy_root_(deploy_root),
      options_(std::move(options)),
      keys_(options_.fleet),
      etcd_(std::move(etcd)) {}

void FleetAgent::Join(const std::vector<std::string>& listen_addresses) {
  if (options_.address.empty() && !listen_addresses.empty()) {
    options_.address = listen_addresses.front();
    for (const std::string& address : listen_addresses) {
      if (!absl::StartsWith(address, "unix:")) {
        options_.address = address;
        break;
      }
    }
  }
  if (options_.host_id.empty()) {
    char name[256] = {};
    if (gethostname(name, sizeof(name) - 1) != 0) std::snprintf(name, sizeof(name), "host");
    std::string id = absl::StrCat(name, "-", options_.address);
    for (char& c : id) {
      if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_') c = '-';
    }
    options_.host_id = id.substr(0, 128);
  }
  Log(absl::StrCat("joining fleet ", options_.fleet, " as ", options_.host_id, " (address ",
                   options_.address, ") through etcd at ", etcd_->endpoints_label()));
  thread_ = std::thread([this] { Run(); });
}

FleetAgent::~FleetAgent() { Stop(); }

void FleetAgent::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
    if (fetching_ != nullptr) fetching_->TryCancel();
    if (deploy_wait_ != nullptr) {
      std::lock_guard<std::mutex> wait_lock(deploy_wait_->mu);
      deploy_wait_->stop = true;
      deploy_wait_->cv.notify_all();
    }
  }
  cv_.notify_all();
  etcd_->Shutdown();  // a call in progress (etcd down, say) ends within an attempt
  if (thread_.joinable()) thread_.join();
  watch_.reset();
  if (lease_ != nullptr) {
    lease_.reset();  // revoked: the host record and statuses go now, not at expiry
    Log("left the fleet");
  }
}

void FleetAgent::OnPhase(const core::PhaseEvent& event) {
  if (event.phase == core::Phase::kPreparing) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    host_record_stale_ = true;
    wake_ = true;
  }
  cv_.notify_all();
}

void FleetAgent::Log(const std::string& line) const {
  if (options_.log) options_.log(line);
}

bool FleetAgent::Wait(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [&] { return stopping_ || wake_; });
  wake_ = false;
  return !stopping_;
}

void FleetAgent::Run() {
  absl::Duration backoff = absl::Milliseconds(200);
  while (true) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
    }
    const bool registered = Register();
    if (registered) {
      backoff = absl::Milliseconds(200);
      Reconcile();
    }
    // Woken by a change of the desired state, a phase, a lost lease; else look again
    // after a while (a status write that failed is retried then).
    if (!Wait(registered ? options_.lease_ttl / 3 : backoff)) return;
    if (!registered) backoff = std::min(backoff * 2, absl::Seconds(5));
  }
}

bool FleetAgent::Register() {
  auto fail = [this](const absl::Status& status) {
    const std::string error(status.message());
    if (error != last_error_) {
      Log(absl::StrCat(error, "; the host serves its local bundles and keeps trying"));
      last_error_ = error;
    }
    return false;
  };
  if (lease_ == nullptr || !lease_->alive()) {
    if (lease_ != nullptr) Log("the lease expired (etcd was unreachable for too long); again");
    lease_.reset();
    auto lease = etcd_->GrantLease(options_.lease_ttl, [this] {
      {
        std::lock_guard<std::mutex> lock(mu_);
        wake_ = true;
      }
      cv_.notify_all();
    });
    if (!lease.ok()) return fail(lease.status());
    lease_ = *std::move(lease);
    {
      std::lock_guard<std::mutex> lock(mu_);
      host_record_stale_ = true;
    }
    for (auto& [bundle, status] : statuses_) status.clear_host_id();  // marks them unwritten
  }
  bool stale;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stale = host_record_stale_;
    host_record_stale_ = false;
  }
  if (stale) {
    if (absl::Status s = PublishHostRecord(); !s.ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      host_record_stale_ = true;
      return fail(s);
    }
  }
  // Statuses written under an earlier lease, or whose write failed.
  for (auto& [bundle, status] : statuses_) {
    if (!status.host_id().empty()) continue;
    status.set_host_id(options_.host_id);
    auto put = etcd_->Put(keys_.Status(options_.host_id, bundle), fleet::RecordToJson(status),
                          lease_->id());
    if (!put.ok()) {
      status.clear_host_id();
      return fail(put.status());
    }
  }
  if (watch_ == nullptr) {
    const int64_t revision = ListDesired();
    if (revision == 0) return false;
    fleet::WatchHandler handler;
    handler.on_events = [this](const std::vector<fleet::WatchEvent>& events, int64_t) {
      OnDesiredEvents(events);
    };
    handler.on_compacted = [this] {
      Log("the desired state's history was compacted while disconnected; reading it again");
      return ListDesired();
    };
    watch_ = etcd_->WatchPrefix(keys_.DesiredPrefix(), revision + 1, std::move(handler));
  }
  if (!last_error_.empty()) {
    Log(absl::StrCat("registered in etcd at ", etcd_->endpoints_label(), " (lease ",
                     absl::Hex(lease_->id()), ")"));
    last_error_.clear();
  }
  return true;
}

int64_t FleetAgent::ListDesired() {
  auto listed = etcd_->GetPrefix(keys_.DesiredPrefix());
  if (!listed.ok()) {
    Log(std::string(listed.status().message()));
    return 0;
  }
  std::map<std::string, Desired> desired;
  for (const fleet::KeyValue& kv : listed->kvs) {
    const fleet::FleetKey key = keys_.Parse(kv.key);
    if (key.kind != fleet::FleetKey::Kind::kDesired) continue;
    Desired& d = desired[key.bundle_name];
    d.mod_revision = kv.mod_revision;
    if (absl::Status s = fleet::RecordFromJson(kv.key, kv.value, &d.record); !s.ok()) {
      Log(std::string(s.message()));
      desired.erase(key.bundle_name);
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    desired_ = std::move(desired);
    wake_ = true;
  }
  cv_.notify_all();
  return listed->revision;
}

void FleetAgent::OnDesiredEvents(const std::vector<fleet::WatchEvent>& events) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const fleet::WatchEvent& e : events) {
      const fleet::FleetKey key = keys_.Parse(e.kv.key);
      if (key.kind != fleet::FleetKey::Kind::kDesired) continue;
      if (e.type == fleet::WatchEvent::Type::kDelete) {
        desired_.erase(key.bundle_name);  // the fleet no longer manages it: it stays as is
        continue;
      }
      Desired d;
      d.mod_revision = e.kv.mod_revision;
      if (absl::Status s = fleet::RecordFromJson(e.kv.key, e.kv.value, &d.record); !s.ok()) {
        Log(std::string(s.message()));
        continue;
      }
      desired_[key.bundle_name] = std::move(d);
    }
    wake_ = true;
  }
  cv_.notify_all();
}

void FleetAgent::Reconcile() {
  std::map<std::string, Desired> desired;
  {
    std::lock_guard<std::mutex> lock(mu_);
    desired = desired_;
  }
  for (const auto& [bundle, d] : desired) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
    }
    auto handled = handled_.find(bundle);
    if (handled != handled_.end() && handled->second >= d.mod_revision) continue;
    Apply(bundle, d);
    handled_[bundle] = d.mod_revision;
  }
}

void FleetAgent::Apply(const std::string& bundle, const Desired& desired) {
  const fv1::DesiredBundle& record = desired.record;
  const bool chosen = record.canary_hosts().empty() ||
                      std::find(record.canary_hosts().begin(), record.canary_hosts().end(),
                                options_.host_id) != record.canary_hosts().end();
  const fv1::BundleVersion& want = chosen ? record.target() : record.previous();
  if (want.bundle_digest().empty()) return;  // nothing for this host at this stage
  fv1::BundleStatus status;
  status.set_bundle_name(bundle);
  status.set_desired_revision(desired.mod_revision);
  status.set_rollout_id(record.rollout_id());
  *status.mutable_version() = want;
  if (LocalDigest(bundle) == want.bundle_digest()) {
    status.set_state(fv1::APPLY_STATE_APPLIED);
    WriteStatus(status, /*with_host_record=*/false);
    return;
  }
  const absl::Time start = absl::Now();
  const absl::Status applied = FetchAndDeploy(bundle, want, status);
  if (applied.ok()) {
    // The files just placed have the desired digest (the upload checked it): no need to
    // hash them again for the host record.
    if (auto info = runtime_.GetBundle(bundle); info.ok()) {
      digests_[bundle] = DigestCache{info->dir.string(), info->reload_count,
                                     info->version.ToString(), want.bundle_digest()};
    }
    status.set_state(fv1::APPLY_STATE_APPLIED);
    Log(absl::StrCat(
        "applied ", bundle, " ", want.version(), " (", Short(want.bundle_digest()),
        ") of desired revision ", desired.mod_revision, ", rollout ", record.rollout_id(), ", in ",
        absl::FormatDuration(absl::Trunc(absl::Now() - start, absl::Microseconds(100)))));
  } else if (core::ReasonOf(applied) == ErrorReason::kShuttingDown) {
    // Not the build's fault: no NACK. The next start applies it again.
    Log(absl::StrCat("stopped before applying ", bundle, " ", want.version()));
    return;
  } else {
    status.set_state(fv1::APPLY_STATE_FAILED);
    status.set_reason(ReasonTokenOf(applied, "FETCH_FAILED"));
    status.set_message(std::string(applied.message()));
    Log(absl::StrCat("failed to apply ", bundle, " ", want.version(), " (desired revision ",
                     desired.mod_revision, "): [", status.reason(), "] ", status.message()));
  }
  // What the host runs now and its answer, in one write.
  WriteStatus(status, /*with_host_record=*/true);
}

void FleetAgent::WriteStatus(fv1::BundleStatus status, bool with_host_record) {
  const std::string bundle = status.bundle_name();
  status.set_host_id(options_.host_id);
  std::vector<std::pair<std::string, std::string>> kvs = {
      {keys_.Status(options_.host_id, bundle), fleet::RecordToJson(status)}};
  if (with_host_record) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      host_record_stale_ = false;
    }
    kvs.emplace_back(keys_.Host(options_.host_id), fleet::RecordToJson(HostRecordNow()));
  }
  auto put = lease_ != nullptr ? etcd_->PutAll(kvs, lease_->id())
                               : absl::StatusOr<int64_t>(absl::UnavailableError("no lease"));
  if (!put.ok()) {
    // Written again by the next Register(): the status (no host_id marks it), the record.
    status.clear_host_id();
    if (with_host_record) {
      std::lock_guard<std::mutex> lock(mu_);
      host_record_stale_ = true;
    }
  }
  statuses_[bundle] = std::move(status);
}

std::string FleetAgent::LocalDigest(const std::string& bundle) {
  auto info = runtime_.GetBundle(bundle);
  if (!info.ok()) {
    digests_.erase(bundle);
    return "";
  }
  DigestCache& cache = digests_[bundle];
  const std::string version = info->version.ToString();
  if (cache.dir == info->dir.string() && cache.reload_count == info->reload_count &&
      cache.version == version && !cache.digest.empty()) {
    return cache.digest;
  }
  auto digest = core::DigestBundle(info->dir);
  if (!digest.ok()) return "";
  cache = DigestCache{info->dir.string(), info->reload_count, version,
                      core::DigestToHex(digest->digest)};
  return cache.digest;
}

absl::Status FleetAgent::PublishHostRecord() {
  if (lease_ == nullptr) return absl::UnavailableError("no lease");
  return etcd_
      ->Put(keys_.Host(options_.host_id), fleet::RecordToJson(HostRecordNow()), lease_->id())
      .status();
}

fv1::HostRecord FleetAgent::HostRecordNow() {
  fv1::HostRecord record;
  record.set_host_id(options_.host_id);
  record.set_address(options_.address);
  record.set_host_epoch(runtime_.host_epoch());
  record.set_host_version(options_.host_version);
  for (const core::BundleInfo& info : runtime_.ListBundles()) {
    fv1::HostBundle* bundle = record.add_bundles();
    bundle->set_bundle_name(info.name);
    bundle->set_version(info.version.ToString());
    bundle->set_bundle_digest(LocalDigest(info.name));
  }
  return record;
}

absl::Status FleetAgent::FetchAndDeploy(const std::string& bundle,
                                        const fv1::BundleVersion& version,
                                        fv1::BundleStatus status) {
  const std::string& digest = version.bundle_digest();
  const absl::Time deadline = absl::Now() + options_.fetch_timeout;
  std::unique_ptr<BundleUpload> upload;
  std::vector<std::string> tried;
  std::mt19937_64 random(std::random_device{}());
  absl::Duration backoff = absl::Milliseconds(100);
  while (upload == nullptr) {
    // Peers that run this digest, in random order (so that a large fleet spreads the
    // load), then the rollout's sources (which may not have republished yet).
    std::vector<fv1::HostRecord> holders, sources;
    // The member's own copy is enough to find peers: a stale one only costs a retry.
    auto hosts = etcd_->GetPrefix(keys_.HostsPrefix(), /*serializable=*/true);
    if (hosts.ok()) {
      std::map<std::string, fv1::HostRecord> records;
      for (const fleet::KeyValue& kv : hosts->kvs) {
        fv1::HostRecord record;
        if (!fleet::RecordFromJson(kv.key, kv.value, &record).ok()) continue;
        if (record.host_id() == options_.host_id) continue;
        const bool has = std::any_of(
            record.bundles().begin(), record.bundles().end(), [&](const fv1::HostBundle& b) {
              return b.bundle_name() == bundle && b.bundle_digest() == digest;
            });
        if (has) holders.push_back(record);
        records[record.host_id()] = record;
      }
      std::shuffle(holders.begin(), holders.end(), random);
      std::lock_guard<std::mutex> lock(mu_);
      auto d = desired_.find(bundle);
      if (d != desired_.end()) {
        for (const std::string& id : d->second.record.sources()) {
          auto it = records.find(id);
          if (it != records.end()) sources.push_back(it->second);
        }
      }
    } else {
      tried.push_back(std::string(hosts.status().message()));
    }
    holders.insert(holders.end(), sources.begin(), sources.end());
    for (const fv1::HostRecord& peer : holders) {
      auto fetched = FetchFrom(peer.address(), bundle, digest);
      if (fetched.ok()) {
        upload = *std::move(fetched);
        break;
      }
      tried.push_back(absl::StrCat(peer.host_id(), ": ", fetched.status().message()));
    }
    if (upload != nullptr) break;
    if (status.state() != fv1::APPLY_STATE_APPLYING) {
      // No peer could send it yet: say so, for `polyplugctl fleet status` and rollouts.
      Log(absl::StrCat("waiting for a peer that has ", bundle, " ", version.version(), " (",
                       Short(digest), "): ", tried.empty() ? "none registered" : tried.back()));
      status.set_state(fv1::APPLY_STATE_APPLYING);
      WriteStatus(status, /*with_host_record=*/false);
    }
    if (absl::Now() + backoff > deadline) {
      return absl::UnavailableError(
          absl::StrCat("no peer could send ", bundle, " ", version.version(), " (", Short(digest),
                       ") within ", absl::FormatDuration(options_.fetch_timeout), ": ",
                       tried.empty() ? "no host of the fleet has it" : tried.back()));
    }
    if (!Wait(backoff)) return MakeError(ErrorReason::kShuttingDown, "the host is stopping");
    backoff = std::min(backoff * 2, absl::Seconds(2));
  }
  if (!version.signing_key().empty()) {
    // The rollout named the key that signed it: whatever this host's own policy, the
    // bytes must carry that signature.
    auto key = core::PublicKeyFromHex(version.signing_key());
    if (!key.ok()) return key.status();
    auto verified = core::VerifyBundleSignature(upload->staging_dir(),
                                                core::SignaturePolicy::kRequired, {*key});
    if (!verified.ok()) return verified.status();
  }
  // Placed and loaded where every mutation runs, one at a time. With a pumped worker (an
  // application's frame loop) the operation waits for the application: a Stop() meanwhile
  // ends the wait, and the task keeps what it uses alive in case it runs later.
  auto wait = std::make_shared<DeployWait>();
  wait->outcome.failure =
      MakeError(ErrorReason::kShuttingDown, "the host stopped before the reload");
  std::shared_ptr<BundleUpload> placed(std::move(upload));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return wait->outcome.failure;
    deploy_wait_ = wait;
  }
  worker_.Post(
      [wait, placed, root = &deploy_root_, runtime = &runtime_] {
        DeployOutcome out = root->Deploy(*runtime, *placed);
        std::lock_guard<std::mutex> lock(wait->mu);
        wait->outcome = std::move(out);
        wait->done = true;
        wait->cv.notify_all();
      },
      [wait] {
        std::lock_guard<std::mutex> lock(wait->mu);
        wait->done = true;
        wait->cv.notify_all();
      });
  DeployOutcome outcome;
  {
    std::unique_lock<std::mutex> lock(wait->mu);
    wait->cv.wait(lock, [&] { return wait->done || wait->stop; });
    if (wait->done) {
      outcome = std::move(wait->outcome);
    } else {
      outcome.failure = MakeError(ErrorReason::kShuttingDown, "the host stopped before the reload");
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    deploy_wait_.reset();
  }
  switch (outcome.action) {
    case DeployOutcome::Action::kLoaded:
    case DeployOutcome::Action::kReloaded:
      return absl::OkStatus();
    case DeployOutcome::Action::kDependentsFailed:
      return absl::AbortedError(
          absl::StrCat(bundle, " reloaded, but dependents that cascade from it failed: ",
                       absl::StrJoin(outcome.failed_dependents, ", ")));
    case DeployOutcome::Action::kFailed:
      break;
  }
  return outcome.failure;
}

absl::StatusOr<std::unique_ptr<BundleUpload>> FleetAgent::FetchFrom(const std::string& address,
                                                                    const std::string& bundle,
                                                                    const std::string& digest) {
  std::shared_ptr<grpc::Channel>& channel = peers_[address];
  if (channel == nullptr) {
    std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
    if (!options_.peer_root_certs_pem.empty() && !absl::StartsWith(address, "unix:")) {
      grpc::SslCredentialsOptions tls;
      tls.pem_root_certs = options_.peer_root_certs_pem;
      tls.pem_cert_chain = options_.peer_cert_pem;
      tls.pem_private_key = options_.peer_key_pem;
      credentials = grpc::SslCredentials(tls);
    }
    channel = grpc::CreateChannel(address, credentials);
  }
  auto stub = v1::PluginHost::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + options_.fetch_timeout));
  if (!options_.peer_token.empty()) {
    context.AddMetadata("authorization", absl::StrCat("Bearer ", options_.peer_token));
  }
  v1::FetchBundleRequest request;
  request.set_bundle_name(bundle);
  request.set_bundle_digest(digest);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return MakeError(ErrorReason::kShuttingDown, "the host is stopping");
    fetching_ = &context;
  }
  struct Done {
    FleetAgent* agent;
    ~Done() {
      std::lock_guard<std::mutex> lock(agent->mu_);
      agent->fetching_ = nullptr;
    }
  } done{this};
  auto reader = stub->FetchBundle(&context, request);
  v1::PushBundleRequest message;
  std::unique_ptr<BundleUpload> upload;
  absl::Status error;
  while (error.ok() && reader->Read(&message)) {
    if (upload == nullptr) {
      if (!message.has_header() || message.header().bundle_name() != bundle ||
          message.header().bundle_digest() != digest) {
        error = absl::InvalidArgumentError(absl::StrCat(
            address, " did not start with the header of ", bundle, " ", Short(digest)));
        break;
      }
      auto begun = deploy_root_.BeginUpload(UploadHeaderOf(std::move(*message.mutable_header())));
      if (!begun.ok()) {
        error = begun.status();
        break;
      }
      upload = *std::move(begun);
    } else if (message.has_data()) {
      error = upload->Append(message.data());
    } else {
      error = absl::InvalidArgumentError(
          absl::StrCat(address, " sent a message that is not data after the header"));
    }
  }
  if (!error.ok()) context.TryCancel();
  const grpc::Status finished = reader->Finish();
  if (!error.ok()) return error;
  if (!finished.ok()) {
    return absl::UnavailableError(
        absl::StrCat("FetchBundle from ", address, ": ", finished.error_message()));
  }
  if (upload == nullptr) {
    return absl::UnavailableError(absl::StrCat("FetchBundle from ", address, " sent nothing"));
  }
  if (absl::Status s = upload->Finish(); !s.ok()) return s;
  return upload;
}

}  // namespace polyplug::host
