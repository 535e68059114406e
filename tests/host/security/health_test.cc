// grpc.health.v1.Health, the one service that needs no token (docs/SECURITY.md, "Token
// authentication"): Check and Watch answer without it and so reveal which bundles are
// loaded, and what they report: a bundle's status through its reload and unload, and the
// host's NOT_SERVING on SIGTERM.
//
// The fixtures of tests/host/security: security_fixture.h (HostSecurityTest,
// SecurityControlsTest) and host/host_process_fixture.h (HostProcessTest). docs/SECURITY.md
// cites these tests by name: keep its table in step when one moves or is renamed.
#include <sys/wait.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "host/host_fixture.h"
#include "host/host_process_fixture.h"
#include "host/security/security_fixture.h"
#include "polyplug/host/v1/host.grpc.pb.h"
#include "support/bundle_fixture.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::polyplug::host::v1;

using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;
using ServingStatus = HealthCheckResponse::ServingStatus;

constexpr ServingStatus kServing = HealthCheckResponse::SERVING;
constexpr ServingStatus kNotServing = HealthCheckResponse::NOT_SERVING;
constexpr ServingStatus kUnknown = HealthCheckResponse::SERVICE_UNKNOWN;

std::string StatusName(std::optional<ServingStatus> status) {
  if (!status) return "<stream ended>";
  return HealthCheckResponse::ServingStatus_Name(*status);
}

TEST_F(HostSecurityTest, HealthWatchNeedsNoToken) {
  CopyTestBundle("counter_v1", root());
  const fs::path token_file = scratch() / "token";
  WriteFile(token_file, "s3cret-token\n");
  HostProcess host({"--bundles", root().string(), "--auth-token-file", token_file.string()},
                   "s3cret-token");
  ASSERT_TRUE(host.Start().ok()) << host.Stderr();
  const auto health = Health::NewStub(host.channel());
  HealthWatch counter(*health, "counter");  // no metadata at all
  EXPECT_EQ(StatusName(counter.Next()), StatusName(kServing));
}

// What is documented, not a control: grpc.health.v1.Health needs no token, so a client
// without one learns whether a bundle of a given name is loaded.
TEST_F(SecurityControlsTest, HealthAnswersWithoutTheTokenAndRevealsLoadedBundleNames) {
  std::unique_ptr<HostProcess> host;
  StartTokenHost(host);
  const absl::Status started = host->Start();
  ASSERT_TRUE(started.ok()) << started;
  auto health = Health::NewStub(host->channel());
  auto check = [&](const std::string& service, HealthCheckResponse* response) {
    grpc::ClientContext context;  // no authorization metadata
    context.set_deadline(std::chrono::system_clock::now() + kCallDeadline);
    HealthCheckRequest request;
    request.set_service(service);
    return health->Check(&context, request, response);
  };
  HealthCheckResponse response;
  grpc::Status status = check("", &response);
  ASSERT_TRUE(status.ok()) << ToString(status);
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVING);
  status = check("counter", &response);
  ASSERT_TRUE(status.ok()) << ToString(status);
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVING);
  status = check("no-such-bundle", &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << ToString(status);
  ExpectCleanStop(*host);
}

// ---------------------------------------------------------------------------------------
// What health reports

TEST_F(HostSecurityTest, HealthWatchFollowsReloadAndUnloadOfABundle) {
  CopyTestBundle("counter_v1", root());
  HostProcess host({"--bundles", root().string()});
  ASSERT_TRUE(host.Start().ok()) << host.Stderr();

  const auto health = Health::NewStub(host.channel());
  HealthWatch counter(*health, "counter");
  HealthWatch whole_host(*health, "");
  ASSERT_EQ(StatusName(counter.Next()), StatusName(kServing));
  ASSERT_EQ(StatusName(whole_host.Next()), StatusName(kServing));

  {
    auto context = host.NewContext();
    v1::ReloadRequest request;
    request.set_name("counter");
    v1::ReloadResponse response;
    const grpc::Status status = host.stub().Reload(context.get(), request, &response);
    ASSERT_TRUE(status.ok()) << ToString(status);
    ASSERT_EQ(response.outcome(), v1::RELOAD_OUTCOME_RELOADED) << response.ShortDebugString();
  }
  // NOT_SERVING between PREPARING and RELOADED. (The watch coalesces changes, so this relies
  // on the write of the first SERVING having completed before the reload started, which it
  // has in practice: the client read it before asking for the reload.)
  EXPECT_EQ(StatusName(counter.Next()), StatusName(kNotServing));
  EXPECT_EQ(StatusName(counter.Next()), StatusName(kServing));

  {
    auto context = host.NewContext();
    v1::UnloadBundleRequest request;
    request.set_name("counter");
    v1::UnloadBundleResponse response;
    const grpc::Status status = host.stub().UnloadBundle(context.get(), request, &response);
    ASSERT_TRUE(status.ok()) << ToString(status);
  }
  EXPECT_EQ(StatusName(counter.Next()), StatusName(kUnknown));

  HealthCheckResponse check;
  grpc::Status status = HealthCheck(host.channel(), "counter", &check);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND)
      << "Check of an unloaded bundle: " << ToString(status) << " " << check.ShortDebugString();
  status = HealthCheck(host.channel(), "", &check);
  ASSERT_TRUE(status.ok()) << ToString(status);
  EXPECT_EQ(check.status(), kServing);
}

TEST_F(HostSecurityTest, HealthWatchOfTheHostEndsWithNotServingOnSigterm) {
  CopyTestBundle("counter_v1", root());
  HostProcess host({"--bundles", root().string()});
  ASSERT_TRUE(host.Start().ok()) << host.Stderr();
  auto channel = host.NewChannel();
  {
    const auto health = Health::NewStub(channel);
    HealthWatch whole_host(*health, "");
    ASSERT_EQ(StatusName(whole_host.Next()), StatusName(kServing));
    host.Kill(SIGTERM);
    EXPECT_EQ(StatusName(whole_host.Next()), StatusName(kNotServing));
    EXPECT_EQ(StatusName(whole_host.Next()), StatusName(std::nullopt));
    const grpc::Status status = whole_host.Finish();
    EXPECT_TRUE(status.ok()) << ToString(status);
  }
  const int status = host.WaitExit();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << DescribeWaitStatus(status);
}

}  // namespace
}  // namespace polyplug::test
