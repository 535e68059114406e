// fleet::EtcdClient against real etcd members on loopback: failover between members, an
// unreachable cluster named in the error, guarded writes, a watch that resumes where it
// stopped when its member dies and re-lists when its revision was compacted, and leases
// (revoked with their owner, lost when etcd drops them).
#include "fleet/src/etcd_client.h"

#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "etcdserverpb/rpc.grpc.pb.h"
#include "fleet/etcd_cluster.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "support/bundle_fixture.h"

namespace polyplug::test {
namespace {

using fleet::EtcdClient;
using fleet::EtcdOptions;
using fleet::WatchEvent;
using ::testing::HasSubstr;

EtcdOptions OptionsFor(const EtcdCluster& cluster) {
  EtcdOptions options;
  options.endpoints = absl::StrSplit(cluster.endpoints(), ',');
  options.call_timeout = absl::Seconds(20);
  options.random_first_member = false;  // member 0 first: the one a test kills
  return options;
}

// What a watch delivered, waited on by the test.
class WatchLog {
 public:
  fleet::WatchHandler Handler(std::function<int64_t()> on_compacted = {}) {
    fleet::WatchHandler handler;
    handler.on_events = [this](const std::vector<WatchEvent>& events, int64_t) {
      std::lock_guard<std::mutex> lock(mu_);
      for (const WatchEvent& e : events) {
        lines_.push_back(absl::StrCat(e.type == WatchEvent::Type::kPut ? "put " : "delete ",
                                      e.kv.key, e.type == WatchEvent::Type::kPut ? "=" : "",
                                      e.kv.value));
      }
      cv_.notify_all();
    };
    handler.on_compacted = [this, on_compacted] {
      std::lock_guard<std::mutex> lock(mu_);
      lines_.push_back("compacted");
      cv_.notify_all();
      return on_compacted();
    };
    return handler;
  }

  // The lines once there are `count` of them (or what there is after 30 s).
  std::vector<std::string> WaitFor(size_t count) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(30), [&] { return lines_.size() >= count; });
    return lines_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> lines_;
};

TEST(EtcdClientTest, KeysAndGuardedWritesOnOneMember) {
  const TempDir dir;
  auto cluster = EtcdCluster::Start(dir.path() / "etcd", 1);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  auto client = EtcdClient::Create(OptionsFor(**cluster));
  ASSERT_TRUE(client.ok()) << client.status();
  EtcdClient& etcd = **client;
  EXPECT_TRUE(etcd.CheckReachable().ok());

  auto absent = etcd.Get("/a/x");
  ASSERT_TRUE(absent.ok()) << absent.status();
  EXPECT_TRUE(absent->kvs.empty());
  // Absent: only a write that expects absence (0) succeeds.
  auto first = etcd.PutIfModRevision("/a/x", "1", 0);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(first->succeeded);
  auto again = etcd.PutIfModRevision("/a/x", "2", 0);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->succeeded);
  // Two writers read the same revision: the second loses.
  auto read = etcd.Get("/a/x");
  ASSERT_TRUE(read.ok());
  ASSERT_EQ(read->kvs.size(), 1u);
  const int64_t seen = read->kvs[0].mod_revision;
  EXPECT_EQ(seen, first->revision);
  auto winner = etcd.PutIfModRevision("/a/x", "winner", seen);
  auto loser = etcd.PutIfModRevision("/a/x", "loser", seen);
  ASSERT_TRUE(winner.ok() && loser.ok());
  EXPECT_TRUE(winner->succeeded);
  EXPECT_FALSE(loser->succeeded);
  EXPECT_EQ(etcd.Get("/a/x")->kvs[0].value, "winner");

  ASSERT_TRUE(etcd.Put("/a/y", "y").ok());
  ASSERT_TRUE(etcd.Put("/b", "b").ok());
  auto prefix = etcd.GetPrefix("/a/");
  ASSERT_TRUE(prefix.ok());
  ASSERT_EQ(prefix->kvs.size(), 2u);
  EXPECT_EQ(prefix->kvs[0].key, "/a/x");
  EXPECT_EQ(prefix->kvs[1].key, "/a/y");

  auto stale = etcd.DeleteIfModRevision("/a/y", seen);
  ASSERT_TRUE(stale.ok());
  EXPECT_FALSE(stale->succeeded);
  auto deleted = etcd.Delete("/a/y");
  ASSERT_TRUE(deleted.ok());
  EXPECT_EQ(*deleted, 1);
}

TEST(EtcdClientTest, BadEndpointsAndAnUnreachableClusterAreNamed) {
  EtcdOptions none;
  EXPECT_EQ(EtcdClient::Create(none).status().code(), absl::StatusCode::kInvalidArgument);
  EtcdOptions malformed;
  malformed.endpoints = {"127.0.0.1"};
  auto bad = EtcdClient::Create(malformed);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("127.0.0.1: not HOST:PORT"));

  // Ports nothing listens on: bound, then closed.
  EtcdOptions unreachable;
  unreachable.endpoints = {"http://127.0.0.1:1", "127.0.0.1:2"};
  unreachable.call_timeout = absl::Milliseconds(500);
  auto client = EtcdClient::Create(unreachable);
  ASSERT_TRUE(client.ok()) << client.status();
  const absl::Status status = (*client)->Put("/k", "v").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(status.message(), HasSubstr("etcd unreachable at 127.0.0.1:1,127.0.0.1:2"));
  EXPECT_THAT(status.message(), HasSubstr("127.0.0.1:1: "));
  EXPECT_EQ((*client)->CheckReachable().code(), absl::StatusCode::kUnavailable);
}

