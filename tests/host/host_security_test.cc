// The real polyplug-host executable: TLS and mTLS on TCP listeners, the refusal of
// unprotected non-loopback listeners, unix socket permissions and stale sockets, per-bundle
// health over grpc.health.v1.Health/Watch, and bad flags.
//
// The certificates are made at test time with the openssl CLI in a TempDir (a throwaway CA,
// a server certificate for IP 127.0.0.1 and DNS localhost, client certificates), nothing
// touches the network, and non-loopback listeners are only bound, never connected to.
// Nothing sleeps: the tests wait on calls, stream reads, inotify events of the host's
// stderr, and process exit; deadlines only bound how long a broken host can stall a test.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "host/host_fixture.h"
#include "host/test_pki.h"
#include "polyplug/host/v1/host.grpc.pb.h"
#include "support/bundle_fixture.h"

extern char** environ;

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::polyplug::host::v1;
using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;
using ServingStatus = HealthCheckResponse::ServingStatus;
using ::testing::HasSubstr;

constexpr ServingStatus kServing = HealthCheckResponse::SERVING;
constexpr ServingStatus kNotServing = HealthCheckResponse::NOT_SERVING;
constexpr ServingStatus kUnknown = HealthCheckResponse::SERVICE_UNKNOWN;

// ---------------------------------------------------------------------------------------
// Helpers

// A channel of its own (local subchannel pool) to a TCP `target` with `credentials`.
std::shared_ptr<grpc::Channel> TcpChannel(const std::string& target,
                                          std::shared_ptr<grpc::ChannelCredentials> credentials) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(target, std::move(credentials), args);
}

// TLS credentials trusting `root_ca`, with a client certificate when `cert` is given.
std::shared_ptr<grpc::ChannelCredentials> TlsCredentials(const fs::path& root_ca,
                                                         const fs::path& cert = {},
                                                         const fs::path& key = {}) {
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = ReadFile(root_ca);
  if (!cert.empty()) {
    options.pem_cert_chain = ReadFile(cert);
    options.pem_private_key = ReadFile(key);
  }
  return grpc::SslCredentials(options);
}

// GetHostInfo on `channel` (not wait-for-ready: a connection that cannot be made fails the
// call at once).
grpc::Status GetHostInfo(const std::shared_ptr<grpc::Channel>& channel, v1::HostInfo* info,
                         const std::string& token = "") {
  auto stub = v1::PluginHost::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kCallDeadline);
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
  return stub->GetHostInfo(&context, v1::GetHostInfoRequest(), info);
}

// The port of "HOST:PORT", or 0.
int PortOf(const std::string& address) {
  int port = 0;
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port)) return 0;
  return port;
}

// stat() of a path, or nullopt.
std::optional<struct stat> Stat(const fs::path& path) {
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) return std::nullopt;
  return st;
}

// The path of a "unix:PATH" address.
fs::path UnixPath(const std::string& address) {
  EXPECT_TRUE(absl::StartsWith(address, "unix:")) << address;
  return fs::path(address.substr(5));
}

// Expects a host that was refused at start: Start() failed, the process exited with 2, and
// stderr has every one of `needles`. Returns the stderr.
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

// Sends SIGTERM and expects exit code 0.
void ExpectCleanStop(HostProcess& host) {
  host.Kill(SIGTERM);
  const int status = host.WaitExit();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "polyplug-host " << DescribeWaitStatus(status) << " on SIGTERM; stderr:\n"
      << host.Stderr();
}

std::string StatusName(std::optional<ServingStatus> status) {
  if (!status) return "<stream ended>";
  return HealthCheckResponse::ServingStatus_Name(*status);
}

grpc::Status HealthCheck(const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
                         HealthCheckResponse* response) {
  auto stub = Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kCallDeadline);
  HealthCheckRequest request;
  request.set_service(service);
  return stub->Check(&context, request, response);
}

