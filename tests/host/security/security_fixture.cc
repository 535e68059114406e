#include "host/security/security_fixture.h"

#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"

namespace polyplug::test {

namespace fs = std::filesystem;
namespace v1 = ::polyplug::host::v1;
using ::testing::HasSubstr;

std::unique_ptr<grpc::ClientContext> ContextWith(const std::string& authorization) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + kCallDeadline);
  if (!authorization.empty()) context->AddMetadata("authorization", authorization);
  return context;
}

std::shared_ptr<grpc::Channel> TcpChannel(const std::string& target,
                                          std::shared_ptr<grpc::ChannelCredentials> credentials) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(target, std::move(credentials), args);
}

std::shared_ptr<grpc::ChannelCredentials> TlsCredentials(const fs::path& root_ca,
                                                         const fs::path& cert,
                                                         const fs::path& key) {
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = ReadFile(root_ca);
  if (!cert.empty()) {
    options.pem_cert_chain = ReadFile(cert);
    options.pem_private_key = ReadFile(key);
  }
  return grpc::SslCredentials(options);
}

grpc::Status GetHostInfo(const std::shared_ptr<grpc::Channel>& channel, v1::HostInfo* info,
                         const std::string& token) {
  auto stub = v1::PluginHost::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kCallDeadline);
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
  return stub->GetHostInfo(&context, v1::GetHostInfoRequest(), info);
}

v1::HostInfo HostInfoOf(v1::PluginHost::Stub& stub) {
  v1::HostInfo info;
  const grpc::Status status = stub.GetHostInfo(ContextWith(absl::StrCat("Bearer ", kToken)).get(),
                                               v1::GetHostInfoRequest(), &info);
  EXPECT_TRUE(status.ok()) << ToString(status);
  return info;
}

std::vector<std::string> BundleNamesOf(v1::PluginHost::Stub& stub) {
  v1::ListBundlesResponse list;
  const grpc::Status status = stub.ListBundles(ContextWith(absl::StrCat("Bearer ", kToken)).get(),
                                               v1::ListBundlesRequest(), &list);
  EXPECT_TRUE(status.ok()) << ToString(status);
  std::vector<std::string> names;
  for (const v1::Bundle& bundle : list.bundles()) names.push_back(bundle.name());
  return names;
}

int PortOf(const std::string& address) {
  int port = 0;
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port)) return 0;
  return port;
}

std::optional<struct stat> Stat(const fs::path& path) {
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) return std::nullopt;
  return st;
}

fs::path UnixPath(const std::string& address) {
  EXPECT_TRUE(absl::StartsWith(address, "unix:")) << address;
  return fs::path(address.substr(5));
}

std::string ExpectStartRefused(HostProcess& host, const std::vector<std::string>& needles) {
  const absl::Status started = host.Start();
  if (started.ok()) {
    ADD_FAILURE() << "the host started; stderr:\n" << host.Stderr();
    host.Kill(SIGTERM);  // rather than wait for an exit that will not come
  }
  const int status = host.WaitExit();
  const std::string log = host.Stderr();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2)
      << "polyplug-host " << DescribeWaitStatus(status) << ", expected exit code 2; stderr:\n"
      << log;
  for (const std::string& needle : needles) {
    EXPECT_THAT(log, HasSubstr(needle)) << "stderr should mention " << needle;
  }
  return log;
}

void ExpectCleanStop(HostProcess& host) {
  host.Kill(SIGTERM);
  const int status = host.WaitExit();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "polyplug-host " << DescribeWaitStatus(status) << " on SIGTERM; stderr:\n"
      << host.Stderr();
}

// ---------------------------------------------------------------------------------------
// HostSecurityTest

TempDir* HostSecurityTest::pki_dir_ = nullptr;
Pki* HostSecurityTest::pki_ = nullptr;
std::string* HostSecurityTest::pki_error_ = nullptr;

void HostSecurityTest::SetUpTestSuite() {
  pki_dir_ = new TempDir();
  absl::StatusOr<Pki> pki = MakePki(pki_dir_->path());
  if (pki.ok()) {
    pki_ = new Pki(*std::move(pki));
  } else {
    pki_error_ = new std::string(pki.status().ToString());
  }
}

void HostSecurityTest::TearDownTestSuite() {
  delete pki_;
  pki_ = nullptr;
  delete pki_error_;
  pki_error_ = nullptr;
  delete pki_dir_;
  pki_dir_ = nullptr;
}

void HostSecurityTest::SetUp() { fs::create_directories(root_); }

void HostSecurityTest::RequirePki() {
  ASSERT_NE(pki_, nullptr) << "could not make the test certificates: "
                           << (pki_error_ != nullptr ? *pki_error_ : "?");
}

std::vector<std::string> HostSecurityTest::TlsFlags() const {
  return {"--tls-cert", pki().server_cert.string(), "--tls-key", pki().server_key.string()};
}

void HostSecurityTest::StartTlsHost(std::unique_ptr<HostProcess>& host,
                                    std::vector<std::string> extra, std::string* address) {
  std::vector<std::string> args = TlsFlags();
  args.insert(args.end(), extra.begin(), extra.end());
  host = std::make_unique<HostProcess>(std::move(args));
  host->AddListenAddress("127.0.0.1:0");
  const absl::Status started = host->Start();
  ASSERT_TRUE(started.ok()) << started;
  absl::StatusOr<std::string> serving = host->ServingAddress("127.0.0.1:");
  ASSERT_TRUE(serving.ok()) << serving.status();
  ASSERT_NE(PortOf(*serving), 0) << *serving;
  *address = *serving;
}

// ---------------------------------------------------------------------------------------
// SecurityControlsTest

void SecurityControlsTest::SetUp() { fs::create_directories(root_); }

void SecurityControlsTest::StartTokenHost(std::unique_ptr<HostProcess>& host,
                                          std::vector<std::string> extra) {
  CopyTestBundle("counter_v1", root_);
  const fs::path token_file = scratch_.path() / "token";
  WriteFile(token_file, absl::StrCat(kToken, "\n"));
  std::vector<std::string> args = {"--bundles", root_.string(), "--auth-token-file",
                                   token_file.string()};
  args.insert(args.end(), extra.begin(), extra.end());
  host = std::make_unique<HostProcess>(std::move(args), kToken);
}

}  // namespace polyplug::test