// Member 0 is every call's first choice; with it dead, calls go to the others, and a watch
// on it resumes on another member with nothing missed and nothing twice.
TEST(EtcdClientTest, CallsAndWatchesFailOverWhenAMemberDies) {
  const TempDir dir;
  auto started = EtcdCluster::Start(dir.path() / "etcd", 3);
  ASSERT_TRUE(started.ok()) << started.status();
  EtcdCluster& cluster = **started;
  auto client = EtcdClient::Create(OptionsFor(cluster));
  ASSERT_TRUE(client.ok()) << client.status();
  EtcdClient& etcd = **client;

  auto listed = etcd.GetPrefix("/w/");
  ASSERT_TRUE(listed.ok()) << listed.status();
  WatchLog log;
  auto watch = etcd.WatchPrefix("/w/", listed->revision + 1, log.Handler());
  ASSERT_TRUE(etcd.Put("/w/1", "a").ok());
  EXPECT_THAT(log.WaitFor(1), ::testing::ElementsAre("put /w/1=a"));

  cluster.Kill(0);
  // A write during the election that may follow can time out on a member: the client
  // tries the next one until its deadline.
  ASSERT_TRUE(etcd.Put("/w/2", "b").ok());
  ASSERT_TRUE(etcd.Put("/w/1", "c").ok());
  ASSERT_TRUE(etcd.Delete("/w/2").ok());
  EXPECT_THAT(log.WaitFor(4),
              ::testing::ElementsAre("put /w/1=a", "put /w/2=b", "put /w/1=c", "delete /w/2"));
  auto read = etcd.Get("/w/1");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->kvs.at(0).value, "c");

  // Back: it catches up, and the client may use it again.
  ASSERT_TRUE(cluster.Restart(0).ok());
  ASSERT_TRUE(etcd.Put("/w/3", "d").ok());
  EXPECT_THAT(log.WaitFor(5).back(), "put /w/3=d");
}

TEST(EtcdClientTest, AWatchFromACompactedRevisionRelistsThenFollows) {
  const TempDir dir;
  auto cluster = EtcdCluster::Start(dir.path() / "etcd", 1);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  auto client = EtcdClient::Create(OptionsFor(**cluster));
  ASSERT_TRUE(client.ok());
  EtcdClient& etcd = **client;
  const int64_t early = *etcd.Put("/c/1", "a");
  ASSERT_TRUE(etcd.Put("/c/1", "b").ok());
  const int64_t latest = *etcd.Put("/c/2", "c");
  // Forget the history before `latest`.
  auto kv = etcdserverpb::KV::NewStub((*cluster)->Channel(0));
  grpc::ClientContext context;
  etcdserverpb::CompactionRequest compact;
  compact.set_revision(latest);
  compact.set_physical(true);
  etcdserverpb::CompactionResponse compacted;
  ASSERT_TRUE(kv->Compact(&context, compact, &compacted).ok());

  WatchLog log;
  int64_t relisted = 0;
  auto watch = etcd.WatchPrefix("/c/", early, log.Handler([&] {
    auto state = etcd.GetPrefix("/c/");
    EXPECT_TRUE(state.ok());
    relisted = state->revision;
    return state->revision;
  }));
  EXPECT_THAT(log.WaitFor(1), ::testing::ElementsAre("compacted"));
  ASSERT_TRUE(etcd.Put("/c/3", "d").ok());
  EXPECT_THAT(log.WaitFor(2), ::testing::ElementsAre("compacted", "put /c/3=d"));
  EXPECT_GE(relisted, latest);
}

TEST(EtcdClientTest, ALeaseKeepsItsKeysUntilReleasedAndReportsItsLoss) {
  const TempDir dir;
  auto cluster = EtcdCluster::Start(dir.path() / "etcd", 1);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  auto client = EtcdClient::Create(OptionsFor(**cluster));
  ASSERT_TRUE(client.ok());
  EtcdClient& etcd = **client;

  WatchLog log;
  auto watch = etcd.WatchPrefix("/l/", *etcd.Put("/other", "x") + 1, log.Handler());
  // Released: its keys go at once.
  {
    auto lease = etcd.GrantLease(absl::Seconds(30));
    ASSERT_TRUE(lease.ok()) << lease.status();
    ASSERT_TRUE(etcd.Put("/l/a", "1", (*lease)->id()).ok());
    EXPECT_TRUE((*lease)->alive());
  }
  EXPECT_THAT(log.WaitFor(2), ::testing::ElementsAre("put /l/a=1", "delete /l/a"));

  // Revoked behind its owner's back (as when it expired): the keeper finds out on its next
  // keep-alive and says so.
  std::mutex mu;
  std::condition_variable cv;
  bool lost = false;
  auto lease = etcd.GrantLease(absl::Seconds(3), [&] {
    std::lock_guard<std::mutex> lock(mu);
    lost = true;
    cv.notify_all();
  });
  ASSERT_TRUE(lease.ok()) << lease.status();
  ASSERT_TRUE(etcd.Put("/l/b", "2", (*lease)->id()).ok());
  auto leases = etcdserverpb::Lease::NewStub((*cluster)->Channel(0));
  grpc::ClientContext context;
  etcdserverpb::LeaseRevokeRequest revoke;
  revoke.set_id((*lease)->id());
  etcdserverpb::LeaseRevokeResponse revoked;
  ASSERT_TRUE(leases->LeaseRevoke(&context, revoke, &revoked).ok());
  EXPECT_THAT(log.WaitFor(4).back(), "delete /l/b");
  std::unique_lock<std::mutex> lock(mu);
  EXPECT_TRUE(cv.wait_for(lock, std::chrono::seconds(30), [&] { return lost; }));
  EXPECT_FALSE((*lease)->alive());
}

}  // namespace
}  // namespace polyplug::test