class HostSecurityTest : public ::testing::Test {
 protected:
  // One PKI for the whole suite: generating keys is the slow part.
  static void SetUpTestSuite() {
    pki_dir_ = new TempDir();
    absl::StatusOr<Pki> pki = MakePki(pki_dir_->path());
    if (pki.ok()) {
      pki_ = new Pki(*std::move(pki));
    } else {
      pki_error_ = new std::string(pki.status().ToString());
    }
  }
  static void TearDownTestSuite() {
    delete pki_;
    pki_ = nullptr;
    delete pki_error_;
    pki_error_ = nullptr;
    delete pki_dir_;
    pki_dir_ = nullptr;
  }

  void SetUp() override { fs::create_directories(root_); }

  // The suite's PKI; call as ASSERT_NO_FATAL_FAILURE(RequirePki()).
  void RequirePki() {
    ASSERT_NE(pki_, nullptr) << "could not make the test certificates: "
                             << (pki_error_ != nullptr ? *pki_error_ : "?");
  }
  static const Pki& pki() { return *pki_; }

  std::vector<std::string> TlsFlags() const {
    return {"--tls-cert", pki().server_cert.string(), "--tls-key", pki().server_key.string()};
  }

  // A TLS host on 127.0.0.1:0 (plus the fixture's unix socket) with `extra` flags; returns
  // the "127.0.0.1:<port>" it serves on. Call as ASSERT_NO_FATAL_FAILURE(...).
  void StartTlsHost(std::unique_ptr<HostProcess>& host, std::vector<std::string> extra,
                    std::string* address) {
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

  const fs::path& root() const { return root_; }
  const TempDir& scratch() const { return scratch_; }

 private:
  static TempDir* pki_dir_;
  static Pki* pki_;
  static std::string* pki_error_;

  TempDir scratch_;
  fs::path root_ = scratch_.path() / "bundles";
};

TempDir* HostSecurityTest::pki_dir_ = nullptr;
Pki* HostSecurityTest::pki_ = nullptr;
std::string* HostSecurityTest::pki_error_ = nullptr;

// ---------------------------------------------------------------------------------------
// TLS and mTLS

TEST_F(HostSecurityTest, TlsListenerServesTlsClientsAndRefusesPlaintext) {
  ASSERT_NO_FATAL_FAILURE(RequirePki());
  std::unique_ptr<HostProcess> host;
  std::string address;
  ASSERT_NO_FATAL_FAILURE(StartTlsHost(host, {}, &address));

  {
    v1::HostInfo info;
    const grpc::Status status =
        GetHostInfo(TcpChannel(address, TlsCredentials(pki().ca_cert)), &info);
    ASSERT_TRUE(status.ok()) << "TLS client trusting the CA, " << address << ": "
                             << ToString(status) << "\nhost stderr:\n"
                             << host->Stderr();
    EXPECT_EQ(info.host_epoch(), host->epoch()) << "another host answered";
  }
  {
    // The certificate's DNS name works as well as its IP address.
    const std::string by_name = absl::StrCat("localhost:", PortOf(address));
    v1::HostInfo info;
    const grpc::Status status =
        GetHostInfo(TcpChannel(by_name, TlsCredentials(pki().ca_cert)), &info);
    EXPECT_TRUE(status.ok()) << "TLS client to " << by_name << ": " << ToString(status);
  }
  {
    v1::HostInfo info;
    const grpc::Status status =
        GetHostInfo(TcpChannel(address, grpc::InsecureChannelCredentials()), &info);
    EXPECT_FALSE(status.ok()) << "a plaintext client got an answer from the TLS port: "
                              << info.ShortDebugString();
  }
  {
    // A client that does not trust the host's CA refuses the connection.
    v1::HostInfo info;
    const grpc::Status status =
        GetHostInfo(TcpChannel(address, TlsCredentials(pki().other_ca_cert)), &info);
    EXPECT_FALSE(status.ok()) << "a client trusting another CA accepted the host's certificate";
  }
  // Refused clients leave the host serving.
  v1::HostInfo info;
  const grpc::Status status =
      GetHostInfo(TcpChannel(address, TlsCredentials(pki().ca_cert)), &info);
  EXPECT_TRUE(status.ok()) << ToString(status);
  ExpectCleanStop(*host);
}

TEST_F(HostSecurityTest, MutualTlsRequiresAClientCertificateFromTheClientCa) {
  ASSERT_NO_FATAL_FAILURE(RequirePki());
  std::unique_ptr<HostProcess> host;
  std::string address;
  ASSERT_NO_FATAL_FAILURE(
      StartTlsHost(host, {"--tls-client-ca", pki().ca_cert.string()}, &address));

  {
    v1::HostInfo info;
    const grpc::Status status =
        GetHostInfo(TcpChannel(address, TlsCredentials(pki().ca_cert)), &info);
    EXPECT_FALSE(status.ok()) << "a TLS client without a client certificate got an answer: "
                              << info.ShortDebugString();
  }
  {
    v1::HostInfo info;
    const grpc::Status status = GetHostInfo(
        TcpChannel(address,
                   TlsCredentials(pki().ca_cert, pki().rogue_client_cert, pki().rogue_client_key)),
        &info);
    EXPECT_FALSE(status.ok()) << "a client certificate from another CA was accepted";
  }
  {
    v1::HostInfo info;
    const grpc::Status status =
        GetHostInfo(TcpChannel(address, grpc::InsecureChannelCredentials()), &info);
    EXPECT_FALSE(status.ok()) << "a plaintext client got an answer from the mTLS port";
  }
  {
    v1::HostInfo info;
    const grpc::Status status = GetHostInfo(
        TcpChannel(address, TlsCredentials(pki().ca_cert, pki().client_cert, pki().client_key)),
        &info);
    ASSERT_TRUE(status.ok()) << "client with a certificate from the client CA: " << ToString(status)
                             << "\nhost stderr:\n"
                             << host->Stderr();
    EXPECT_EQ(info.host_epoch(), host->epoch());
  }
  ExpectCleanStop(*host);
}

// GetHostInfo.listen_addresses is documented as "the addresses the host listens on"; for
// a port-0 listener that is the port it got, as the "serving on" line says.
TEST_F(HostSecurityTest, HostInfoReportsTheBoundPortOfAPortZeroListener) {
  ASSERT_NO_FATAL_FAILURE(RequirePki());
  std::unique_ptr<HostProcess> host;
  std::string address;
  ASSERT_NO_FATAL_FAILURE(StartTlsHost(host, {}, &address));
  EXPECT_THAT(host->info_at_start().listen_addresses(), ::testing::Contains(address))
      << host->info_at_start().ShortDebugString();
  EXPECT_THAT(host->info_at_start().listen_addresses(),
              ::testing::Not(::testing::Contains("127.0.0.1:0")));
}

// ---------------------------------------------------------------------------------------
// Non-loopback listeners

TEST_F(HostSecurityTest, NonLoopbackListenerWithoutTlsOrTokenIsRefused) {
  for (const std::string address : {"0.0.0.0:0", "[::]:0"}) {
    SCOPED_TRACE(address);
    HostProcess host({});
    host.AddListenAddress(address);
    ExpectStartRefused(host,
                       {address, "TLS", "--tls-cert", "--auth-token-file", "--insecure-remote"});
    // Refused before anything was bound.
    EXPECT_FALSE(Stat(UnixPath(host.address())).has_value())
        << "a refused host left its unix socket behind";
  }
}

TEST_F(HostSecurityTest, NonLoopbackListenerStartsWithInsecureRemote) {
  HostProcess host({"--insecure-remote"});
  host.AddListenAddress("0.0.0.0:0");
  const absl::Status started = host.Start();
  ASSERT_TRUE(started.ok()) << started;
  // Bound (the line comes once the listener is up); never connected to.
  const absl::StatusOr<std::string> serving = host.ServingAddress("0.0.0.0:");
  ASSERT_TRUE(serving.ok()) << serving.status();
  EXPECT_NE(PortOf(*serving), 0) << *serving;
  ExpectCleanStop(host);
}

TEST_F(HostSecurityTest, NonLoopbackListenerStartsWithAnAuthToken) {
  const fs::path token_file = scratch() / "token";
  WriteFile(token_file, "s3cret-token\n");
  HostProcess host({"--auth-token-file", token_file.string()}, "s3cret-token");
  host.AddListenAddress("0.0.0.0:0");
  const absl::Status started = host.Start();
  ASSERT_TRUE(started.ok()) << started;
  const absl::StatusOr<std::string> serving = host.ServingAddress("0.0.0.0:");
  ASSERT_TRUE(serving.ok()) << serving.status();
  EXPECT_NE(PortOf(*serving), 0) << *serving;
  ExpectCleanStop(host);
}

TEST_F(HostSecurityTest, NonLoopbackListenerStartsWithTls) {
  ASSERT_NO_FATAL_FAILURE(RequirePki());
  HostProcess host(TlsFlags());
  host.AddListenAddress("0.0.0.0:0");
  const absl::Status started = host.Start();
  ASSERT_TRUE(started.ok()) << started;
  const absl::StatusOr<std::string> serving = host.ServingAddress("0.0.0.0:");
  ASSERT_TRUE(serving.ok()) << serving.status();
  ExpectCleanStop(host);
}

// `--listen` is documented as repeatable: every occurrence adds a listener. (absl flags keep
// only the last value of a repeated flag unless the host accumulates them itself.)
TEST_F(HostSecurityTest, RepeatedListenFlagsAllListen) {
  HostProcess host({});
  // No fixture --listen; the probe's socket comes last, so that a host that kept only the
  // last flag still starts and the expectations below say what is missing.
  host.UseDefaultListenAddress();
  const fs::path other_socket = host.dir() / "other.sock";
  host.AddArgs({"--listen", "unix:" + other_socket.string(), "--listen", "127.0.0.1:0", "--listen",
                host.address()});
  const absl::Status started = host.Start();
  ASSERT_TRUE(started.ok()) << started;
  // The lines are written in --listen order, so once the last one is there all are.
  ASSERT_TRUE(host.ServingAddress(host.address()).ok());
  const std::string log = host.Stderr();
  EXPECT_THAT(log, HasSubstr("polyplug-host: serving on unix:" + other_socket.string()));
  EXPECT_THAT(log, HasSubstr("polyplug-host: serving on 127.0.0.1:"));
  const auto st = Stat(other_socket);
  EXPECT_TRUE(st.has_value() && S_ISSOCK(st->st_mode)) << other_socket;
  EXPECT_EQ(host.info_at_start().listen_addresses_size(), 3)
      << host.info_at_start().ShortDebugString();
  // The other socket serves the same host.
  v1::HostInfo info;
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  const grpc::Status status =
      GetHostInfo(grpc::CreateCustomChannel("unix:" + other_socket.string(),
                                            grpc::InsecureChannelCredentials(), args),
                  &info);
  ASSERT_TRUE(status.ok()) << ToString(status);
  EXPECT_EQ(info.host_epoch(), host.epoch());
}

// `--bundles` is repeatable too: every root is loaded.
TEST_F(HostSecurityTest, RepeatedBundlesFlagsLoadEveryRoot) {
  const fs::path second_root = scratch() / "more-bundles";
  CopyTestBundle("counter_v1", root());
  CopyTestBundle("chain_a", second_root);
  HostProcess host({"--bundles", root().string(), "--bundles", second_root.string()});
  const absl::Status started = host.Start();
  ASSERT_TRUE(started.ok()) << started;
  auto context = host.NewContext();
  v1::ListBundlesResponse list;
  const grpc::Status status =
      host.stub().ListBundles(context.get(), v1::ListBundlesRequest(), &list);
  ASSERT_TRUE(status.ok()) << ToString(status);
  std::vector<std::string> names;
  for (const v1::Bundle& bundle : list.bundles()) names.push_back(bundle.name());
  EXPECT_THAT(names, ::testing::UnorderedElementsAre("counter", "chain_a"));
  EXPECT_EQ(host.info_at_start().bundle_roots_size(), 2) << host.info_at_start().ShortDebugString();
}

// ---------------------------------------------------------------------------------------
// Unix sockets

TEST_F(HostSecurityTest, UnixSocketIsCreatedOwnerOnly) {
  HostProcess host({});
  // A permissive umask for the child: the 0600 must come from the host itself.
  const mode_t old_mask = umask(0);
  const absl::Status started = host.Start();
  umask(old_mask);
  ASSERT_TRUE(started.ok()) << started;
  const auto st = Stat(UnixPath(host.address()));
  ASSERT_TRUE(st.has_value()) << host.address();
  EXPECT_TRUE(S_ISSOCK(st->st_mode));
  EXPECT_EQ(st->st_mode & 07777, 0600u) << std::oct << (st->st_mode & 07777);
}

TEST_F(HostSecurityTest, DefaultUnixSocketIsUnderXdgRuntimeDirAndOwnerOnly) {
  HostProcess host({});
  host.UseDefaultListenAddress();
  const mode_t old_mask = umask(0);
  const absl::Status started = host.Start();
  umask(old_mask);
  ASSERT_TRUE(started.ok()) << started;
  const fs::path socket = host.dir() / "polyplug-host.sock";
  const auto st = Stat(socket);
  ASSERT_TRUE(st.has_value()) << socket;
  EXPECT_TRUE(S_ISSOCK(st->st_mode));
  EXPECT_EQ(st->st_mode & 07777, 0600u) << std::oct << (st->st_mode & 07777);
  ExpectCleanStop(host);
  EXPECT_FALSE(Stat(socket).has_value()) << "the socket should be removed at exit";
}

TEST_F(HostSecurityTest, StaleSocketOfAKilledHostIsReplaced) {
  HostProcess killed({});
  ASSERT_TRUE(killed.Start().ok());
  killed.Kill(SIGKILL);
  const int status = killed.WaitExit();
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << DescribeWaitStatus(status);
  const fs::path socket = UnixPath(killed.address());
  const auto stale = Stat(socket);
  ASSERT_TRUE(stale.has_value() && S_ISSOCK(stale->st_mode)) << "kill -9 should leave " << socket;

  HostProcess next({});
  next.SetAddress(killed.address());
  const absl::Status started = next.Start();  // connects and calls GetHostInfo on the path
  ASSERT_TRUE(started.ok()) << started;
  EXPECT_NE(next.epoch(), killed.epoch());
  // (Inode numbers are no evidence here: the new socket may reuse the stale one's.)
  const auto st = Stat(socket);
  ASSERT_TRUE(st.has_value());
  EXPECT_TRUE(S_ISSOCK(st->st_mode));
  EXPECT_EQ(st->st_mode & 07777, 0600u) << std::oct << (st->st_mode & 07777);
}

TEST_F(HostSecurityTest, RegularFileAtTheSocketPathIsLeftIntact) {
  HostProcess host({});
  const fs::path path = UnixPath(host.address());
  WriteFile(path, "not a socket: precious data\n");
  ExpectStartRefused(host, {path.string()});
  ASSERT_TRUE(fs::is_regular_file(path)) << path << " was removed or replaced";
  EXPECT_EQ(ReadFile(path), "not a socket: precious data\n");
}

// A second host started on the socket path of a running one must not take the path over
// (the first would keep running, unreachable, and the second removes the path at exit).
TEST_F(HostSecurityTest, SocketOfALiveHostIsNotTakenOver) {
  HostProcess first({});
  ASSERT_TRUE(first.Start().ok());
  const auto before = Stat(UnixPath(first.address()));
  ASSERT_TRUE(before.has_value());

  HostProcess second({});
  second.SetAddress(first.address());
  // Start()'s readiness probe may well be answered by the first host on the shared path,
  // so what counts is the second host's own line about that path: an error, or "serving on".
  // (A build-tree host without --bundles first says it serves the example bundles.)
  (void)second.Start();
  const absl::StatusOr<std::string> line =
      second.WaitForStderrLine(UnixPath(first.address()).string());
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_THAT(*line, ::testing::Not(HasSubstr("polyplug-host: serving on ")))
      << "a second host took over the socket of a running one";
  // A refused host exits by itself; a serving one is stopped (SIGTERM is blocked once it
  // wrote a line, so it exits with its own code either way).
  second.Kill(SIGTERM);
  const int second_status = second.WaitExit();
  EXPECT_TRUE(WIFEXITED(second_status) && WEXITSTATUS(second_status) == 2)
      << "second host " << DescribeWaitStatus(second_status) << "; stderr:\n"
      << second.Stderr();

  const auto after = Stat(UnixPath(first.address()));
  ASSERT_TRUE(after.has_value()) << "the first host's socket is gone";
  // A different inode proves a replacement (the same one would not prove the opposite).
  EXPECT_EQ(after->st_ino, before->st_ino) << "the first host's socket was replaced";
  EXPECT_THAT(*line, HasSubstr(UnixPath(first.address()).string()))
      << "the refusal should name the socket";
  // A fresh connection still reaches the first host.
  v1::HostInfo info;
  const grpc::Status status = GetHostInfo(first.NewChannel(), &info);
  ASSERT_TRUE(status.ok()) << ToString(status);
  EXPECT_EQ(info.host_epoch(), first.epoch()) << "another host answers on the first's socket";
}

// ---------------------------------------------------------------------------------------
// Per-bundle health

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

// ---------------------------------------------------------------------------------------
// Bad flags

TEST_F(HostSecurityTest, BundlesDirectoryThatDoesNotExistIsExitCode2NamingIt) {
  for (const fs::path& missing : {fs::path("/nonexistent"), scratch() / "no-such-root"}) {
    SCOPED_TRACE(missing.string());
    ASSERT_FALSE(fs::exists(missing));
    HostProcess host({"--bundles", missing.string()});
    ExpectStartRefused(host, {missing.string()});
  }
}

TEST_F(HostSecurityTest, BundlesThatIsARegularFileIsExitCode2NamingIt) {
  const fs::path file = scratch() / "a-file";
  WriteFile(file, "x");
  HostProcess host({"--bundles", file.string()});
  ExpectStartRefused(host, {file.string()});
}

TEST_F(HostSecurityTest, EmptyAuthTokenFileIsExitCode2) {
  for (const std::string contents : {"", " \n\t\n"}) {
    SCOPED_TRACE(absl::StrCat("token file of ", contents.size(), " bytes"));
    const fs::path token_file = scratch() / absl::StrCat("token-", contents.size());
    WriteFile(token_file, contents);
    HostProcess host({"--auth-token-file", token_file.string()});
    ExpectStartRefused(host, {token_file.string(), "empty"});
  }
}

TEST_F(HostSecurityTest, MissingAuthTokenFileIsExitCode2) {
  const fs::path token_file = scratch() / "no-such-token";
  HostProcess host({"--auth-token-file", token_file.string()});
  ExpectStartRefused(host, {token_file.string()});
}

TEST_F(HostSecurityTest, TlsCertWithoutKeyIsExitCode2) {
  ASSERT_NO_FATAL_FAILURE(RequirePki());
  HostProcess host({"--tls-cert", pki().server_cert.string()});
  host.AddListenAddress("127.0.0.1:0");
  ExpectStartRefused(host, {"--tls-key"});
}

}  // namespace
}  // namespace polyplug::test
