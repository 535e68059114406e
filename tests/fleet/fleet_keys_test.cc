// The fleet's key layout and records (docs/FLEET.md): names that may become keys, what a
// key is, the JSON operators read with etcdctl, and a FleetState kept from reads and
// watched changes.
#include "fleet/src/fleet_keys.h"

#include "fleet/src/fleet_state.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "polyplug/fleet/v1/fleet.pb.h"

namespace polyplug::fleet {
namespace {

using ::testing::HasSubstr;

TEST(FleetKeysTest, NamesThatBecomeKeysAreChecked) {
  EXPECT_TRUE(FleetKeys::CheckName("--fleet", "render-farm_2.eu").ok());
  for (const char* bad : {"", ".hidden", "a/b", "a b", "é"}) {
    const absl::Status s = FleetKeys::CheckName("--fleet", bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(s.message(), HasSubstr("--fleet")) << bad;
  }
  EXPECT_THAT(FleetKeys::CheckName("--fleet-host-id", "ab/c").message(),
              HasSubstr("character 3 is not a letter"));
  EXPECT_FALSE(FleetKeys::CheckName("--fleet", std::string(129, 'a')).ok());
}

TEST(FleetKeysTest, TheLayoutAndItsParse) {
  const FleetKeys keys("studio");
  EXPECT_EQ(keys.root(), "/polyplug/fleets/studio/");
  EXPECT_EQ(keys.Desired("counter"), "/polyplug/fleets/studio/desired/counter");
  EXPECT_EQ(keys.Host("h1"), "/polyplug/fleets/studio/hosts/h1");
  EXPECT_EQ(keys.Status("h1", "counter"), "/polyplug/fleets/studio/status/h1/counter");
  EXPECT_EQ(keys.Rollout("counter"), "/polyplug/fleets/studio/rollouts/counter");

  FleetKey status = keys.Parse(keys.Status("h1", "counter"));
  EXPECT_EQ(status.kind, FleetKey::Kind::kStatus);
  EXPECT_EQ(status.host_id, "h1");
  EXPECT_EQ(status.bundle_name, "counter");
  EXPECT_EQ(keys.Parse(keys.Desired("counter")).kind, FleetKey::Kind::kDesired);
  EXPECT_EQ(keys.Parse(keys.Host("h1")).kind, FleetKey::Kind::kHost);
  EXPECT_EQ(keys.Parse(keys.Rollout("counter")).kind, FleetKey::Kind::kRollout);
  // Another fleet's keys, and keys off the layout, are nothing to this one.
  EXPECT_EQ(keys.Parse(FleetKeys("studio2").Host("h1")).kind, FleetKey::Kind::kOther);
  EXPECT_EQ(keys.Parse("/polyplug/fleets/studio/desired/").kind, FleetKey::Kind::kOther);
  EXPECT_EQ(keys.Parse("/polyplug/fleets/studio/status/h1").kind, FleetKey::Kind::kOther);
}

TEST(FleetKeysTest, RecordsAreJsonWithTheProtoFieldNames) {
  v1::BundleStatus status;
  status.set_host_id("h1");
  status.set_state(v1::APPLY_STATE_FAILED);
  status.set_desired_revision(42);
  status.set_reason("INIT_FAILED");
  const std::string json = RecordToJson(status);
  EXPECT_THAT(json, HasSubstr("\"host_id\":\"h1\""));
  EXPECT_THAT(json, HasSubstr("\"state\":\"APPLY_STATE_FAILED\""));
  v1::BundleStatus back;
  ASSERT_TRUE(RecordFromJson("k", json, &back).ok());
  EXPECT_EQ(back.desired_revision(), 42);
  // A newer writer's field is ignored; something else is an error naming the key.
  EXPECT_TRUE(RecordFromJson("k", R"({"host_id":"h2","from_the_future":1})", &back).ok());
  const absl::Status bad = RecordFromJson("/k/1", "not json", &back);
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.message(), HasSubstr("etcd key /k/1: not a BundleStatus record"));
}

TEST(FleetStateTest, FollowsReadsAndWatchedChanges) {
  const FleetKeys keys("studio");
  v1::HostRecord host;
  host.set_host_id("h1");
  v1::DesiredBundle desired;
  desired.set_bundle_name("counter");
  RangeResult read;
  read.revision = 10;
  read.kvs.push_back(KeyValue{keys.Host("h1"), RecordToJson(host), 3, 3, 1, 7});
  read.kvs.push_back(KeyValue{keys.Desired("counter"), RecordToJson(desired), 5, 9, 2, 0});
  read.kvs.push_back(KeyValue{keys.Host("h2"), "garbage", 4, 4, 1, 8});
  FleetState state(keys);
  state.Reset(read);
  EXPECT_EQ(state.revision(), 10);
  EXPECT_EQ(state.hosts().size(), 1u);
  ASSERT_EQ(state.desired().count("counter"), 1u);
  EXPECT_EQ(state.desired().at("counter").mod_revision, 9);
  ASSERT_EQ(state.malformed().size(), 1u);
  EXPECT_THAT(state.malformed()[0], HasSubstr("hosts/h2"));

  v1::BundleStatus status;
  status.set_state(v1::APPLY_STATE_APPLIED);
  state.Apply(WatchEvent{WatchEvent::Type::kPut, KeyValue{keys.Status("h1", "counter"),
                                                          RecordToJson(status), 11, 11, 1, 7}});
  ASSERT_NE(state.StatusOf("h1", "counter"), nullptr);
  EXPECT_EQ(state.revision(), 11);
  state.Apply(WatchEvent{WatchEvent::Type::kDelete, KeyValue{keys.Host("h1"), "", 0, 12, 0, 0}});
  EXPECT_TRUE(state.hosts().empty());
  EXPECT_EQ(state.revision(), 12);
}

}  // namespace
}  // namespace polyplug::fleet
