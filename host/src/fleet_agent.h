// FleetAgent: a host's membership of a fleet (polyplug-host --fleet NAME --etcd ENDPOINTS;
// docs/FLEET.md).
//
// It registers the host under a lease (its address, epoch and what it runs), reads the
// fleet's desired state and watches it from the revision it read, so that it misses no
// change and resumes after a disconnect. For each bundle whose desired version is not what
// the host runs, it fetches the files by digest from a peer that has them (FetchBundle),
// checks digest and signature, places them in the deploy root and reloads through the
// normal path (DeployRoot on the operation worker), then writes its status under its
// lease: APPLIED with the desired revision (an ACK) or FAILED with the reason (a NACK).
//
// etcd being unreachable never stops the host: the agent logs it, keeps retrying, and the
// host serves its local bundles meanwhile. A lost lease (etcd unreachable for longer than
// its TTL) is replaced, and the host registers again.
#ifndef POLYPLUG_HOST_SRC_FLEET_AGENT_H_
#define POLYPLUG_HOST_SRC_FLEET_AGENT_H_

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "fleet/src/etcd_client.h"
#include "fleet/src/fleet_keys.h"
#include "host/src/deploy_root.h"
#include "polyplug/fleet/v1/fleet.pb.h"

namespace grpc {
class Channel;
class ClientContext;
}  // namespace grpc

namespace polyplug::core {
class Runtime;
struct PhaseEvent;
}  // namespace polyplug::core

namespace polyplug::host {

class OperationWorker;

struct FleetAgentOptions {
  std::string fleet;
  std::vector<std::string> etcd_endpoints;
  // Checked with FleetKeys::CheckName; empty: "<hostname>-<address>" with the characters
  // a key cannot hold replaced by '-'.
  std::string host_id;
  std::string address;  // where peers and polyplugctl reach this host; empty: Join()'s
  absl::Duration lease_ttl = absl::Seconds(10);
  // Sent as "authorization: Bearer" to peers' FetchBundle (the fleet's hosts share it).
  std::string peer_token;
  // Peers at TCP addresses are called over TLS when set: their certificates must chain to
  // these roots, and the host presents peer_cert_pem/peer_key_pem (its own certificate)
  // to peers that ask for a client certificate. Empty: plaintext. Unix sockets are always
  // plaintext (the peer is on this machine).
  std::string peer_root_certs_pem;
  std::string peer_cert_pem, peer_key_pem;
  // How long a fetch may keep trying the peers before the apply fails (FETCH_FAILED).
  absl::Duration fetch_timeout = absl::Seconds(30);
  std::function<void(const std::string&)> log;  // one line, without the "fleet: " prefix
  std::string host_version;
};

class FleetAgent {
 public:
  // Checks the options (INVALID_ARGUMENT names the flag). Contacts nobody yet.
  // `runtime`, `worker` and `deploy_root` must outlive it.
  static absl::StatusOr<std::unique_ptr<FleetAgent>> Create(core::Runtime& runtime,
                                                            OperationWorker& worker,
                                                            DeployRoot& deploy_root,
                                                            FleetAgentOptions options);
  // Starts the agent's thread, which registers the host and follows the desired state;
  // does not wait for etcd. Unless the options name an address, the host advertises the
  // first TCP address of `listen_addresses` (a fleet spans machines), else the first. Once.
  void Join(const std::vector<std::string>& listen_addresses);
  ~FleetAgent();  // Stop()

  FleetAgent(const FleetAgent&) = delete;
  FleetAgent& operator=(const FleetAgent&) = delete;

  // Stops watching and revokes the lease (the host record and statuses go with it). An
  // apply in progress finishes first. Idempotent.
  void Stop();

  // The phase pipeline's fleet stage: a bundle's version changed, so the host record is
  // republished. Cheap; any thread.
  void OnPhase(const core::PhaseEvent& event);

 private:
  struct Desired {
    fleet::v1::DesiredBundle record;
    int64_t mod_revision = 0;
  };

  FleetAgent(core::Runtime& runtime, OperationWorker& worker, DeployRoot& deploy_root,
             FleetAgentOptions options, std::unique_ptr<fleet::EtcdClient> etcd);
  void Run();
  // The agent's thread: a lease, the host record and the statuses written before, a
  // watch. False while etcd cannot be reached.
  bool Register();
  // Reads the desired state; returns the revision read at (0 on failure).
  int64_t ListDesired();
  void OnDesiredEvents(const std::vector<fleet::WatchEvent>& events);
  // One pass over the desired state: applies what changed since the last pass.
  void Reconcile();
  void Apply(const std::string& bundle, const Desired& desired);
  // Fetches `version` of `bundle` from a peer and deploys it; OK, or why not.
  // `status` is the answer being prepared: written as APPLYING while no peer can send it.
  absl::Status FetchAndDeploy(const std::string& bundle, const fleet::v1::BundleVersion& version,
                              fleet::v1::BundleStatus status);
  // One peer's FetchBundle into an upload of the deploy root, finished (digests checked).
  absl::StatusOr<std::unique_ptr<BundleUpload>> FetchFrom(const std::string& address,
                                                          const std::string& bundle,
                                                          const std::string& digest);
  absl::Status PublishHostRecord();
  fleet::v1::HostRecord HostRecordNow();
  // Writes the status under the lease, with the host record in the same transaction when
  // `with_host_record`; a failed write is retried by the next Register().
  void WriteStatus(fleet::v1::BundleStatus status, bool with_host_record);
  // The digest of the files `bundle` was loaded from, "" when not loaded.
  std::string LocalDigest(const std::string& bundle);
  void Log(const std::string& line) const;
  // Waits until woken or `timeout`; false once stopping.
  bool Wait(absl::Duration timeout);

  core::Runtime& runtime_;
  OperationWorker& worker_;
  DeployRoot& deploy_root_;
  FleetAgentOptions options_;  // address and host_id complete once joined
  const fleet::FleetKeys keys_;
  std::unique_ptr<fleet::EtcdClient> etcd_;

  // The agent's thread's own.
  std::unique_ptr<fleet::EtcdLease> lease_;
  std::unique_ptr<fleet::EtcdWatch> watch_;
  std::map<std::string, int64_t> handled_;  // bundle -> desired mod_revision applied (or not)
  std::map<std::string, fleet::v1::BundleStatus> statuses_;  // as last written
  std::string last_error_;                                   // logged once per change
  // bundle -> (dir, reload count, digest): digests are computed once per loaded version.
  struct DigestCache {
    std::string dir;
    uint64_t reload_count = 0;
    std::string version;
    std::string digest;
  };
  std::map<std::string, DigestCache> digests_;
  std::map<std::string, std::shared_ptr<grpc::Channel>> peers_;  // address -> channel

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;                    // guarded by mu_
  bool wake_ = false;                        // guarded by mu_
  bool host_record_stale_ = true;            // guarded by mu_
  std::map<std::string, Desired> desired_;   // guarded by mu_
  grpc::ClientContext* fetching_ = nullptr;  // guarded by mu_: Stop() cancels the fetch
  // A deploy posted to the operation worker and waited for; shared with its task, which
  // may outlive the wait (Stop() ends the wait).
  struct DeployWait {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;  // guarded by mu
    bool stop = false;  // guarded by mu
    DeployOutcome outcome;
  };
  std::shared_ptr<DeployWait> deploy_wait_;  // guarded by mu_
  std::thread thread_;
};

}  // namespace polyplug::host

#endif  // POLYPLUG_HOST_SRC_FLEET_AGENT_H_
