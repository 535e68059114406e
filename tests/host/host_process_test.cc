// The real polyplug-host executable, driven over a unix socket through generated stubs.
//
// Each test starts its own host on a temporary bundle root holding copies of the test
// bundles it needs, so reloads can rewrite files freely. Nothing sleeps: the tests wait on
// stream reads, call completions and process exit.
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1/reflection.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "gtest/gtest.h"
#include "host/host_calls.h"
#include "host/host_fixture.h"
#include "polyplug/host/v1/host.grpc.pb.h"
#include "support/bundle_fixture.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::polyplug::host::v1;
using ::google::protobuf::util::MessageDifferencer;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using ::testing::UnorderedElementsAre;

constexpr size_t kReloadsThatMustNotBlock = 100;

// True when one line of `log` contains every needle (case-insensitive).
bool HasLogLine(absl::string_view log, std::vector<absl::string_view> needles) {
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    if (std::all_of(needles.begin(), needles.end(),
                    [line](absl::string_view n) { return ContainsIgnoreCase(line, n); })) {
      return true;
    }
  }
  return false;
}

MATCHER_P(ProtoEq, expected, "equals " + expected.ShortDebugString()) {
  if (MessageDifferencer::Equals(arg, expected)) return true;
  *result_listener << "which is " << arg.ShortDebugString();
  return false;
}

// Expects `actual` to be the very same events as `expected` (every field).
void ExpectSameEvents(const std::vector<v1::ReloadPhaseEvent>& actual,
                      const std::vector<v1::ReloadPhaseEvent>& expected) {
  EXPECT_EQ(Describe(actual), Describe(expected));
  EXPECT_EQ(SeqsOf(actual), SeqsOf(expected));
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i) {
    EXPECT_THAT(actual[i], ProtoEq(expected[i])) << "event " << i;
  }
}

std::vector<v1::ReloadPhaseEvent> EventsOf(const v1::ReloadResponse& response) {
  return {response.events().begin(), response.events().end()};
}

// grpc.health.v1.Health/Check without any metadata.
grpc::Status HealthCheck(const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
                         grpc::health::v1::HealthCheckResponse* response) {
  auto health = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kCallDeadline);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  return health->Check(&context, request, response);
}

// Server reflection's list_services, with `authorization` metadata unless empty. `Service`
// is grpc::reflection::v1::ServerReflection or its v1alpha twin; `Request`/`Response` are
// the matching messages. Appends the service names to `services`.
template <typename Service, typename Request, typename Response>
grpc::Status ListServices(const std::shared_ptr<grpc::Channel>& channel,
                          const std::string& authorization, std::vector<std::string>* services) {
  auto stub = Service::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kCallDeadline);
  if (!authorization.empty()) context.AddMetadata("authorization", authorization);
  auto stream = stub->ServerReflectionInfo(&context);
  Request request;
  request.set_list_services("");
  stream->Write(request);
  stream->WritesDone();
  Response response;
  while (stream->Read(&response)) {
    for (const auto& service : response.list_services_response().service()) {
      services->push_back(service.name());
    }
  }
  return stream->Finish();
}

grpc::Status ListServicesV1(const std::shared_ptr<grpc::Channel>& channel,
                            const std::string& authorization, std::vector<std::string>* services) {
  return ListServices<grpc::reflection::v1::ServerReflection,
                      grpc::reflection::v1::ServerReflectionRequest,
                      grpc::reflection::v1::ServerReflectionResponse>(channel, authorization,
                                                                      services);
}

grpc::Status ListServicesV1Alpha(const std::shared_ptr<grpc::Channel>& channel,
                                 const std::string& authorization,
                                 std::vector<std::string>* services) {
  return ListServices<grpc::reflection::v1alpha::ServerReflection,
                      grpc::reflection::v1alpha::ServerReflectionRequest,
                      grpc::reflection::v1alpha::ServerReflectionResponse>(channel, authorization,
                                                                           services);
}

class HostProcessTest : public ::testing::Test, public HostCalls {
 protected:
  void SetUp() override { fs::create_directories(root_); }

  // Copies the built test bundle `target` into the bundle root (as <root>/<target>).
  fs::path Copy(absl::string_view target) { return CopyTestBundle(target, root_); }

  // Starts a host serving the bundle root, plus `extra` flags. Call it as
  // ASSERT_NO_FATAL_FAILURE(StartHost(...)).
  void StartHost(std::vector<std::string> extra = {}, std::string token = "") {
    std::vector<std::string> args = {"--bundles", root_.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    host_ = std::make_unique<HostProcess>(std::move(args), std::move(token));
    const absl::Status started = host_->Start();
    ASSERT_TRUE(started.ok()) << started;
  }

  HostProcess& host() override { return *host_; }

  const fs::path& root() const { return root_; }
  const TempDir& scratch() const { return scratch_; }

 private:
  TempDir scratch_;
  fs::path root_ = scratch_.path() / "bundles";
  std::unique_ptr<HostProcess> host_;
};

const v1::Bundle* FindBundle(const v1::ListBundlesResponse& list, absl::string_view name) {
  for (const v1::Bundle& b : list.bundles()) {
    if (b.name() == name) return &b;
  }
  return nullptr;
}

std::vector<std::string> BundleNames(const v1::ListBundlesResponse& list) {
  std::vector<std::string> names;
  for (const v1::Bundle& b : list.bundles()) names.push_back(b.name());
  return names;
}

// ---------------------------------------------------------------------------------------
// Reload

TEST_F(HostProcessTest, ReloadV1ToV2IsSeenIdenticallyByThreeConcurrentSubscribers) {
  const fs::path counter = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const v1::HostInfo before = HostInfo();
  auto found_before = FindContract("test.counter@1");
  ASSERT_TRUE(found_before.status.ok()) << ToString(found_before.status);
  EXPECT_EQ(VersionString(found_before.response.provider_version()), "1.0.0");

  // Three subscribers, each on its own connection, all registered before the reload.
  std::vector<std::unique_ptr<v1::PluginHost::Stub>> stubs;
  std::vector<std::unique_ptr<Subscription>> subs;
  for (int i = 0; i < 3; ++i) {
    stubs.push_back(host().NewStub());
    v1::SubscribeReloadPhasesRequest request;
    request.set_include_snapshot(true);
    subs.push_back(std::make_unique<Subscription>(*stubs.back(), request, host().NewContext()));
    std::vector<v1::ReloadPhaseEvent> snapshot;
    auto end = subs.back()->ReadSnapshot(&snapshot);
    ASSERT_TRUE(end.has_value()) << "subscriber " << i << ": " << ToString(subs.back()->Finish());
    EXPECT_THAT(Describe(snapshot), ElementsAre("SNAPSHOT counter")) << "subscriber " << i;
    EXPECT_EQ(end->seq(), before.last_seq()) << "subscriber " << i;
    EXPECT_EQ(end->host_epoch(), host().epoch()) << "subscriber " << i;
  }
  EXPECT_EQ(HostInfo().subscriber_count(), 3u);

  OverwriteArtifact(TestBundleDir("counter_v2"), counter);
  const auto reload = ReloadByName("counter");
  ASSERT_TRUE(reload.status.ok()) << ToString(reload.status);
  const v1::ReloadResponse& response = reload.response;
  EXPECT_EQ(response.outcome(), v1::RELOAD_OUTCOME_RELOADED) << response.ShortDebugString();
  EXPECT_EQ(response.bundle_name(), "counter");
  EXPECT_EQ(response.host_epoch(), host().epoch());
  EXPECT_NE(response.reload_id(), 0u);
  EXPECT_GT(response.registry_revision(), before.registry_revision());
  ASSERT_THAT(Describe(response.events()), ElementsAre("PREPARING counter", "RELOADED counter"));
  EXPECT_THAT(SeqsOf(response.events()), ElementsAre(before.last_seq() + 1, before.last_seq() + 2));
  for (const v1::ReloadPhaseEvent& e : response.events()) {
    EXPECT_EQ(e.kind(), v1::EVENT_KIND_PHASE);
    EXPECT_EQ(e.host_epoch(), host().epoch());
    EXPECT_EQ(e.reload_id(), response.reload_id());
    EXPECT_EQ(e.root_reload_id(), response.reload_id());
    EXPECT_EQ(e.parent_reload_id(), 0u);
    EXPECT_EQ(e.bundle_id(), found_before.response.provider_bundle_id());
  }
  EXPECT_EQ(VersionString(response.events(1).bundle_version()), "2.0.0");

  // Every subscriber got exactly the events of the response, in the same order.
  for (size_t i = 0; i < subs.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("subscriber ", i));
    ExpectSameEvents(subs[i]->ReadPhases(2), EventsOf(response));
  }

