// Which TCP listeners may start (docs/SECURITY.md, "Defaults"): a non-loopback listener
// without TLS or a token is refused before anything is bound, and starts with
// --insecure-remote, a token or TLS; only "localhost" and loopback literals count as
// loopback; every --listen flag adds a listener. Non-loopback listeners are only bound,
// never connected to.
//
// The fixtures of tests/host/security: security_fixture.h (HostSecurityTest,
// SecurityControlsTest) and host/host_process_fixture.h (HostProcessTest). docs/SECURITY.md
// cites these tests by name: keep its table in step when one moves or is renamed.
#include <sys/stat.h>

#include <filesystem>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "host/host_fixture.h"
#include "host/security/security_fixture.h"
#include "polyplug/host/v1/host.grpc.pb.h"
#include "support/bundle_fixture.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::polyplug::host::v1;
using ::testing::HasSubstr;

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

// Loopback means "localhost" or a loopback address literal (127.0.0.0/8, ::1); these need
// neither TLS nor a token.
TEST_F(SecurityControlsTest, LoopbackListenersNeedNoProtection) {
  for (const std::string address : {"127.0.0.1:0", "127.0.0.2:0", "localhost:0"}) {
    SCOPED_TRACE(address);
    HostProcess host({});
    host.AddListenAddress(address);
    const absl::Status started = host.Start();
    ASSERT_TRUE(started.ok()) << started;
    const std::string prefix = address.substr(0, address.size() - 1);
    const absl::StatusOr<std::string> serving = host.ServingAddress(prefix);
    ASSERT_TRUE(serving.ok()) << serving.status();
    ExpectCleanStop(host);
  }
}

// Any other host name is not loopback, even if it would resolve to a loopback address:
// without TLS, a token or --insecure-remote it is refused before anything is bound.
TEST_F(SecurityControlsTest, HostNamesOtherThanLocalhostAreNotLoopback) {
  for (const std::string address : {"127.0.0.1.nip.invalid:0", "polyplug.invalid:0"}) {
    SCOPED_TRACE(address);
    HostProcess host({});
    host.AddListenAddress(address);
    ExpectStartRefused(host, {address, "is not a loopback address", "--insecure-remote"});
  }
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

}  // namespace
}  // namespace polyplug::test
