// examples/ci/deploy.sh against a real polyplug-host, as a CI job on another machine runs
// it: TCP with TLS and a bearer token, a deploy root, signatures required. The job passes
// only when the bundle is live; every other outcome fails it, with the reason in its log.
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/client_fixture.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "host/host_fixture.h"
#include "host/test_pki.h"
#include "polyplug/core/bundle_signature.h"
#include "polyplug/host/v1/host.grpc.pb.h"
#include "support/bundle_fixture.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::polyplug::host::v1;
using ::testing::HasSubstr;

constexpr char kToken[] = "ci-deploy-token-7f3a";

std::string Shown(const ProcessResult& r) {
  return absl::StrCat("exit ", r.exit_code, "\n--- stdout\n", r.out, "--- stderr\n", r.err);
}

class CiDeployTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(dir_.path() / "pki");
    auto pki = MakePki(dir_.path() / "pki");
    ASSERT_TRUE(pki.ok()) << pki.status();
    pki_ = *pki;
    auto key = core::GenerateSigningKey();
    ASSERT_TRUE(key.ok()) << key.status();
    ASSERT_TRUE(core::WriteKeyPair(dir_.path() / "keys", *key).ok());
    key_hex_ = core::PublicKeyToHex(key->public_key());
    WriteFile(dir_.path() / "token", kToken);
    host_ = std::make_unique<HostProcess>(
        std::vector<std::string>{
            "--deploy-root", (dir_.path() / "deployed").string(), "--auth-token-file",
            (dir_.path() / "token").string(), "--tls-cert", pki_.server_cert.string(), "--tls-key",
            pki_.server_key.string(), "--signature-policy", "required", "--trusted-key",
            (dir_.path() / "keys" / "verifying.key").string()},
        kToken);
    host_->AddListenAddress("127.0.0.1:0");
    const absl::Status started = host_->Start();
    ASSERT_TRUE(started.ok()) << started;
    auto address = host_->ServingAddress("127.0.0.1:");
    ASSERT_TRUE(address.ok()) << address.status();
    address_ = *address;
  }

  // A fresh copy of the built test bundle `target`, as a CI build would leave it.
  fs::path Build(absl::string_view target) {
    const fs::path dir = dir_.path() / "builds" / absl::StrCat(++builds_) / "counter";
    fs::create_directories(dir.parent_path());
    return CopyBundle(TestBundleDir(target), dir);
  }

  // Runs the script on `bundle` with the job's settings, `overrides` last.
  ProcessResult Deploy(const fs::path& bundle,
                       std::vector<std::pair<std::string, std::string>> overrides = {},
                       bool sign = true) {
    std::vector<std::pair<std::string, std::string>> env = {
        {"POLYPLUG_HOST", address_},
        {"POLYPLUG_TOKEN", kToken},
        {"POLYPLUG_TLS_CA", pki_.ca_cert.string()},
        {"POLYPLUGCTL", POLYPLUGCTL_BINARY},
        {"POLYPLUG_REQUEST_ID", absl::StrCat("job-", ++jobs_)},
    };
    if (sign)
      env.push_back({"POLYPLUG_SIGNING_KEY", (dir_.path() / "keys" / "signing.key").string()});
    for (auto& o : overrides) env.push_back(std::move(o));
    return RunProcess({"/bin/sh", POLYPLUG_CI_DEPLOY_SCRIPT, bundle.string()}, env);
  }

  v1::ListBundlesResponse List() {
    v1::ListBundlesResponse list;
    EXPECT_TRUE(host_->stub().ListBundles(host_->NewContext().get(), {}, &list).ok());
    return list;
  }

  TempDir dir_;
  Pki pki_;
  std::string key_hex_;
  std::unique_ptr<HostProcess> host_;
  std::string address_;
  int builds_ = 0;
  int jobs_ = 0;
};

TEST_F(CiDeployTest, AJobPassesOnlyWhenItsBundleIsLive) {
  // The first deploy loads, signed by the job's key.
  const ProcessResult first = Deploy(Build("counter_v1"));
  ASSERT_EQ(first.exit_code, 0) << Shown(first);
  EXPECT_THAT(first.out, HasSubstr("LOADED counter 1.0.0"));
  v1::ListBundlesResponse list = List();
  ASSERT_EQ(list.bundles_size(), 1);
  EXPECT_EQ(list.bundles(0).signing_key(), key_hex_);

  // A build that does not load fails the job, and version 1 stays.
  const fs::path broken = Build("counter_v2");
  for (const auto& entry : fs::directory_iterator(broken)) {
    if (entry.path().extension() == ".so") fs::resize_file(entry.path(), 4096);
  }
  const ProcessResult failed = Deploy(broken);
  EXPECT_EQ(failed.exit_code, 1) << Shown(failed);
  EXPECT_THAT(failed.out, HasSubstr("ARTIFACT_NOT_LOADABLE"));

  // Unsigned (no key in the job's secrets): refused by the host's policy.
  const ProcessResult unsigned_push = Deploy(Build("counter_v2"), {}, /*sign=*/false);
  EXPECT_EQ(unsigned_push.exit_code, 1) << Shown(unsigned_push);
  EXPECT_THAT(unsigned_push.out, HasSubstr("UNSIGNED_BUNDLE"));

  // The wrong token: the host refuses the credentials (3), nothing changes.
  const ProcessResult bad_token = Deploy(Build("counter_v2"), {{"POLYPLUG_TOKEN", "wrong"}});
  EXPECT_EQ(bad_token.exit_code, 3) << Shown(bad_token);
  list = List();
  ASSERT_EQ(list.bundles_size(), 1);
  EXPECT_EQ(list.bundles(0).version().major(), 1u);

  // A good build reloads; a retried job (same request id) gets the same answer and does
  // not deploy twice.
  const fs::path good = Build("counter_v2");
  const ProcessResult reloaded = Deploy(good, {{"POLYPLUG_REQUEST_ID", "job-final"}});
  ASSERT_EQ(reloaded.exit_code, 0) << Shown(reloaded);
  EXPECT_THAT(reloaded.out, HasSubstr("RELOADED counter 2.0.0 (was 1.0.0)"));
  v1::HostInfo before;
  ASSERT_TRUE(host_->stub().GetHostInfo(host_->NewContext().get(), {}, &before).ok());
  const ProcessResult retried = Deploy(good, {{"POLYPLUG_REQUEST_ID", "job-final"}});
  EXPECT_EQ(retried.exit_code, 0) << Shown(retried);
  EXPECT_THAT(retried.out, HasSubstr("RELOADED counter 2.0.0"));
  v1::HostInfo after;
  ASSERT_TRUE(host_->stub().GetHostInfo(host_->NewContext().get(), {}, &after).ok());
  EXPECT_EQ(after.last_seq(), before.last_seq()) << "the retried job reloaded again";
}

TEST_F(CiDeployTest, AMissingSettingIsAUsageErrorNamingIt) {
  const ProcessResult result = Deploy(Build("counter_v1"), {{"POLYPLUG_TLS_CA", ""}});
  EXPECT_NE(result.exit_code, 0) << Shown(result);
  EXPECT_THAT(result.err, HasSubstr("POLYPLUG_TLS_CA"));
}

}  // namespace
}  // namespace polyplug::test