  // v2 is live behind the same handle; the registry moved on.
  auto found_after = FindContract("test.counter@1");
  ASSERT_TRUE(found_after.status.ok()) << ToString(found_after.status);
  EXPECT_EQ(VersionString(found_after.response.provider_version()), "2.0.0");
  EXPECT_EQ(VersionString(found_after.response.contract_version()), "1.1.0");
  EXPECT_EQ(found_after.response.index(), found_before.response.index());
  EXPECT_EQ(found_after.response.generation(), found_before.response.generation());
  const v1::HostInfo after = HostInfo();
  EXPECT_EQ(after.registry_revision(), response.registry_revision());
  EXPECT_EQ(after.last_seq(), before.last_seq() + 2);
  const v1::ListBundlesResponse list = ListBundles();
  const v1::Bundle* bundle = FindBundle(list, "counter");
  ASSERT_NE(bundle, nullptr) << list.ShortDebugString();
  EXPECT_EQ(VersionString(bundle->version()), "2.0.0");
  EXPECT_EQ(bundle->reload_count(), 1u);

  // One log line per phase.
  const std::string log = host().Stderr();
  EXPECT_TRUE(HasLogLine(log, {"LOADED", "counter"})) << log;
  EXPECT_TRUE(HasLogLine(log, {"PREPARING", "counter"})) << log;
  EXPECT_TRUE(HasLogLine(log, {"RELOADED", "counter"})) << log;
}

TEST_F(HostProcessTest, ReloadByPathInsideTheRootWorks) {
  const fs::path counter = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  OverwriteArtifact(TestBundleDir("counter_v2"), counter);
  const auto reload = ReloadByPath(counter.string());
  ASSERT_TRUE(reload.status.ok()) << ToString(reload.status);
  EXPECT_EQ(reload.response.outcome(), v1::RELOAD_OUTCOME_RELOADED);
  EXPECT_EQ(reload.response.bundle_name(), "counter");
  // A file inside the bundle directory names the bundle too.
  const auto by_manifest = ReloadByPath((counter / "manifest.toml").string());
  ASSERT_TRUE(by_manifest.status.ok()) << ToString(by_manifest.status);
  EXPECT_EQ(by_manifest.response.outcome(), v1::RELOAD_OUTCOME_RELOADED);
  EXPECT_EQ(by_manifest.response.bundle_name(), "counter");
}

// polyplug's v1/ and v2/ directories of one bundle: Reload with the path of v2/ replaces the
// loaded v1 and the bundle lives in v2/ from then on. (Before, the host answered
// BUNDLE_NOT_FOUND "load it first", and LoadBundle then BUNDLE_ALREADY_LOADED.)
TEST_F(HostProcessTest, ReloadFromASiblingDirectoryOfTheSameBundleMovesItThere) {
  const fs::path v1 = CopyBundle(TestBundleDir("counter_v1"), root() / "counter-v1");
  const fs::path v2 = CopyBundle(TestBundleDir("counter_v2"), root() / "counter-v2");
  ASSERT_NO_FATAL_FAILURE(StartHost());  // loads counter-v1, the first of the two

  const auto load = LoadBundle(v2.string());
  EXPECT_EQ(load.status.error_code(), grpc::StatusCode::ALREADY_EXISTS) << ToString(load.status);
  EXPECT_THAT(load.status.error_message(), HasSubstr("reload it with that path"));

  const auto reload = ReloadByPath(v2.string());
  ASSERT_TRUE(reload.status.ok()) << ToString(reload.status);
  EXPECT_EQ(reload.response.outcome(), v1::RELOAD_OUTCOME_RELOADED);
  ASSERT_EQ(reload.response.events_size(), 2);
  EXPECT_EQ(reload.response.events(1).phase(), v1::PHASE_RELOADED);
  EXPECT_EQ(reload.response.events(1).bundle_version().major(), 2u);
  const v1::ListBundlesResponse list = ListBundles();
  const v1::Bundle* counter = FindBundle(list, "counter");
  ASSERT_NE(counter, nullptr);
  EXPECT_EQ(counter->dir(), v2.string());
  EXPECT_EQ(counter->version().major(), 2u);
  const auto answer = Invoke("test.counter@1", "version", "");
  ASSERT_TRUE(answer.status.ok()) << ToString(answer.status);
  EXPECT_EQ(answer.response.response(), "v2");

  // By name it now reloads from v2/.
  EXPECT_EQ(ReloadOk("counter").events(1).bundle_version().major(), 2u);
}

TEST_F(HostProcessTest, FailedReloadIsAResponseAndKeepsV1Live) {
  const fs::path counter = Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const v1::HostInfo before = HostInfo();

  v1::SubscribeReloadPhasesRequest until_terminal;
  until_terminal.set_until_next_terminal(true);
  auto sub = SubscribeSynced(until_terminal);
  ASSERT_NE(sub, nullptr);

  WriteFile(counter / "libcounter.so", "this is not a shared object\n");
  const auto reload = ReloadByName("counter");
  ASSERT_TRUE(reload.status.ok()) << "a failed reload is a normal response, got "
                                  << ToString(reload.status);
  const v1::ReloadResponse& response = reload.response;
  EXPECT_EQ(response.outcome(), v1::RELOAD_OUTCOME_FAILED) << response.ShortDebugString();
  EXPECT_EQ(response.reason(), v1::FAILURE_REASON_ARTIFACT_NOT_LOADABLE)
      << response.ShortDebugString();
  EXPECT_FALSE(response.message().empty());
  EXPECT_EQ(response.bundle_name(), "counter");
  ASSERT_FALSE(response.events().empty());
  const v1::ReloadPhaseEvent& last = *response.events().rbegin();
  EXPECT_EQ(Describe(last), "FAILED counter");
  EXPECT_EQ(last.reason(), v1::FAILURE_REASON_ARTIFACT_NOT_LOADABLE);
  EXPECT_FALSE(last.message().empty());
  for (const v1::ReloadPhaseEvent& e : response.events()) {
    EXPECT_NE(e.phase(), v1::PHASE_RELOADED) << e.ShortDebugString();
  }

  // v1 is still live and found.
  auto found = FindContract("test.counter@1");
  ASSERT_TRUE(found.status.ok()) << ToString(found.status);
  EXPECT_EQ(VersionString(found.response.provider_version()), "1.0.0");
  const v1::ListBundlesResponse list = ListBundles();
  const v1::Bundle* bundle = FindBundle(list, "counter");
  ASSERT_NE(bundle, nullptr) << list.ShortDebugString();
  EXPECT_EQ(VersionString(bundle->version()), "1.0.0");
  EXPECT_EQ(bundle->reload_count(), 0u);
  EXPECT_EQ(HostInfo().bundle_count(), before.bundle_count());
  EXPECT_TRUE(HasLogLine(host().Stderr(), {"FAILED", "counter", "ARTIFACT_NOT_LOADABLE"}))
      << host().Stderr();
  // A FAILED terminal ends an until_next_terminal stream too.
  const auto streamed = sub->ReadToEnd();
  EXPECT_TRUE(sub->Finish().ok()) << ToString(sub->Finish());
  ExpectSameEvents(streamed, EventsOf(response));
  // The bundle is healthy again: its previous version serves.
  grpc::health::v1::HealthCheckResponse health;
  const grpc::Status health_status = HealthCheck(host().channel(), "counter", &health);
  EXPECT_TRUE(health_status.ok()) << ToString(health_status);
  EXPECT_EQ(health.status(), grpc::health::v1::HealthCheckResponse::SERVING);

  // The host keeps serving: a good rebuild then reloads.
  OverwriteArtifact(TestBundleDir("counter_v2"), counter);
  const v1::ReloadResponse fixed = ReloadOk("counter");
  EXPECT_THAT(Describe(fixed.events()), ElementsAre("PREPARING counter", "RELOADED counter"));
}

