// The etcd API the fleet support is built on (proto/etcd/, etcd's wire format restated),
// against real etcd members that the test starts on loopback: keys, a transaction guarded
// by a revision (how two concurrent rollouts cannot both win), a watch from a revision (how
// a host misses nothing), leases (how a host that dies drops out), and a three-member
// cluster that keeps serving with one member down and lets it catch up.
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "etcdserverpb/rpc.grpc.pb.h"
#include "fleet/etcd_cluster.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "support/bundle_fixture.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
namespace pb = ::etcdserverpb;

// Calls to one member, each bounded by a deadline so that a broken member fails the test
// instead of hanging it.
class Member {
 public:
  explicit Member(std::shared_ptr<grpc::Channel> channel)
      : kv_(pb::KV::NewStub(channel)),
        lease_(pb::Lease::NewStub(channel)),
        watch_(pb::Watch::NewStub(channel)),
        maintenance_(pb::Maintenance::NewStub(channel)) {}

  std::unique_ptr<grpc::ClientContext> Context() const {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    return context;
  }

  int64_t Put(const std::string& key, const std::string& value, int64_t lease = 0) {
    pb::PutRequest request;
    request.set_key(key);
    request.set_value(value);
    request.set_lease(lease);
    pb::PutResponse response;
    const grpc::Status status = kv_->Put(Context().get(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.header().revision();
  }

  pb::RangeResponse Get(const std::string& key) {
    pb::RangeRequest request;
    request.set_key(key);
    pb::RangeResponse response;
    const grpc::Status status = kv_->Range(Context().get(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  // Puts `key` = `value` only if the key was last changed at `mod_revision`.
  bool PutIfUnchanged(const std::string& key, int64_t mod_revision, const std::string& value) {
    pb::TxnRequest request;
    pb::Compare* guard = request.add_compare();
    guard->set_key(key);
    guard->set_target(pb::Compare::MOD);
    guard->set_result(pb::Compare::EQUAL);
    guard->set_mod_revision(mod_revision);
    pb::PutRequest* put = request.add_success()->mutable_request_put();
    put->set_key(key);
    put->set_value(value);
    pb::TxnResponse response;
    const grpc::Status status = kv_->Txn(Context().get(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.succeeded();
  }

  pb::KV::Stub& kv() { return *kv_; }
  pb::Lease::Stub& lease() { return *lease_; }
  pb::Watch::Stub& watch() { return *watch_; }
  pb::Maintenance::Stub& maintenance() { return *maintenance_; }

 private:
  std::unique_ptr<pb::KV::Stub> kv_;
  std::unique_ptr<pb::Lease::Stub> lease_;
  std::unique_ptr<pb::Watch::Stub> watch_;
  std::unique_ptr<pb::Maintenance::Stub> maintenance_;
};

TEST(EtcdWireTest, KeysGuardedWritesWatchesAndLeases) {
  const TempDir dir;
  auto cluster = EtcdCluster::Start(dir.path() / "etcd", 1);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  Member etcd((*cluster)->Channel(0));

  const int64_t first = etcd.Put("/polyplug/fleets/f/desired/greeter", "v1");
  const pb::RangeResponse read = etcd.Get("/polyplug/fleets/f/desired/greeter");
  ASSERT_EQ(read.kvs_size(), 1);
  EXPECT_EQ(read.kvs(0).value(), "v1");
  EXPECT_EQ(read.kvs(0).mod_revision(), first);

  // Two writers that read the same revision: the first wins, the second is told.
  EXPECT_TRUE(etcd.PutIfUnchanged("/polyplug/fleets/f/desired/greeter", first, "v2"));
  EXPECT_FALSE(etcd.PutIfUnchanged("/polyplug/fleets/f/desired/greeter", first, "v3"));
  EXPECT_EQ(etcd.Get("/polyplug/fleets/f/desired/greeter").kvs(0).value(), "v2");

  // A watch from the first revision gets both changes, however late it starts.
  {
    auto context = etcd.Context();
    auto stream = etcd.watch().Watch(context.get());
    pb::WatchRequest create;
    create.mutable_create_request()->set_key("/polyplug/fleets/f/");
    create.mutable_create_request()->set_range_end("/polyplug/fleets/f0");  // the prefix
    create.mutable_create_request()->set_start_revision(first);
    ASSERT_TRUE(stream->Write(create));
    std::vector<std::string> values;
    pb::WatchResponse response;
    while (values.size() < 2 && stream->Read(&response)) {
      if (response.created()) continue;
      for (const auto& event : response.events()) {
        EXPECT_EQ(event.type(), mvccpb::Event::PUT);
        values.push_back(event.kv().value());
      }
    }
    EXPECT_THAT(values, ::testing::ElementsAre("v1", "v2"));
    context->TryCancel();
    stream->Finish();
  }

  // A key attached to a lease goes with the lease; keep-alives renew it.
  pb::LeaseGrantRequest grant;
  grant.set_ttl(60);
  pb::LeaseGrantResponse granted;
  ASSERT_TRUE(etcd.lease().LeaseGrant(etcd.Context().get(), grant, &granted).ok());
  ASSERT_NE(granted.id(), 0);
  etcd.Put("/polyplug/fleets/f/hosts/h1", "serving", granted.id());
  {
    auto context = etcd.Context();
    auto keep_alive = etcd.lease().LeaseKeepAlive(context.get());
    pb::LeaseKeepAliveRequest renew;
    renew.set_id(granted.id());
    ASSERT_TRUE(keep_alive->Write(renew));
    pb::LeaseKeepAliveResponse renewed;
    ASSERT_TRUE(keep_alive->Read(&renewed));
    EXPECT_EQ(renewed.id(), granted.id());
    EXPECT_GT(renewed.ttl(), 0);
    context->TryCancel();
    keep_alive->Finish();
  }
  EXPECT_EQ(etcd.Get("/polyplug/fleets/f/hosts/h1").kvs_size(), 1);
  pb::LeaseRevokeRequest revoke;
  revoke.set_id(granted.id());
  pb::LeaseRevokeResponse revoked;
  ASSERT_TRUE(etcd.lease().LeaseRevoke(etcd.Context().get(), revoke, &revoked).ok());
  EXPECT_EQ(etcd.Get("/polyplug/fleets/f/hosts/h1").kvs_size(), 0);
}

TEST(EtcdWireTest, AThreeMemberClusterServesWithoutOneMemberWhichThenCatchesUp) {
  const TempDir dir;
  auto started = EtcdCluster::Start(dir.path() / "etcd", 3);
  ASSERT_TRUE(started.ok()) << started.status();
  EtcdCluster& cluster = **started;
  Member m0(cluster.Channel(0)), m1(cluster.Channel(1)), m2(cluster.Channel(2));

  m0.Put("/polyplug/k", "before");
  EXPECT_EQ(m2.Get("/polyplug/k").kvs(0).value(), "before");  // a linearizable read

  // Killing a member may kill the leader: the others elect another (a write sent meanwhile
  // can time out, which a client retries) and serve linearizable reads again once they did.
  cluster.Kill(1);
  ASSERT_TRUE(cluster.WaitServing(0).ok());
  ASSERT_TRUE(cluster.WaitServing(2).ok());
  const int64_t revision = m0.Put("/polyplug/k", "during");  // two of three: a quorum
  EXPECT_EQ(m2.Get("/polyplug/k").kvs(0).value(), "during");
  pb::StatusResponse status;
  ASSERT_TRUE(m2.maintenance().Status(m2.Context().get(), pb::StatusRequest(), &status).ok());
  EXPECT_NE(status.leader(), 0u);

  ASSERT_TRUE(cluster.Restart(1).ok());
  const pb::RangeResponse caught_up = m1.Get("/polyplug/k");
  ASSERT_EQ(caught_up.kvs_size(), 1);
  EXPECT_EQ(caught_up.kvs(0).value(), "during");
  EXPECT_EQ(caught_up.kvs(0).mod_revision(), revision);
}

}  // namespace
}  // namespace polyplug::test
