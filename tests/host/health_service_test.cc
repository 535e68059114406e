// HealthService over a real in-process grpc::Server on a unix socket: Check, Watch order
// and coalescing, unknown names, Shutdown, and cleanup of cancelled watchers. Every wait is
// on a stream read or on HealthService::WaitForWatchCount; deadlines only bound a hang.
#include "host/src/health_service.h"

#include <grpcpp/grpcpp.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"

#include "host/host_fixture.h"

namespace polyplug::host {
namespace {

using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;
using ServingStatus = HealthCheckResponse::ServingStatus;

constexpr ServingStatus kServing = HealthCheckResponse::SERVING;
constexpr ServingStatus kNotServing = HealthCheckResponse::NOT_SERVING;
constexpr ServingStatus kUnknown = HealthCheckResponse::SERVICE_UNKNOWN;

// Bounds how long a broken server can stall a test; never an expectation.
constexpr std::chrono::seconds kDeadline{30};

std::unique_ptr<grpc::ClientContext> NewContext() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + kDeadline);
  return context;
}

// Watches with the deadline of this file's other calls.
class WatchStream : public polyplug::test::HealthWatch {
 public:
  WatchStream(Health::Stub& stub, const std::string& service)
      : HealthWatch(stub, service, kDeadline) {}
};

class HealthServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/polyplug-health-XXXXXX";
    const char* made = mkdtemp(dir_template);
    ASSERT_NE(made, nullptr);
    dir_ = made;
    const std::string address = "unix:" + (dir_ / "h.sock").string();
    grpc::ServerBuilder builder;
    builder.AddListeningPort(address, grpc::InsecureServerCredentials());
    builder.RegisterService(&health_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    stub_ = Health::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    ShutdownServer(std::chrono::system_clock::now() + kDeadline);
    // Server::Shutdown returns after every stream's OnDone: nothing may be left.
    EXPECT_EQ(health_.watch_count(), 0u);
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }

  void ShutdownServer(std::chrono::system_clock::time_point deadline) {
    if (server_ == nullptr) return;
    server_->Shutdown(deadline);
    server_->Wait();
    server_.reset();
  }

  // Check's status, with the answer in `status` when OK.
  grpc::Status Check(const std::string& service, ServingStatus* status = nullptr) {
    HealthCheckRequest request;
    request.set_service(service);
    HealthCheckResponse response;
    auto context = NewContext();
    grpc::Status result = stub_->Check(context.get(), request, &response);
    if (status != nullptr) *status = response.status();
    return result;
  }

  // The status Check reports; fails the test on an RPC error.
  std::optional<ServingStatus> CheckStatus(const std::string& service) {
    ServingStatus status = HealthCheckResponse::UNKNOWN;
    const grpc::Status result = Check(service, &status);
    EXPECT_TRUE(result.ok()) << service << ": " << result.error_code() << " "
                             << result.error_message();
    if (!result.ok()) return std::nullopt;
    return status;
  }

  // Waits until the server has registered `count` watchers (e.g. before a change that a
  // watcher must see as a change rather than as its initial status).
  void AwaitWatchers(size_t count) {
    ASSERT_TRUE(health_.WaitForWatchCount(count, kDeadline))
        << "watch_count " << health_.watch_count() << ", want " << count;
  }

  HealthService health_;
  std::filesystem::path dir_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<Health::Stub> stub_;
};