TEST_F(HostProcessTest, ReloadCascadesThroughOptedInDependents) {
  Copy("chain_a");
  Copy("chain_b");
  Copy("chain_c");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  std::vector<v1::ReloadPhaseEvent> snapshot;
  v1::SubscribeReloadPhasesRequest request;
  request.set_include_snapshot(true);
  Subscription sub(host().stub(), request, host().NewContext());
  ASSERT_TRUE(sub.ReadSnapshot(&snapshot)) << ToString(sub.Finish());
  EXPECT_THAT(Describe(snapshot),
              UnorderedElementsAre("SNAPSHOT chain_a", "SNAPSHOT chain_b", "SNAPSHOT chain_c"));

  const v1::ReloadResponse response = ReloadOk("chain_a");
  ASSERT_THAT(Describe(response.events()),
              ElementsAre("PREPARING chain_a", "PREPARING chain_b", "PREPARING chain_c",
                          "RELOADED chain_c", "RELOADED chain_b", "RELOADED chain_a"));
  const auto& events = response.events();
  for (int i = 1; i < events.size(); ++i) {
    EXPECT_EQ(events[i].seq(), events[i - 1].seq() + 1) << "seqs of one reload are consecutive";
  }
  // reload ids: a is the primary; b is a cascade of a; c a cascade of b.
  const uint64_t a_id = events[0].reload_id();
  const uint64_t b_id = events[1].reload_id();
  const uint64_t c_id = events[2].reload_id();
  EXPECT_EQ(response.reload_id(), a_id);
  EXPECT_EQ(std::set<uint64_t>({a_id, b_id, c_id}).size(), 3u) << "each bundle has its own id";
  EXPECT_EQ(events[0].parent_reload_id(), 0u);
  EXPECT_EQ(events[1].parent_reload_id(), a_id);
  EXPECT_EQ(events[2].parent_reload_id(), b_id);
  EXPECT_EQ(events[3].reload_id(), c_id);
  EXPECT_EQ(events[4].reload_id(), b_id);
  EXPECT_EQ(events[5].reload_id(), a_id);
  for (const v1::ReloadPhaseEvent& e : events) EXPECT_EQ(e.root_reload_id(), a_id);

  ExpectSameEvents(sub.ReadPhases(6), EventsOf(response));
  const std::string log = host().Stderr();
  EXPECT_TRUE(HasLogLine(log, {"RELOADED", "chain_c"})) << log;
}

// ---------------------------------------------------------------------------------------
// Subscriptions: resume, stale cursors, slow subscribers

TEST_F(HostProcessTest, ResumeAfterDisconnectDeliversExactlyTheMissedEvents) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());

  v1::ReloadResponse first_reload;
  v1::ReloadPhaseEvent seen;
  {
    auto sub = SubscribeSynced();
    ASSERT_NE(sub, nullptr);
    first_reload = ReloadOk("counter");
    ASSERT_THAT(first_reload.events(), SizeIs(2));
    auto event = sub->NextPhase();
    ASSERT_TRUE(event.has_value()) << ToString(sub->Finish());
    seen = *event;
    EXPECT_THAT(seen, ProtoEq(first_reload.events(0)));
    sub->Cancel();
    EXPECT_EQ(sub->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  const v1::ReloadResponse second = ReloadOk("counter");
  const v1::ReloadResponse third = ReloadOk("counter");

  std::vector<v1::ReloadPhaseEvent> missed = {first_reload.events(1)};
  missed.insert(missed.end(), second.events().begin(), second.events().end());
  missed.insert(missed.end(), third.events().begin(), third.events().end());
  ASSERT_THAT(missed, SizeIs(5));

  v1::SubscribeReloadPhasesRequest request;
  request.mutable_resume_after()->set_host_epoch(seen.host_epoch());
  request.mutable_resume_after()->set_seq(seen.seq());
  request.set_max_events(static_cast<uint32_t>(missed.size()));
  auto resumed = Subscribe(request);
  const std::vector<v1::ReloadPhaseEvent> got = resumed->ReadToEnd();
  EXPECT_TRUE(resumed->Finish().ok()) << ToString(resumed->Finish());
  ExpectSameEvents(got, missed);
}

// The host hands events out on several lanes (one per CPU); each stream keeps its lane,
// so streams that come and go between back-to-back reloads must not reorder or lose any.
TEST_F(HostProcessTest, ManySubscribersOnSeveralConnectionsGetEveryEventInOrder) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  std::vector<std::unique_ptr<v1::PluginHost::Stub>> stubs;
  for (int i = 0; i < 4; ++i) stubs.push_back(host().NewStub());
  std::vector<std::unique_ptr<Subscription>> subs;
  for (size_t i = 0; i < 200; ++i) {
    subs.push_back(SubscribeSynced({}, stubs[i % stubs.size()].get()));
    ASSERT_NE(subs.back(), nullptr) << "subscriber " << i;
  }

  std::vector<v1::ReloadPhaseEvent> first, second;
  for (int i = 0; i < 5; ++i) {
    const v1::ReloadResponse r = ReloadOk("counter");
    first.insert(first.end(), r.events().begin(), r.events().end());
  }
  // Every third subscriber leaves and three join, while the hand-out may still be running.
  for (size_t i = 0; i < subs.size(); i += 3) {
    subs[i]->Cancel();
    EXPECT_EQ(subs[i]->Finish().error_code(), grpc::StatusCode::CANCELLED) << "subscriber " << i;
    subs[i].reset();
  }
  for (int i = 0; i < 3; ++i) {
    subs.push_back(SubscribeSynced({}, stubs[i % stubs.size()].get()));
    ASSERT_NE(subs.back(), nullptr) << "joiner " << i;
  }
  for (int i = 0; i < 5; ++i) {
    const v1::ReloadResponse r = ReloadOk("counter");
    second.insert(second.end(), r.events().begin(), r.events().end());
  }
  std::vector<v1::ReloadPhaseEvent> all = first;
  all.insert(all.end(), second.begin(), second.end());
  ASSERT_THAT(all, SizeIs(20));

  for (size_t i = 0; i < subs.size(); ++i) {
    if (subs[i] == nullptr) continue;
    SCOPED_TRACE(absl::StrCat("subscriber ", i));
    const std::vector<v1::ReloadPhaseEvent>& expected = i < 200 ? all : second;
    ExpectSameEvents(subs[i]->ReadPhases(expected.size()), expected);
  }
}

TEST_F(HostProcessTest, ResumeWithNothingMissedWaitsForTheNextEvent) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const v1::ReloadResponse reload = ReloadOk("counter");
  ASSERT_FALSE(reload.events().empty());
  // Resuming at the newest seq yields nothing old; with include_snapshot nothing would
  // tell us the host registered the stream, so end it with the next reload's events.
  v1::SubscribeReloadPhasesRequest request;
  request.mutable_resume_after()->set_host_epoch(host().epoch());
  request.mutable_resume_after()->set_seq(reload.events().rbegin()->seq());
  request.set_max_events(2);
  request.mutable_heartbeat_interval()->set_nanos(100'000'000);
  auto sub = Subscribe(request);
  // The first progress marker proves the stream is live and at the newest seq.
  auto progress = sub->Next();
  ASSERT_TRUE(progress.has_value()) << ToString(sub->Finish());
  EXPECT_EQ(Describe(*progress), "PROGRESS");
  EXPECT_EQ(progress->seq(), reload.events().rbegin()->seq());
  const v1::ReloadResponse next = ReloadOk("counter");
  std::vector<v1::ReloadPhaseEvent> phases;
  for (const v1::ReloadPhaseEvent& e : sub->ReadToEnd()) {
    if (e.kind() == v1::EVENT_KIND_PHASE) phases.push_back(e);
  }
  EXPECT_TRUE(sub->Finish().ok()) << ToString(sub->Finish());
  ExpectSameEvents(phases, EventsOf(next));
}

