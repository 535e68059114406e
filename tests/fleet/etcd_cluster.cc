#include "fleet/etcd_cluster.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "support/child_process.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;

// A loopback port nobody listens on now. The socket stays bound until every port of the
// cluster is picked, so that two picks cannot return the same port.
absl::StatusOr<int> BindFreePort(std::vector<int>& held) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", errno));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    close(fd);
    return absl::InternalError(absl::StrCat("cannot bind a loopback port: errno ", errno));
  }
  held.push_back(fd);
  return ntohs(address.sin_port);
}

std::string Url(int port) { return absl::StrCat("http://127.0.0.1:", port); }

}  // namespace

absl::StatusOr<std::unique_ptr<EtcdCluster>> EtcdCluster::Start(const fs::path& dir, int size) {
  auto cluster = std::unique_ptr<EtcdCluster>(new EtcdCluster(dir));
  fs::create_directories(dir);
  std::vector<int> held;
  std::vector<std::string> peers;
  for (int i = 0; i < size; ++i) {
    Member member;
    member.name = absl::StrCat("m", i);
    auto client = BindFreePort(held);
    auto peer = client.ok() ? BindFreePort(held) : client;
    if (!peer.ok()) {
      for (int fd : held) close(fd);
      return peer.status();
    }
    member.client_port = *client;
    member.peer_port = *peer;
    member.data_dir = dir / member.name;
    member.log = dir / (member.name + ".log");
    peers.push_back(absl::StrCat(member.name, "=", Url(member.peer_port)));
    cluster->members_.push_back(std::move(member));
  }
  for (int fd : held) close(fd);  // the members bind them now
  cluster->initial_cluster_ = absl::StrJoin(peers, ",");
  for (int i = 0; i < size; ++i) {
    if (absl::Status s = cluster->Spawn(i); !s.ok()) return s;
  }
  for (int i = 0; i < size; ++i) {
    if (absl::Status s = cluster->WaitServing(i); !s.ok()) return s;
  }
  return cluster;
}

EtcdCluster::~EtcdCluster() {
  for (int i = 0; i < size(); ++i) Kill(i);
}

std::string EtcdCluster::endpoint(int member) const {
  return absl::StrCat("127.0.0.1:", members_[member].client_port);
}

std::string EtcdCluster::endpoints() const {
  std::vector<std::string> all;
  for (int i = 0; i < size(); ++i) all.push_back(endpoint(i));
  return absl::StrJoin(all, ",");
}

std::shared_ptr<grpc::Channel> EtcdCluster::Channel(int member) const {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection of its own
  return grpc::CreateCustomChannel(endpoint(member), grpc::InsecureChannelCredentials(), args);
}

absl::Status EtcdCluster::Spawn(int member) {
  const Member& m = members_[member];
  SpawnOptions spawn;
  spawn.argv = {POLYPLUG_ETCD_BINARY, "--name", m.name, "--data-dir", m.data_dir.string(),
                "--listen-client-urls", Url(m.client_port), "--advertise-client-urls",
                Url(m.client_port), "--listen-peer-urls", Url(m.peer_port),
                "--initial-advertise-peer-urls", Url(m.peer_port), "--initial-cluster",
                initial_cluster_, "--initial-cluster-state", "new", "--initial-cluster-token",
                absl::StrCat("polyplug-test-", getpid()),
                // Elections in a fraction of a second on loopback, not seconds.
                "--heartbeat-interval", "50", "--election-timeout", "500", "--logger", "zap",
                "--log-outputs", "stderr"};
  spawn.out = Redirect::Append(m.log);
  spawn.err = Redirect::Append(m.log);
  absl::StatusOr<pid_t> pid = test::Spawn(spawn);
  if (!pid.ok()) return pid.status();
  members_[member].pid = *pid;
  return absl::OkStatus();
}

void EtcdCluster::Kill(int member) {
  Member& m = members_[member];
  if (m.pid <= 0) return;
  kill(m.pid, SIGKILL);
  int status = 0;
  while (waitpid(m.pid, &status, 0) < 0 && errno == EINTR) {
  }
  m.pid = -1;
}

absl::Status EtcdCluster::Restart(int member) {
  if (members_[member].pid > 0) {
    return absl::FailedPreconditionError(absl::StrCat(members_[member].name, " still runs"));
  }
  if (absl::Status s = Spawn(member); !s.ok()) return s;
  return WaitServing(member);
}

absl::Status EtcdCluster::WaitServing(int member, absl::Duration deadline) {
  const absl::Time end = absl::Now() + deadline;
  auto stub = etcdserverpb::KV::NewStub(Channel(member));
  absl::Status last = absl::DeadlineExceededError("no answer yet");
  while (absl::Now() < end) {
    int status = 0;
    if (members_[member].pid <= 0 || waitpid(members_[member].pid, &status, WNOHANG) != 0) {
      members_[member].pid = -1;
      return Failure(member, "exited before it served");
    }
    // A linearizable read answers once the member has a leader and a quorum. Each attempt
    // waits for the member (wait_for_ready) at most a second, so that an exit is noticed.
    grpc::ClientContext context;
    context.set_wait_for_ready(true);
    context.set_deadline(absl::ToChronoTime(std::min(end, absl::Now() + absl::Seconds(1))));
    etcdserverpb::RangeRequest request;
    request.set_key("polyplug-test-ready");
    etcdserverpb::RangeResponse response;
    const grpc::Status answer = stub->Range(&context, request, &response);
    if (answer.ok()) return absl::OkStatus();
    last = absl::UnavailableError(answer.error_message());
  }
  return Failure(member, absl::StrCat("did not serve within ", absl::FormatDuration(deadline),
                                      " (last: ", last.message(), ")"));
}

absl::Status EtcdCluster::Failure(int member, absl::string_view what) const {
  const Member& m = members_[member];
  std::string log;
  if (std::ifstream in(m.log); in) {
    std::stringstream text;
    text << in.rdbuf();
    log = text.str();
  }
  if (log.size() > 4000) log = log.substr(log.size() - 4000);
  return absl::UnavailableError(absl::StrCat("etcd member ", m.name, " (client port ",
                                             m.client_port, ") ", what, "; its log ends:\n", log));
}

}  // namespace polyplug::test
