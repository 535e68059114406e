// HostClient's calls against a real polyplug-host: results, errors with their reasons,
// unreachable and malformed targets, deadlines, wait-for-ready and bearer tokens.
#include <signal.h>

#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "client/client_fixture.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "host/test_pki.h"
#include "polyplug/client/host_client.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::polyplug::host::v1;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;

class ClientCallsTest : public ClientTest {};

TEST_F(ClientCallsTest, EveryCallWorksAgainstARealHost) {
  Copy("chain_a");
  Copy("chain_b");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();

  auto info = client->GetHostInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->host_epoch(), host().epoch());
  EXPECT_EQ(info->bundle_count(), 2u);
  EXPECT_TRUE(info->hot_reload_enabled());

  auto bundles = client->ListBundles();
  ASSERT_TRUE(bundles.ok()) << bundles.status();
  ASSERT_THAT(bundles->bundles(), SizeIs(2));
  EXPECT_EQ(bundles->bundles(0).name(), "chain_a");
  EXPECT_EQ(bundles->bundles(1).name(), "chain_b");

  // Load a third bundle by path.
  const fs::path counter = Copy("counter_v1");
  auto loaded = client->LoadBundle(counter.string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->bundle().name(), "counter");
  EXPECT_EQ(loaded->event().phase(), v1::PHASE_LOADED);

  auto handle = client->FindContract("test.counter@1");
  ASSERT_TRUE(handle.ok()) << handle.status();
  EXPECT_EQ(handle->provider_bundle_name(), "counter");
  EXPECT_EQ(handle->host_epoch(), host().epoch());
  EXPECT_TRUE(handle->invocable());
  auto too_new = client->FindContract("test.counter@1", /*min_version=*/2);
  EXPECT_TRUE(absl::IsNotFound(too_new.status())) << too_new.status();
  EXPECT_EQ(client::FailureReasonOf(too_new.status()), v1::FAILURE_REASON_CONTRACT_NOT_FOUND);

  auto contracts = client->ListContracts("counter");
  ASSERT_TRUE(contracts.ok()) << contracts.status();
  ASSERT_THAT(contracts->contracts(), SizeIs(1));
  EXPECT_EQ(contracts->contracts(0).contract_name(), "test.counter");

  // Reload by name and by path.
  OverwriteArtifact(TestBundleDir("counter_v2"), counter);
  auto reloaded = client->Reload("counter");
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  EXPECT_EQ(reloaded->outcome(), v1::RELOAD_OUTCOME_RELOADED);
  EXPECT_EQ(reloaded->bundle_name(), "counter");
  auto by_path = client->Reload(counter.string());
  ASSERT_TRUE(by_path.ok()) << by_path.status();
  EXPECT_EQ(by_path->bundle_name(), "counter");

  // A failing reload is a response, not an error.
  WriteFile(counter / "libcounter.so", "garbage");
  auto failed = client->Reload("counter");
  ASSERT_TRUE(failed.ok()) << failed.status();
  EXPECT_EQ(failed->outcome(), v1::RELOAD_OUTCOME_FAILED);
  EXPECT_EQ(failed->reason(), v1::FAILURE_REASON_ARTIFACT_NOT_LOADABLE);

  // Unload: refused while a dependent is loaded, then with the cascade.
  auto refused = client->UnloadBundle("chain_a", /*cascade=*/false);
  EXPECT_TRUE(absl::IsFailedPrecondition(refused.status())) << refused.status();
  EXPECT_EQ(client::FailureReasonOf(refused.status()), v1::FAILURE_REASON_DEPENDENCY_IN_USE);
  EXPECT_THAT(refused.status().message(), HasSubstr("chain_b"));
  auto unloaded = client->UnloadBundle("chain_a", /*cascade=*/true);
  ASSERT_TRUE(unloaded.ok()) << unloaded.status();
  EXPECT_THAT(unloaded->unloaded(), ElementsAre("chain_b", "chain_a"));

  auto health = client->CheckHealth();
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, client::ServingStatus::kServing);
  auto bundle_health = client->CheckHealth("counter");
  ASSERT_TRUE(bundle_health.ok()) << bundle_health.status();
  EXPECT_EQ(*bundle_health, client::ServingStatus::kServing);
  auto gone = client->CheckHealth("chain_a");
  ASSERT_TRUE(gone.ok()) << gone.status();
  EXPECT_NE(*gone, client::ServingStatus::kServing);
}