TEST_F(HostProcessTest, CursorThatFellOutOfTheJournalGetsOutOfRange) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost({"--journal-size", "4"}));
  const v1::HostInfo start = HostInfo();
  EXPECT_EQ(start.journal_capacity(), 4u);
  const uint64_t old_seq = start.last_seq();
  for (int i = 0; i < 3; ++i) ReloadOk("counter");  // 6 events through a ring of 4
  const v1::HostInfo now = HostInfo();
  EXPECT_EQ(now.last_seq(), old_seq + 6);
  ASSERT_GT(now.earliest_seq(), old_seq + 1) << now.ShortDebugString();
  EXPECT_EQ(now.earliest_seq(), now.last_seq() - 3) << now.ShortDebugString();

  {
    v1::SubscribeReloadPhasesRequest request;
    request.mutable_resume_after()->set_host_epoch(host().epoch());
    request.mutable_resume_after()->set_seq(old_seq);
    auto sub = Subscribe(request);
    const auto got = sub->ReadToEnd();
    EXPECT_THAT(Describe(got), IsEmpty()) << "no event may be delivered across a gap";
    const grpc::Status status = sub->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::OUT_OF_RANGE) << ToString(status);
    EXPECT_TRUE(ContainsNumber(status.error_message(), now.earliest_seq()))
        << "the message should name the earliest available seq " << now.earliest_seq() << ": "
        << ToString(status);
  }
  {
    // The oldest cursor still covered works and yields the whole ring.
    v1::SubscribeReloadPhasesRequest request;
    request.mutable_resume_after()->set_host_epoch(host().epoch());
    request.mutable_resume_after()->set_seq(now.earliest_seq() - 1);
    request.set_max_events(4);
    auto sub = Subscribe(request);
    const auto got = sub->ReadToEnd();
    EXPECT_TRUE(sub->Finish().ok()) << ToString(sub->Finish());
    EXPECT_THAT(SeqsOf(got), ElementsAre(now.earliest_seq(), now.earliest_seq() + 1,
                                         now.earliest_seq() + 2, now.earliest_seq() + 3));
  }
  {
    // A cursor ahead of the journal is refused, not silently skipped to.
    v1::SubscribeReloadPhasesRequest request;
    request.mutable_resume_after()->set_host_epoch(host().epoch());
    request.mutable_resume_after()->set_seq(now.last_seq() + 10);
    auto sub = Subscribe(request);
    const auto got = sub->ReadToEnd();
    EXPECT_THAT(Describe(got), IsEmpty());
    const grpc::Status status = sub->Finish();
    EXPECT_FALSE(status.ok());
    EXPECT_TRUE(status.error_code() == grpc::StatusCode::OUT_OF_RANGE ||
                status.error_code() == grpc::StatusCode::INVALID_ARGUMENT)
        << ToString(status);
  }
  {
    // A cursor from another host epoch (the host restarted).
    uint64_t other_epoch = host().epoch() + 1;
    if (other_epoch == 0) other_epoch = 1;
    v1::SubscribeReloadPhasesRequest request;
    request.mutable_resume_after()->set_host_epoch(other_epoch);
    request.mutable_resume_after()->set_seq(now.last_seq());
    auto sub = Subscribe(request);
    const auto got = sub->ReadToEnd();
    EXPECT_THAT(Describe(got), IsEmpty());
    const grpc::Status status = sub->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::OUT_OF_RANGE) << ToString(status);
    EXPECT_TRUE(ContainsNumber(status.error_message(), now.earliest_seq()))
        << "the message should name the earliest available seq " << now.earliest_seq() << ": "
        << ToString(status);
  }
}

TEST_F(HostProcessTest, SubscriberThatNeverReadsDoesNotBlockReloads) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());

  // A connection with a tiny flow-control window, so the host's writes to it really stall.
  grpc::ChannelArguments narrow;
  narrow.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  narrow.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 1024);
  auto stalled_stub = host().NewStub(narrow);
  // One stream that is never read at all...
  Subscription never_read(*stalled_stub, v1::SubscribeReloadPhasesRequest(), host().NewContext());
  // ...and one read through its snapshot (so it is surely registered), then left alone.
  v1::SubscribeReloadPhasesRequest request;
  request.set_max_events(2 * kReloadsThatMustNotBlock);
  auto stalled = SubscribeSynced(request, stalled_stub.get());
  ASSERT_NE(stalled, nullptr);
  const uint64_t start_seq = HostInfo().last_seq();

  for (size_t i = 0; i < kReloadsThatMustNotBlock; ++i) {
    const auto reload = ReloadByName("counter");
    ASSERT_TRUE(reload.status.ok()) << "reload " << i << ": " << ToString(reload.status);
    ASSERT_EQ(reload.response.outcome(), v1::RELOAD_OUTCOME_RELOADED)
        << "reload " << i << ": " << reload.response.ShortDebugString();
  }
  EXPECT_EQ(HostInfo().last_seq(), start_seq + 2 * kReloadsThatMustNotBlock);

  // A fresh subscriber is served normally.
  auto fresh = SubscribeSynced();
  ASSERT_NE(fresh, nullptr);
  const v1::ReloadResponse next = ReloadOk("counter");
  ExpectSameEvents(fresh->ReadPhases(2), EventsOf(next));

  // The stalled stream, read now, has either every event in order or an explicit
  // OUT_OF_RANGE after a gap-free prefix: never a silent gap.
  const std::vector<v1::ReloadPhaseEvent> backlog = stalled->ReadToEnd();
  const grpc::Status status = stalled->Finish();
  for (size_t i = 0; i < backlog.size(); ++i) {
    ASSERT_EQ(backlog[i].kind(), v1::EVENT_KIND_PHASE) << backlog[i].ShortDebugString();
    ASSERT_EQ(backlog[i].seq(), start_seq + 1 + i) << "event " << i;
  }
  if (status.ok()) {
    EXPECT_EQ(backlog.size(), 2 * kReloadsThatMustNotBlock);
  } else {
    EXPECT_EQ(status.error_code(), grpc::StatusCode::OUT_OF_RANGE) << ToString(status);
  }
  never_read.Cancel();
}

TEST_F(HostProcessTest, UntilNextTerminalEndsTheStreamAfterTheReload) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  v1::SubscribeReloadPhasesRequest request;
  request.set_until_next_terminal(true);
  auto sub = SubscribeSynced(request);
  ASSERT_NE(sub, nullptr);
  const v1::ReloadResponse reload = ReloadOk("counter");
  const auto got = sub->ReadToEnd();
  const grpc::Status status = sub->Finish();
  EXPECT_TRUE(status.ok()) << ToString(status);
  ExpectSameEvents(got, EventsOf(reload));
}

TEST_F(HostProcessTest, UntilNextTerminalWaitsForThePrimaryOfACascade) {
  Copy("chain_a");
  Copy("chain_b");
  Copy("chain_c");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  v1::SubscribeReloadPhasesRequest all;
  all.set_until_next_terminal(true);
  auto sub_all = SubscribeSynced(all);
  ASSERT_NE(sub_all, nullptr);
  // Filtered to chain_b: its cascade terminal does not end the stream; only a primary
  // reload of chain_b does.
  v1::SubscribeReloadPhasesRequest only_b;
  only_b.set_until_next_terminal(true);
  only_b.add_bundle_names("chain_b");
  auto sub_b = SubscribeSynced(only_b);
  ASSERT_NE(sub_b, nullptr);

  const v1::ReloadResponse cascade = ReloadOk("chain_a");
  const auto got_all = sub_all->ReadToEnd();
  EXPECT_TRUE(sub_all->Finish().ok()) << ToString(sub_all->Finish());
  ExpectSameEvents(got_all, EventsOf(cascade));

  const v1::ReloadResponse primary_b = ReloadOk("chain_b");
  EXPECT_THAT(Describe(primary_b.events()), ElementsAre("PREPARING chain_b", "PREPARING chain_c",
                                                        "RELOADED chain_c", "RELOADED chain_b"));
  const auto got_b = sub_b->ReadToEnd();
  EXPECT_TRUE(sub_b->Finish().ok()) << ToString(sub_b->Finish());
  EXPECT_THAT(Describe(got_b), ElementsAre("PREPARING chain_b", "RELOADED chain_b",
                                           "PREPARING chain_b", "RELOADED chain_b"));
  ASSERT_THAT(got_b, SizeIs(4));
  EXPECT_EQ(got_b[3].seq(), primary_b.events().rbegin()->seq());
  EXPECT_EQ(got_b[3].parent_reload_id(), 0u);
}

