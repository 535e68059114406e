// EtcdCluster: a real etcd cluster (Debian's etcd-server) on loopback, for tests. Ports are
// picked at run time, data lives in a directory the test owns, and every member is killed
// with the test process (parent-death signal). Waits are bounded by deadlines and end on
// events: a member's answer, or its exit.
#ifndef POLYPLUG_TESTS_FLEET_ETCD_CLUSTER_H_
#define POLYPLUG_TESTS_FLEET_ETCD_CLUSTER_H_

#include <grpcpp/grpcpp.h>
#include <sys/types.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace polyplug::test {

// Not thread-safe: one test drives it.
class EtcdCluster {
 public:
  // How long a member may take to serve after it starts (leader election included).
  static constexpr absl::Duration kStartDeadline = absl::Seconds(30);

  // Starts `size` members with data and logs under `dir` (created) and waits until every
  // one serves linearizable reads. The error names the member and ends with its log.
  static absl::StatusOr<std::unique_ptr<EtcdCluster>> Start(const std::filesystem::path& dir,
                                                            int size);
  ~EtcdCluster();  // kills every member still running

  EtcdCluster(const EtcdCluster&) = delete;
  EtcdCluster& operator=(const EtcdCluster&) = delete;

  int size() const { return static_cast<int>(members_.size()); }
  // "127.0.0.1:PORT" of one member's client URL, and of every member, comma-separated.
  std::string endpoint(int member) const;
  std::string endpoints() const;
  // A channel to one member (plaintext, as the members serve).
  std::shared_ptr<grpc::Channel> Channel(int member) const;

  // SIGKILL, then reaps it.
  void Kill(int member);
  // Starts a killed member again with its data and ports, and waits until it serves.
  absl::Status Restart(int member);
  // Waits until `member` answers a linearizable read (it has a leader and a quorum).
  absl::Status WaitServing(int member, absl::Duration deadline = kStartDeadline);

 private:
  struct Member {
    std::string name;
    int client_port = 0;
    int peer_port = 0;
    std::filesystem::path data_dir;
    std::filesystem::path log;
    pid_t pid = -1;
  };

  explicit EtcdCluster(std::filesystem::path dir) : dir_(std::move(dir)) {}
  absl::Status Spawn(int member);
  absl::Status Failure(int member, absl::string_view what) const;

  const std::filesystem::path dir_;
  std::vector<Member> members_;
  std::string initial_cluster_;  // name=http://127.0.0.1:PEER,...
};

}  // namespace polyplug::test

#endif  // POLYPLUG_TESTS_FLEET_ETCD_CLUSTER_H_