TEST_F(ClientCallsTest, HostErrorsKeepTheirCodeMessageAndReason) {
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  auto missing = client->Reload("no_such_bundle");
  EXPECT_TRUE(absl::IsNotFound(missing.status())) << missing.status();
  EXPECT_EQ(client::FailureReasonOf(missing.status()), v1::FAILURE_REASON_BUNDLE_NOT_FOUND);
  EXPECT_THAT(missing.status().message(), HasSubstr("no_such_bundle"));
  auto outside = client->LoadBundle("/");
  EXPECT_TRUE(absl::IsPermissionDenied(outside.status())) << outside.status();
  EXPECT_EQ(client::FailureReasonOf(outside.status()), v1::FAILURE_REASON_PERMISSION_DENIED);
  EXPECT_EQ(client::FailureReasonOf(absl::OkStatus()), v1::FAILURE_REASON_UNSPECIFIED);
  EXPECT_EQ(client::ReasonToken(v1::FAILURE_REASON_BUNDLE_NOT_FOUND), "BUNDLE_NOT_FOUND");
}

TEST_F(ClientCallsTest, UnreachableHostIsUnavailableNamingTheTarget) {
  const std::string target = "unix:" + (dir_.path() / "nobody.sock").string();
  auto client = Connect(FastOptions(), target);
  auto info = client->GetHostInfo();
  EXPECT_TRUE(absl::IsUnavailable(info.status())) << info.status();
  EXPECT_THAT(info.status().message(), HasSubstr(target));
  EXPECT_EQ(client::FailureReasonOf(info.status()), v1::FAILURE_REASON_UNSPECIFIED);
}

TEST_F(ClientCallsTest, MalformedTargetsAndOptionsAreInvalidArgument) {
  for (const char* target : {"", "   ", "localhost", "unix:"}) {
    auto client = client::HostClient::Connect(target);
    EXPECT_TRUE(absl::IsInvalidArgument(client.status()))
        << "'" << target << "': " << client.status();
  }
  client::ConnectOptions half_mtls;
  half_mtls.tls = true;
  half_mtls.tls_client_cert_pem = "-----BEGIN CERTIFICATE-----";
  EXPECT_TRUE(
      absl::IsInvalidArgument(client::HostClient::Connect("127.0.0.1:1", half_mtls).status()));
  client::ConnectOptions tls_off;
  tls_off.tls_root_certs_pem = "pem";
  EXPECT_TRUE(
      absl::IsInvalidArgument(client::HostClient::Connect("127.0.0.1:1", tls_off).status()));
  client::ConnectOptions no_timeout;
  no_timeout.call_timeout = absl::ZeroDuration();
  EXPECT_TRUE(
      absl::IsInvalidArgument(client::HostClient::Connect("127.0.0.1:1", no_timeout).status()));
  // An absolute path is a unix socket.
  auto by_path = client::HostClient::Connect((dir_.path() / "x.sock").string());
  ASSERT_TRUE(by_path.ok()) << by_path.status();
  EXPECT_EQ((*by_path)->target(), "unix:" + (dir_.path() / "x.sock").string());
}

TEST_F(ClientCallsTest, DeadlineIsPerCallAndNamesTheTarget) {
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  ASSERT_TRUE(client->GetHostInfo().ok());  // connected
  host().Freeze();                          // the host answers nothing until Thaw()
  client::CallOptions short_call;
  short_call.timeout = absl::Milliseconds(100);
  auto info = client->GetHostInfo(short_call);
  host().Thaw();
  EXPECT_TRUE(absl::IsDeadlineExceeded(info.status())) << info.status();
  EXPECT_THAT(info.status().message(), HasSubstr(address()));
  EXPECT_THAT(info.status().message(), HasSubstr("100ms"));
  EXPECT_TRUE(client->GetHostInfo().ok()) << "the next call has its own deadline";
}

TEST_F(ClientCallsTest, WaitForReadyWaitsForAHostThatIsStillStarting) {
  Copy("counter_v1");
  auto client = Connect();
  client::CallOptions wait;
  wait.wait_for_ready = true;
  auto pending = std::async(std::launch::async, [&] { return client->GetHostInfo(wait); });
  // Nothing listens yet; the call waits (it would fail at once without wait_for_ready).
  EXPECT_TRUE(absl::IsUnavailable(client->GetHostInfo().status()));
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto info = pending.get();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->host_epoch(), host().epoch());
}