TEST_F(HostProcessTest, HeartbeatCarriesTheCurrentSeq) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const v1::HostInfo info = HostInfo();
  v1::SubscribeReloadPhasesRequest request;
  request.mutable_heartbeat_interval()->set_nanos(100'000'000);
  auto sub = Subscribe(request);
  auto progress = sub->Next();
  ASSERT_TRUE(progress.has_value()) << ToString(sub->Finish());
  EXPECT_EQ(progress->kind(), v1::EVENT_KIND_PROGRESS) << progress->ShortDebugString();
  EXPECT_EQ(progress->seq(), info.last_seq());
  EXPECT_EQ(progress->host_epoch(), host().epoch());

  // After a reload the markers carry the new seq.
  const v1::ReloadResponse reload = ReloadOk("counter");
  ExpectSameEvents(sub->ReadPhases(2), EventsOf(reload));
  auto later = sub->Next();
  ASSERT_TRUE(later.has_value()) << ToString(sub->Finish());
  EXPECT_EQ(later->kind(), v1::EVENT_KIND_PROGRESS) << later->ShortDebugString();
  EXPECT_EQ(later->seq(), reload.events().rbegin()->seq());
}

// ---------------------------------------------------------------------------------------
// Security and bad requests

TEST_F(HostProcessTest, AuthTokenIsRequiredCheckedAndAccepted) {
  Copy("counter_v1");
  const fs::path token_file = scratch() / "token";
  WriteFile(token_file, "s3cret-token\n");
  ASSERT_NO_FATAL_FAILURE(StartHost({"--auth-token-file", token_file.string()}, "s3cret-token"));

  auto call_info = [&](const std::string& authorization) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + kCallDeadline);
    if (!authorization.empty()) context.AddMetadata("authorization", authorization);
    v1::HostInfo info;
    return host().stub().GetHostInfo(&context, v1::GetHostInfoRequest(), &info);
  };
  EXPECT_EQ(call_info("").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(call_info("Bearer wrong").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(call_info("Bearer s3cret-toke").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(call_info("Bearer s3cret-token-and-more").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(call_info("s3cret-token").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  const grpc::Status accepted = call_info("Bearer s3cret-token");
  EXPECT_TRUE(accepted.ok()) << ToString(accepted);

  {
    // A reload without the token does nothing.
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + kCallDeadline);
    v1::ReloadRequest request;
    request.set_name("counter");
    v1::ReloadResponse response;
    const grpc::Status status = host().stub().Reload(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << ToString(status);
    EXPECT_EQ(HostInfo().last_seq(), host().info_at_start().last_seq());
  }
  {
    // Nor does a stream.
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() + kCallDeadline);
    Subscription sub(host().stub(), v1::SubscribeReloadPhasesRequest(), std::move(context));
    EXPECT_THAT(Describe(sub.ReadToEnd()), IsEmpty());
    EXPECT_EQ(sub.Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED)
        << ToString(sub.Finish());
  }
  // With the token (HostProcess adds it) everything works.
  const v1::ReloadResponse reload = ReloadOk("counter");
  EXPECT_THAT(reload.events(), SizeIs(2));

  // Health needs no token.
  for (const std::string service : {"", "counter"}) {
    grpc::health::v1::HealthCheckResponse response;
    const grpc::Status status = HealthCheck(host().channel(), service, &response);
    EXPECT_TRUE(status.ok()) << "service \"" << service << "\": " << ToString(status);
    EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING)
        << "service \"" << service << "\"";
  }
}

TEST_F(HostProcessTest, AuthRejectionCarriesTheReasonTokenAndTrailer) {
  Copy("counter_v1");
  const fs::path token_file = scratch() / "token";
  WriteFile(token_file, "s3cret-token\n");
  ASSERT_NO_FATAL_FAILURE(StartHost({"--auth-token-file", token_file.string()}, "s3cret-token"));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kCallDeadline);
  v1::HostInfo info;
  const grpc::Status status = host().stub().GetHostInfo(&context, v1::GetHostInfoRequest(), &info);
  ASSERT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << ToString(status);
  const std::string token = ReasonTokenOf(status);
  EXPECT_FALSE(token.empty()) << "no [TOKEN] in " << ToString(status);
  EXPECT_EQ(TrailingReasonOf(context), token)
      << "the polyplug-reason trailer should repeat the token of " << ToString(status);
}

TEST_F(HostProcessTest, AuthTokenIsRequiredForServerReflection) {
  Copy("counter_v1");
  const fs::path token_file = scratch() / "token";
  WriteFile(token_file, "s3cret-token\n");
  ASSERT_NO_FATAL_FAILURE(StartHost({"--auth-token-file", token_file.string()}, "s3cret-token"));
  // "every RPC but health needs the token": reflection included.
  std::vector<std::string> services;
  grpc::Status status = ListServicesV1(host().channel(), "", &services);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << "v1 without a token: " << ToString(status) << ", listed " << services.size();
  services.clear();
  status = ListServicesV1Alpha(host().channel(), "", &services);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << "v1alpha without a token: " << ToString(status) << ", listed " << services.size();
  services.clear();
  status = ListServicesV1(host().channel(), "Bearer s3cret-token", &services);
  EXPECT_TRUE(status.ok()) << ToString(status);
  EXPECT_THAT(services, ::testing::Contains("polyplug.host.v1.PluginHost"));
  services.clear();
  status = ListServicesV1Alpha(host().channel(), "Bearer s3cret-token", &services);
  EXPECT_TRUE(status.ok()) << ToString(status);
  EXPECT_THAT(services, ::testing::Contains("polyplug.host.v1.PluginHost"));
}

TEST_F(HostProcessTest, SubscriberLimitIsEnforcedAndFreedOnDisconnect) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost({"--max-subscribers", "2"}));
  auto first = SubscribeSynced();
  ASSERT_NE(first, nullptr);
  auto second = SubscribeSynced();
  ASSERT_NE(second, nullptr);
  {
    auto third = Subscribe(v1::SubscribeReloadPhasesRequest());
    EXPECT_THAT(Describe(third->ReadToEnd()), IsEmpty());
    const grpc::Status status = third->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << ToString(status);
  }
  // A client that goes away frees its slot.
  first->Cancel();
  EXPECT_EQ(first->Finish().error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_TRUE(WaitForSubscriberCount(1)) << HostInfo().ShortDebugString();
  auto replacement = SubscribeSynced();
  ASSERT_NE(replacement, nullptr);
  const v1::ReloadResponse reload = ReloadOk("counter");
  ExpectSameEvents(replacement->ReadPhases(2), EventsOf(reload));
  ExpectSameEvents(second->ReadPhases(2), EventsOf(reload));
}