TEST_F(HealthServiceTest, CheckHostAndBundleNames) {
  // The host is known from the start, NOT_SERVING until it says otherwise.
  EXPECT_EQ(CheckStatus(""), kNotServing);
  health_.SetStatus("", true);
  EXPECT_EQ(CheckStatus(""), kServing);

  EXPECT_EQ(Check("counter").error_code(), grpc::StatusCode::NOT_FOUND);
  health_.SetStatus("counter", false);
  EXPECT_EQ(CheckStatus("counter"), kNotServing);
  health_.SetStatus("counter", true);
  EXPECT_EQ(CheckStatus("counter"), kServing);
  EXPECT_EQ(CheckStatus(""), kServing);

  EXPECT_EQ(Check("no-such-bundle").error_code(), grpc::StatusCode::NOT_FOUND);
  health_.Clear("counter");
  EXPECT_EQ(Check("counter").error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(HealthServiceTest, OverlongNamesAreInvalidArgument) {
  const std::string name(HealthService::kMaxServiceNameBytes + 1, 'x');
  EXPECT_EQ(Check(name).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  WatchStream watch(*stub_, name);
  EXPECT_EQ(watch.Next(), std::nullopt);
  EXPECT_EQ(watch.Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(HealthServiceTest, WatchSeesEveryChangeInOrder) {
  health_.SetStatus("", true);
  WatchStream watch(*stub_, "");
  EXPECT_EQ(watch.Next(), kServing);
  health_.SetStatus("", false);
  EXPECT_EQ(watch.Next(), kNotServing);
  health_.SetStatus("", true);
  EXPECT_EQ(watch.Next(), kServing);
  // Setting the status a name already has is no change: the next message is the next real
  // change.
  health_.SetStatus("", true);
  health_.SetStatus("", false);
  EXPECT_EQ(watch.Next(), kNotServing);
  watch.Cancel();
  EXPECT_EQ(watch.Next(), std::nullopt);
  EXPECT_EQ(watch.Finish().error_code(), grpc::StatusCode::CANCELLED);
}

TEST_F(HealthServiceTest, WatchOfAnUnknownNameSeesItAppearAndGo) {
  WatchStream watch(*stub_, "later");
  EXPECT_EQ(watch.Next(), kUnknown);
  // Check still says NOT_FOUND: a watcher does not make a name known.
  EXPECT_EQ(Check("later").error_code(), grpc::StatusCode::NOT_FOUND);
  health_.SetStatus("later", true);
  EXPECT_EQ(watch.Next(), kServing);
  health_.Clear("later");
  EXPECT_EQ(watch.Next(), kUnknown);
  health_.SetStatus("later", false);
  EXPECT_EQ(watch.Next(), kNotServing);
}

TEST_F(HealthServiceTest, ShutdownEndsWatches) {
  health_.SetStatus("", true);
  health_.SetStatus("bundle", true);
  WatchStream host(*stub_, "");
  WatchStream bundle(*stub_, "bundle");
  WatchStream unknown(*stub_, "unknown");
  EXPECT_EQ(host.Next(), kServing);
  EXPECT_EQ(bundle.Next(), kServing);
  EXPECT_EQ(unknown.Next(), kUnknown);

  health_.Shutdown();
  // Each stream gets its final status (if it changed) and then ends with OK.
  EXPECT_EQ(host.Next(), kNotServing);
  EXPECT_EQ(host.Next(), std::nullopt);
  EXPECT_TRUE(host.Finish().ok());
  EXPECT_EQ(bundle.Next(), kNotServing);
  EXPECT_EQ(bundle.Next(), std::nullopt);
  EXPECT_TRUE(bundle.Finish().ok());
  EXPECT_EQ(unknown.Next(), std::nullopt);
  EXPECT_TRUE(unknown.Finish().ok());
  AwaitWatchers(0);

  // Check keeps answering; nothing is SERVING any more.
  EXPECT_EQ(CheckStatus(""), kNotServing);
  health_.SetStatus("", true);
  EXPECT_EQ(CheckStatus(""), kNotServing);
  EXPECT_EQ(Check("unknown").error_code(), grpc::StatusCode::NOT_FOUND);

  // A watch started after Shutdown gets the status and ends.
  WatchStream late(*stub_, "bundle");
  EXPECT_EQ(late.Next(), kNotServing);
  EXPECT_EQ(late.Next(), std::nullopt);
  EXPECT_TRUE(late.Finish().ok());
  health_.Shutdown();  // idempotent
}

TEST_F(HealthServiceTest, CancelledWatchIsCleanedUp) {
  health_.SetStatus("", true);
  WatchStream leaving(*stub_, "");
  WatchStream staying(*stub_, "");
  WatchStream unknown(*stub_, "gone-soon");
  EXPECT_EQ(leaving.Next(), kServing);
  EXPECT_EQ(staying.Next(), kServing);
  EXPECT_EQ(unknown.Next(), kUnknown);
  AwaitWatchers(3);

  leaving.Cancel();
  EXPECT_EQ(leaving.Next(), std::nullopt);
  EXPECT_EQ(leaving.Finish().error_code(), grpc::StatusCode::CANCELLED);
  AwaitWatchers(2);
  unknown.Cancel();
  EXPECT_EQ(unknown.Finish().error_code(), grpc::StatusCode::CANCELLED);
  AwaitWatchers(1);

  // The other watcher is unaffected.
  health_.SetStatus("", false);
  EXPECT_EQ(staying.Next(), kNotServing);
}

// A client that stops reading while the status flips many times from several threads: at
// most one write is in flight (gRPC would assert otherwise), only the newest status waits,
// and the client then sees a short sequence with no repeats that ends in the final state.
TEST_F(HealthServiceTest, BurstsCoalesce) {
  constexpr int kThreads = 4;
  constexpr int kFlipsPerThread = 500;
  health_.SetStatus("burst", true);
  WatchStream watch(*stub_, "burst");
  EXPECT_EQ(watch.Next(), kServing);

  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([this, t] {
      for (int i = 0; i < kFlipsPerThread; ++i) health_.SetStatus("burst", (i + t) % 2 == 0);
    });
  }
  for (std::thread& thread : threads) thread.join();
  health_.Clear("burst");  // a status no flip produces: the end of the burst

  std::vector<ServingStatus> seen = {kServing};
  while (seen.back() != kUnknown) {
    std::optional<ServingStatus> next = watch.Next();
    ASSERT_TRUE(next.has_value()) << "stream ended after " << seen.size() << " messages";
    EXPECT_NE(*next, seen.back()) << "repeat at message " << seen.size();
    seen.push_back(*next);
  }
  EXPECT_LE(seen.size(), static_cast<size_t>(kThreads * kFlipsPerThread + 2));
  RecordProperty("messages_after_burst", static_cast<int>(seen.size()));
  // The stream still follows changes after the burst.
  health_.SetStatus("burst", true);
  EXPECT_EQ(watch.Next(), kServing);
}

TEST_F(HealthServiceTest, ManyWatchersAllSeeTheChange) {
  constexpr int kWatchers = 20;
  health_.SetStatus("", true);
  std::vector<std::unique_ptr<WatchStream>> watches;
  for (int i = 0; i < kWatchers; ++i) {
    watches.push_back(std::make_unique<WatchStream>(*stub_, ""));
    EXPECT_EQ(watches.back()->Next(), kServing);
  }
  AwaitWatchers(kWatchers);
  health_.SetStatus("", false);
  for (auto& watch : watches) EXPECT_EQ(watch->Next(), kNotServing);
}

// Without HealthService::Shutdown, server shutdown cancels the watchers; all are cleaned up.
TEST_F(HealthServiceTest, ServerShutdownCancelsWatches) {
  WatchStream host(*stub_, "");
  WatchStream unknown(*stub_, "unknown");
  EXPECT_EQ(host.Next(), kNotServing);
  EXPECT_EQ(unknown.Next(), kUnknown);
  ShutdownServer(std::chrono::system_clock::now());  // cancel everything at once
  EXPECT_EQ(health_.watch_count(), 0u);
  EXPECT_EQ(host.Next(), std::nullopt);
  EXPECT_FALSE(host.Finish().ok());
  EXPECT_EQ(unknown.Next(), std::nullopt);
  EXPECT_FALSE(unknown.Finish().ok());
}

}  // namespace
}  // namespace polyplug::host