TEST_F(ClientCallsTest, BearerTokenIsSentAndAWrongOneIsUnauthenticated) {
  WriteFile(dir_.path() / "token", "s3cret\n");
  ASSERT_NO_FATAL_FAILURE(
      StartHost({"--auth-token-file", (dir_.path() / "token").string()}, "s3cret"));
  auto anonymous = Connect();
  auto refused = anonymous->GetHostInfo();
  EXPECT_TRUE(absl::IsUnauthenticated(refused.status())) << refused.status();
  EXPECT_EQ(client::FailureReasonOf(refused.status()), v1::FAILURE_REASON_PERMISSION_DENIED);
  client::ConnectOptions wrong = FastOptions();
  wrong.auth_token = "guess";
  EXPECT_TRUE(absl::IsUnauthenticated(Connect(wrong)->GetHostInfo().status()));
  client::ConnectOptions right = FastOptions();
  right.auth_token = "s3cret";
  auto authorised = Connect(right);
  EXPECT_TRUE(authorised->GetHostInfo().ok());
  EXPECT_TRUE(authorised->Reload("no_such_bundle").status().code() == absl::StatusCode::kNotFound);
}

TEST_F(ClientCallsTest, CallsWorkAgainAfterTheHostRestarts) {
  Copy("counter_v1");
  ASSERT_NO_FATAL_FAILURE(StartHost());
  auto client = Connect();
  ASSERT_TRUE(client->GetHostInfo().ok());
  KillHost();
  EXPECT_TRUE(absl::IsUnavailable(client->GetHostInfo().status()));
  ASSERT_NO_FATAL_FAILURE(StartHost());
  client::CallOptions wait;
  wait.wait_for_ready = true;  // the channel reconnects after its backoff
  auto info = client->GetHostInfo(wait);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->host_epoch(), host().epoch());
}

TEST_F(ClientCallsTest, MutualTlsWithTheRightCertificatesAndRefusalsWithoutThem) {
  Copy("counter_v1");
  const fs::path pki_dir = dir_.path() / "pki";
  fs::create_directories(pki_dir);
  absl::StatusOr<Pki> pki = MakePki(pki_dir);
  ASSERT_TRUE(pki.ok()) << pki.status();
  std::filesystem::create_directories(root());
  HostProcess tls_host({"--bundles", root().string(), "--tls-cert", pki->server_cert.string(),
                        "--tls-key", pki->server_key.string(), "--tls-client-ca",
                        pki->ca_cert.string()});
  tls_host.AddListenAddress("127.0.0.1:0");
  ASSERT_TRUE(tls_host.Start().ok());
  auto target = tls_host.ServingAddress("127.0.0.1:");
  ASSERT_TRUE(target.ok()) << target.status();

  client::ConnectOptions mtls = FastOptions();
  mtls.tls = true;
  mtls.tls_root_certs_pem = ReadFile(pki->ca_cert);
  mtls.tls_client_cert_pem = ReadFile(pki->client_cert);
  mtls.tls_client_key_pem = ReadFile(pki->client_key);
  auto client = Connect(mtls, *target);
  auto info = client->GetHostInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->host_epoch(), tls_host.epoch());
  SubscriptionLog log;
  auto subscription = client->Subscribe(log.Handlers());
  ASSERT_TRUE(log.WaitForLine("RESYNCED INITIAL counter"));
  // By name, checked against the certificate's DNS entry.
  client::ConnectOptions by_name = mtls;
  by_name.tls_server_name = "localhost";
  EXPECT_TRUE(Connect(by_name, *target)->GetHostInfo().ok());

  client::ConnectOptions no_client_cert = mtls;
  no_client_cert.tls_client_cert_pem.clear();
  no_client_cert.tls_client_key_pem.clear();
  EXPECT_TRUE(absl::IsUnavailable(Connect(no_client_cert, *target)->GetHostInfo().status()));
  client::ConnectOptions wrong_ca = mtls;
  wrong_ca.tls_root_certs_pem = ReadFile(pki->other_ca_cert);
  EXPECT_TRUE(absl::IsUnavailable(Connect(wrong_ca, *target)->GetHostInfo().status()));
  client::ConnectOptions wrong_name = mtls;
  wrong_name.tls_server_name = "somebody-else.example";
  EXPECT_TRUE(absl::IsUnavailable(Connect(wrong_name, *target)->GetHostInfo().status()));
  auto plaintext = Connect(FastOptions(), *target)->GetHostInfo();
  EXPECT_FALSE(plaintext.ok());
}

}  // namespace
}  // namespace polyplug::test