TEST_F(HostProcessTest, PathsOutsideTheBundleRootsArePermissionDenied) {
  Copy("counter_v1");
  const fs::path outside = scratch() / "outside";
  CopyBundle(TestBundleDir("chain_a"), outside);
  ASSERT_NO_FATAL_FAILURE(StartHost());
  // Created after start, so that the start-up scan does not see it.
  fs::create_directory_symlink(outside, root() / "escape");

  auto expect_denied = [](const auto& result, const std::string& what) {
    EXPECT_EQ(result.status.error_code(), grpc::StatusCode::PERMISSION_DENIED)
        << what << ": " << ToString(result.status);
    EXPECT_EQ(ReasonTokenOf(result.status), "PERMISSION_DENIED")
        << what << ": " << ToString(result.status);
    EXPECT_EQ(result.trailing_reason, "PERMISSION_DENIED") << what;
  };
  expect_denied(ReloadByPath("/etc"), "Reload /etc");
  expect_denied(ReloadByPath(root().string() + "/../outside"), "Reload root/../outside");
  expect_denied(LoadBundle(root().string() + "/../outside"), "LoadBundle root/../outside");
  expect_denied(LoadBundle((root() / "escape").string()), "LoadBundle through a symlink");
  expect_denied(LoadBundle("/etc"), "LoadBundle /etc");
  expect_denied(LoadBundle("../outside"), "LoadBundle ../outside (relative)");
  expect_denied(ReloadByPath("../outside"), "Reload ../outside (relative)");
  expect_denied(ReloadByPath((root() / "counter_v1" / ".." / ".." / "outside").string()),
                "Reload root/counter_v1/../../outside");
  expect_denied(LoadBundle(outside.string()), "LoadBundle outside");

  EXPECT_THAT(BundleNames(ListBundles()), ElementsAre("counter"));
  EXPECT_EQ(FindContract("chain.a@1").status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(HostInfo().last_seq(), host().info_at_start().last_seq());
}

TEST_F(HostProcessTest, UnknownBundleIsNotFound) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const auto reload = ReloadByName("no_such_bundle");
  EXPECT_EQ(reload.status.error_code(), grpc::StatusCode::NOT_FOUND) << ToString(reload.status);
  EXPECT_EQ(ReasonTokenOf(reload.status), "BUNDLE_NOT_FOUND") << ToString(reload.status);
  EXPECT_EQ(reload.trailing_reason, "BUNDLE_NOT_FOUND");
  EXPECT_TRUE(absl::StrContains(reload.status.error_message(), "no_such_bundle"))
      << ToString(reload.status);

  const auto unload = UnloadBundle("no_such_bundle", false);
  EXPECT_EQ(unload.status.error_code(), grpc::StatusCode::NOT_FOUND) << ToString(unload.status);
  EXPECT_EQ(ReasonTokenOf(unload.status), "BUNDLE_NOT_FOUND") << ToString(unload.status);

  const auto find = FindContract("no.such.contract@1");
  EXPECT_EQ(find.status.error_code(), grpc::StatusCode::NOT_FOUND) << ToString(find.status);
  EXPECT_EQ(ReasonTokenOf(find.status), "CONTRACT_NOT_FOUND") << ToString(find.status);
  EXPECT_EQ(find.trailing_reason, "CONTRACT_NOT_FOUND");

  // An empty request is a bad request, not a crash.
  const auto empty = Reload(v1::ReloadRequest());
  EXPECT_EQ(empty.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << ToString(empty.status);
  EXPECT_EQ(ReasonTokenOf(empty.status), "INVALID_ARGUMENT") << ToString(empty.status);
  EXPECT_THAT(BundleNames(ListBundles()), ElementsAre("counter"));
}

TEST_F(HostProcessTest, NoHotReloadRefusesReload) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost({"--no-hot-reload"}));
  EXPECT_FALSE(host().info_at_start().hot_reload_enabled());
  const auto reload = ReloadByName("counter");
  EXPECT_EQ(reload.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << ToString(reload.status);
  EXPECT_EQ(ReasonTokenOf(reload.status), "HOT_RELOAD_DISABLED") << ToString(reload.status);
  EXPECT_TRUE(absl::StartsWith(reload.status.error_message(), "[HOT_RELOAD_DISABLED]"))
      << ToString(reload.status);
  EXPECT_EQ(reload.trailing_reason, "HOT_RELOAD_DISABLED");
  EXPECT_EQ(HostInfo().last_seq(), host().info_at_start().last_seq());
  EXPECT_TRUE(FindContract("test.counter@1").status.ok());
}

// ---------------------------------------------------------------------------------------
// Shutdown

TEST_F(HostProcessTest, SigtermEndsStreamsWithUnavailableAndExitsZero) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto sub = SubscribeSynced();
  ASSERT_NE(sub, nullptr);
  host().Kill(SIGTERM);
  const auto rest = sub->ReadToEnd();
  EXPECT_THAT(Describe(rest), IsEmpty());
  const grpc::Status status = sub->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << ToString(status);
  const int exit_status = host().WaitExit();
  EXPECT_TRUE(WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0)
      << DescribeWaitStatus(exit_status) << "; stderr:\n"
      << host().Stderr();
  EXPECT_FALSE(fs::exists(host().dir() / "host.sock")) << "the socket should be removed";
}

TEST_F(HostProcessTest, SigintExitsZero) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  host().Kill(SIGINT);
  const int exit_status = host().WaitExit();
  EXPECT_TRUE(WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0)
      << DescribeWaitStatus(exit_status) << "; stderr:\n"
      << host().Stderr();
}

// ---------------------------------------------------------------------------------------
// Introspection and load/unload

TEST_F(HostProcessTest, GetHostInfoListBundlesAndListContractsDescribeTheHost) {
  const fs::path counter = Copy("counter_v1");
  Copy("chain_a");
  Copy("chain_b");
  ASSERT_NO_FATAL_FAILURE(StartHost({"--journal-size", "64"}));

  const v1::HostInfo info = HostInfo();
  EXPECT_FALSE(info.version().empty());
  EXPECT_NE(info.host_epoch(), 0u);
  EXPECT_EQ(info.host_epoch(), host().epoch());
  EXPECT_GT(info.registry_revision(), 0u);
  EXPECT_THAT(info.bundle_roots(), ElementsAre(root().string()));
  EXPECT_TRUE(info.hot_reload_enabled());
  EXPECT_TRUE(info.has_uptime());
  EXPECT_EQ(info.bundle_count(), 3u);
  EXPECT_EQ(info.contract_count(), 3u);
  EXPECT_EQ(info.subscriber_count(), 0u);
  EXPECT_EQ(info.last_seq(), 3u) << "one LOADED event per bundle";
  EXPECT_EQ(info.earliest_seq(), 1u);
  EXPECT_EQ(info.journal_capacity(), 64u);
  EXPECT_THAT(info.listen_addresses(), ElementsAre(host().address()));

  const v1::ListBundlesResponse list = ListBundles();
  EXPECT_THAT(BundleNames(list), ElementsAre("chain_a", "chain_b", "counter"));
  EXPECT_EQ(list.host_epoch(), host().epoch());
  EXPECT_EQ(list.registry_revision(), info.registry_revision());
  const v1::Bundle* c = FindBundle(list, "counter");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(VersionString(c->version()), "1.0.0");
  EXPECT_EQ(fs::path(c->dir()), counter);
  EXPECT_EQ(c->loader(), "native");
  EXPECT_THAT(c->provides(), ElementsAre("test.counter@1"));
  EXPECT_FALSE(c->needs_reinit_on_dep_reload());
  EXPECT_EQ(c->reload_count(), 0u);
  ASSERT_THAT(c->contracts(), SizeIs(1));
  EXPECT_EQ(c->contracts(0).contract_name(), "test.counter");
  EXPECT_TRUE(c->contracts(0).invocable());
  const v1::Bundle* b = FindBundle(list, "chain_b");
  ASSERT_NE(b, nullptr);
  EXPECT_TRUE(b->needs_reinit_on_dep_reload());
  EXPECT_THAT(b->declared_dependencies(), SizeIs(1));

  const auto contracts = ListContracts();
  ASSERT_TRUE(contracts.status.ok()) << ToString(contracts.status);
  std::vector<std::string> names;
  for (const v1::ContractHandle& h : contracts.response.contracts()) {
    names.push_back(h.contract_name());
    EXPECT_EQ(h.host_epoch(), host().epoch());
    EXPECT_NE(h.contract_id(), 0u);
    EXPECT_FALSE(h.provider_bundle_name().empty());
  }
  EXPECT_THAT(names, UnorderedElementsAre("chain.a", "chain.b", "test.counter"));
  std::vector<uint32_t> indexes;
  for (const v1::ContractHandle& h : contracts.response.contracts()) indexes.push_back(h.index());
  EXPECT_TRUE(std::is_sorted(indexes.begin(), indexes.end())) << "registry slot order";

  const auto only_counter = ListContracts("counter");
  ASSERT_TRUE(only_counter.status.ok()) << ToString(only_counter.status);
  ASSERT_THAT(only_counter.response.contracts(), SizeIs(1));
  const v1::ContractHandle& listed = only_counter.response.contracts(0);
  EXPECT_EQ(listed.provider_bundle_name(), "counter");
  EXPECT_EQ(VersionString(listed.provider_version()), "1.0.0");
  const auto unknown = ListContracts("no_such_bundle");
  EXPECT_EQ(unknown.status.error_code(), grpc::StatusCode::NOT_FOUND) << ToString(unknown.status);

  // FindContract by "name@major", by name plus major and by id agree with the listing.
  const auto by_name = FindContract("test.counter@1");
  ASSERT_TRUE(by_name.status.ok()) << ToString(by_name.status);
  v1::FindContractRequest split;
  split.set_name("test.counter");
  split.set_major(1);
  const auto by_split = FindContract(split);
  ASSERT_TRUE(by_split.status.ok()) << ToString(by_split.status);
  v1::FindContractRequest by_id_request;
  by_id_request.set_contract_id(listed.contract_id());
  const auto by_id = FindContract(by_id_request);
  ASSERT_TRUE(by_id.status.ok()) << ToString(by_id.status);
  for (const auto* found : {&by_name.response, &by_split.response, &by_id.response}) {
    EXPECT_EQ(found->contract_id(), listed.contract_id());
    EXPECT_EQ(found->index(), listed.index());
    EXPECT_EQ(found->generation(), listed.generation());
    EXPECT_EQ(found->provider_bundle_name(), "counter");
    EXPECT_EQ(found->host_epoch(), host().epoch());
  }
  v1::FindContractRequest in_bundle = split;
  in_bundle.set_bundle("chain_a");
  EXPECT_EQ(FindContract(in_bundle).status.error_code(), grpc::StatusCode::NOT_FOUND);
  v1::FindContractRequest too_new = split;
  too_new.set_min_version(2);
  EXPECT_EQ(FindContract(too_new).status.error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(HostProcessTest, LoadAndUnloadBundlesRoundTrip) {
  Copy("chain_a");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const v1::HostInfo start = HostInfo();
  auto sub = SubscribeSynced();
  ASSERT_NE(sub, nullptr);
  const auto handle_a = FindContract("chain.a@1");
  ASSERT_TRUE(handle_a.status.ok()) << ToString(handle_a.status);

  // Load a bundle that appeared in the root after start.
  const fs::path chain_b = Copy("chain_b");
  const auto loaded = LoadBundle(chain_b.string());
  ASSERT_TRUE(loaded.status.ok()) << ToString(loaded.status);
  EXPECT_EQ(loaded.response.bundle().name(), "chain_b");
  EXPECT_EQ(VersionString(loaded.response.bundle().version()), "1.0.0");
  EXPECT_EQ(Describe(loaded.response.event()), "LOADED chain_b");
  EXPECT_EQ(loaded.response.event().seq(), start.last_seq() + 1);
  EXPECT_GT(loaded.response.registry_revision(), start.registry_revision());
  EXPECT_TRUE(FindContract("chain.b@1").status.ok());

  const auto again = LoadBundle(chain_b.string());
  EXPECT_EQ(again.status.error_code(), grpc::StatusCode::ALREADY_EXISTS) << ToString(again.status);
  EXPECT_EQ(ReasonTokenOf(again.status), "BUNDLE_ALREADY_LOADED") << ToString(again.status);

  // A bundle whose init fails is an error naming the reason; the host keeps serving.
  const fs::path init_fails = Copy("init_fails");
  const auto failed = LoadBundle(init_fails.string());
  EXPECT_FALSE(failed.status.ok());
  EXPECT_EQ(ReasonTokenOf(failed.status), "INIT_FAILED") << ToString(failed.status);
  EXPECT_EQ(failed.trailing_reason, "INIT_FAILED");

  // Unload refuses while chain_b depends on chain_a, unless cascading.
  const auto refused = UnloadBundle("chain_a", false);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << ToString(refused.status);
  EXPECT_EQ(ReasonTokenOf(refused.status), "DEPENDENCY_IN_USE") << ToString(refused.status);
  EXPECT_THAT(BundleNames(ListBundles()), ElementsAre("chain_a", "chain_b"));

  const auto unloaded = UnloadBundle("chain_a", true);
  ASSERT_TRUE(unloaded.status.ok()) << ToString(unloaded.status);
  EXPECT_THAT(unloaded.response.unloaded(), ElementsAre("chain_b", "chain_a"));
  EXPECT_THAT(Describe(unloaded.response.events()),
              ElementsAre("UNLOADING chain_b", "UNLOADING chain_a"));
  EXPECT_GT(unloaded.response.registry_revision(), loaded.response.registry_revision());
  EXPECT_EQ(FindContract("chain.a@1").status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(BundleNames(ListBundles()), IsEmpty());
  EXPECT_EQ(HostInfo().bundle_count(), 0u);
  EXPECT_EQ(HostInfo().contract_count(), 0u);
  grpc::health::v1::HealthCheckResponse health;
  EXPECT_EQ(HealthCheck(host().channel(), "chain_a", &health).error_code(),
            grpc::StatusCode::NOT_FOUND)
      << "an unloaded bundle is no longer a health service";

  // Loading chain_a again gives a fresh handle: the old one went stale.
  const auto reloaded = LoadBundle((root() / "chain_a").string());
  ASSERT_TRUE(reloaded.status.ok()) << ToString(reloaded.status);
  const auto handle_a2 = FindContract("chain.a@1");
  ASSERT_TRUE(handle_a2.status.ok()) << ToString(handle_a2.status);
  EXPECT_FALSE(handle_a2.response.index() == handle_a.response.index() &&
               handle_a2.response.generation() == handle_a.response.generation())
      << "old " << handle_a.response.ShortDebugString() << "\nnew "
      << handle_a2.response.ShortDebugString();

  // The subscriber saw every operation, in the order they happened.
  std::vector<v1::ReloadPhaseEvent> expected = {loaded.response.event()};
  expected.insert(expected.end(), unloaded.response.events().begin(),
                  unloaded.response.events().end());
  expected.push_back(reloaded.response.event());
  const auto seen = sub->ReadPhases(expected.size());
  // init_fails may or may not announce itself; compare the events of the bundles that loaded.
  std::vector<v1::ReloadPhaseEvent> seen_chain;
  for (const v1::ReloadPhaseEvent& e : seen) {
    if (e.bundle_name() != "init_fails") seen_chain.push_back(e);
  }
  while (seen_chain.size() < expected.size()) {
    auto e = sub->NextPhase();
    if (!e) break;
    if (e->bundle_name() != "init_fails") seen_chain.push_back(*e);
  }
  ExpectSameEvents(seen_chain, expected);
}

TEST_F(HostProcessTest, ConcurrentReloadsAreSerialized) {
  Copy("counter_v1");
  Copy("chain_a");
  Copy("chain_b");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto sub = SubscribeSynced();
  ASSERT_NE(sub, nullptr);
  const uint64_t start_seq = HostInfo().last_seq();

  constexpr int kThreads = 4;
  constexpr int kReloadsPerThread = 10;
  std::vector<std::vector<CallResult<v1::ReloadResponse>>> results(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([this, t, &results] {
      // Each thread has its own connection.
      auto stub = host().NewStub();
      for (int i = 0; i < kReloadsPerThread; ++i) {
        v1::ReloadRequest request;
        request.set_name(t % 2 == 0 ? "counter" : "chain_a");
        CallResult<v1::ReloadResponse> result;
        auto context = host().NewContext();
        result.status = stub->Reload(context.get(), request, &result.response);
        results[t].push_back(std::move(result));
      }
    });
  }
  for (std::thread& thread : threads) thread.join();

  size_t total_events = 0;
  std::set<uint64_t> seqs;
  for (int t = 0; t < kThreads; ++t) {
    for (const auto& result : results[t]) {
      ASSERT_TRUE(result.status.ok()) << ToString(result.status);
      EXPECT_EQ(result.response.outcome(), v1::RELOAD_OUTCOME_RELOADED)
          << result.response.ShortDebugString();
      const auto& events = result.response.events();
      ASSERT_FALSE(events.empty());
      // Serialized: the events of one reload are never interleaved with another's.
      for (int i = 1; i < events.size(); ++i) {
        EXPECT_EQ(events[i].seq(), events[i - 1].seq() + 1) << result.response.ShortDebugString();
      }
      for (const auto& e : events) seqs.insert(e.seq());
      total_events += events.size();
    }
  }
  EXPECT_EQ(seqs.size(), total_events) << "no seq is reported twice";
  EXPECT_EQ(HostInfo().last_seq(), start_seq + total_events);
  // The subscriber saw all of them in seq order.
  const auto streamed = sub->ReadPhases(total_events);
  ASSERT_EQ(streamed.size(), total_events);
  for (size_t i = 0; i < streamed.size(); ++i) EXPECT_EQ(streamed[i].seq(), start_seq + 1 + i);
}

TEST_F(HostProcessTest, UntilTerminalOfReloadEndsAfterThatReload) {
  Copy("chain_a");
  Copy("chain_b");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const uint64_t before = HostInfo().last_seq();
  const v1::ReloadResponse first = ReloadOk("chain_a");
  const v1::ReloadResponse second = ReloadOk("chain_a");
  // Replaying from before the first reload, the stream ends with that reload's terminal.
  v1::SubscribeReloadPhasesRequest request;
  request.mutable_resume_after()->set_host_epoch(host().epoch());
  request.mutable_resume_after()->set_seq(before);
  request.set_until_terminal_of_reload(first.reload_id());
  auto sub = Subscribe(request);
  const auto got = sub->ReadToEnd();
  EXPECT_TRUE(sub->Finish().ok()) << ToString(sub->Finish());
  ExpectSameEvents(got, EventsOf(first));
  EXPECT_NE(first.reload_id(), second.reload_id());
}

TEST_F(HostProcessTest, BundleNameFilterAppliesToSnapshotAndEvents) {
  Copy("counter_v1");
  Copy("chain_a");
  Copy("chain_b");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  v1::SubscribeReloadPhasesRequest request;
  request.set_include_snapshot(true);
  request.add_bundle_names("chain_b");
  request.set_max_events(2);
  Subscription sub(host().stub(), request, host().NewContext());
  std::vector<v1::ReloadPhaseEvent> snapshot;
  ASSERT_TRUE(sub.ReadSnapshot(&snapshot)) << ToString(sub.Finish());
  EXPECT_THAT(Describe(snapshot), ElementsAre("SNAPSHOT chain_b"));
  ReloadOk("counter");
  const v1::ReloadResponse cascade = ReloadOk("chain_a");
  const auto got = sub.ReadToEnd();
  EXPECT_TRUE(sub.Finish().ok()) << ToString(sub.Finish());
  std::vector<v1::ReloadPhaseEvent> expected;
  for (const auto& e : cascade.events()) {
    if (e.bundle_name() == "chain_b") expected.push_back(e);
  }
  ExpectSameEvents(got, expected);
}

TEST_F(HostProcessTest, CursorFromBeforeARestartGetsOutOfRange) {
  Copy("counter_v1");
  v1::Cursor cursor;
  {
    HostProcess first({"--bundles", root().string()});
    const absl::Status started = first.Start();
    ASSERT_TRUE(started.ok()) << started;
    cursor.set_host_epoch(first.epoch());
    cursor.set_seq(first.info_at_start().last_seq());
    first.Kill(SIGTERM);
    const int exit_status = first.WaitExit();
    EXPECT_TRUE(WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0)
        << DescribeWaitStatus(exit_status);
  }
  ASSERT_NO_FATAL_FAILURE(StartHost());
  EXPECT_NE(host().epoch(), cursor.host_epoch()) << "each start is a new epoch";
  v1::SubscribeReloadPhasesRequest request;
  *request.mutable_resume_after() = cursor;
  auto sub = Subscribe(request);
  EXPECT_THAT(Describe(sub->ReadToEnd()), IsEmpty());
  const grpc::Status status = sub->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::OUT_OF_RANGE) << ToString(status);
  // With include_snapshot the client resyncs instead.
  request.set_include_snapshot(true);
  Subscription resync(host().stub(), request, host().NewContext());
  std::vector<v1::ReloadPhaseEvent> snapshot;
  auto end = resync.ReadSnapshot(&snapshot);
  ASSERT_TRUE(end.has_value()) << ToString(resync.Finish());
  EXPECT_THAT(Describe(snapshot), ElementsAre("SNAPSHOT counter"));
  EXPECT_EQ(end->host_epoch(), host().epoch());
}

TEST_F(HostProcessTest, StalledSubscriberIsToldItFellBehindAndResumesWithoutAGap) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  // Enough events to overflow any sensible per-subscriber queue, few enough for the journal.
  constexpr size_t kReloads = 600;
  grpc::ChannelArguments narrow;
  narrow.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  narrow.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 1024);
  auto stalled_stub = host().NewStub(narrow);
  auto stalled = SubscribeSynced({}, stalled_stub.get());
  ASSERT_NE(stalled, nullptr);
  const uint64_t start_seq = HostInfo().last_seq();
  for (size_t i = 0; i < kReloads; ++i) {
    const auto reload = ReloadByName("counter");
    ASSERT_TRUE(reload.status.ok()) << "reload " << i << ": " << ToString(reload.status);
  }
  const uint64_t end_seq = HostInfo().last_seq();
  ASSERT_EQ(end_seq, start_seq + 2 * kReloads);

  // Read what the stalled stream kept: a gap-free prefix, then either the rest or an
  // explicit OUT_OF_RANGE naming where to resume.
  std::vector<v1::ReloadPhaseEvent> received;
  grpc::Status status;
  while (received.size() < 2 * kReloads) {
    auto event = stalled->NextPhase();
    if (!event) break;
    received.push_back(*std::move(event));
  }
  if (received.size() < 2 * kReloads) {
    status = stalled->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::OUT_OF_RANGE) << ToString(status);
  } else {
    stalled->Cancel();
  }
  for (size_t i = 0; i < received.size(); ++i) {
    ASSERT_EQ(received[i].seq(), start_seq + 1 + i) << "event " << i;
  }
  if (received.size() == 2 * kReloads) return;  // this host queues everything; no gap either

  const uint64_t resume_seq = received.empty() ? start_seq : received.back().seq();
  EXPECT_TRUE(ContainsNumber(status.error_message(), resume_seq))
      << "the error should name the seq to resume after (" << resume_seq
      << "): " << ToString(status);
  v1::SubscribeReloadPhasesRequest request;
  request.mutable_resume_after()->set_host_epoch(host().epoch());
  request.mutable_resume_after()->set_seq(resume_seq);
  request.set_max_events(static_cast<uint32_t>(end_seq - resume_seq));
  auto resumed = Subscribe(request);
  const auto rest = resumed->ReadToEnd();
  EXPECT_TRUE(resumed->Finish().ok()) << ToString(resumed->Finish());
  ASSERT_EQ(rest.size(), end_seq - resume_seq);
  for (size_t i = 0; i < rest.size(); ++i) {
    ASSERT_EQ(rest[i].seq(), resume_seq + 1 + i) << "resumed event " << i;
  }
}

TEST_F(HostProcessTest, ResumeReplaysALongBacklogThatIsStillInTheJournal) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost({"--journal-size", "4096"}));
  const uint64_t start_seq = HostInfo().last_seq();
  constexpr size_t kReloads = 600;  // 1200 events: well inside a journal of 4096
  for (size_t i = 0; i < kReloads; ++i) {
    const auto reload = ReloadByName("counter");
    ASSERT_TRUE(reload.status.ok()) << "reload " << i << ": " << ToString(reload.status);
  }
  const v1::HostInfo info = HostInfo();
  ASSERT_EQ(info.last_seq(), start_seq + 2 * kReloads);
  ASSERT_LE(info.earliest_seq(), start_seq + 1) << info.ShortDebugString();

  v1::SubscribeReloadPhasesRequest request;
  request.mutable_resume_after()->set_host_epoch(host().epoch());
  request.mutable_resume_after()->set_seq(start_seq);
  request.set_max_events(2 * kReloads);
  auto sub = Subscribe(request);
  const auto got = sub->ReadToEnd();
  const grpc::Status status = sub->Finish();
  EXPECT_TRUE(status.ok()) << "a cursor inside the journal must resume: " << ToString(status);
  EXPECT_EQ(got.size(), 2 * kReloads);
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i].seq(), start_seq + 1 + i) << "event " << i;
  }
}

}  // namespace
}  // namespace polyplug::test
