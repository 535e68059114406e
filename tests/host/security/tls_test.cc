// TLS and mTLS on TCP listeners (docs/SECURITY.md, "TLS and mTLS"): a TLS listener serves
// TLS clients that trust its CA and no one else; with --tls-client-ca a client certificate
// from that CA is required; --tls-cert without --tls-key and --tls-client-ca without a
// server certificate are refused at start. The certificates are made at test time with the
// openssl CLI in a TempDir (test_pki.h); nothing touches the network.
//
// The fixtures of tests/host/security: security_fixture.h (HostSecurityTest,
// SecurityControlsTest) and host/host_process_fixture.h (HostProcessTest). docs/SECURITY.md
// cites these tests by name: keep its table in step when one moves or is renamed.
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "host/host_fixture.h"
#include "host/security/security_fixture.h"
#include "host/test_pki.h"
#include "polyplug/host/v1/host.grpc.pb.h"
#include "support/bundle_fixture.h"

namespace polyplug::test {
namespace {

namespace v1 = ::polyplug::host::v1;

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
// Bad TLS flags

TEST_F(HostSecurityTest, TlsCertWithoutKeyIsExitCode2) {
  ASSERT_NO_FATAL_FAILURE(RequirePki());
  HostProcess host({"--tls-cert", pki().server_cert.string()});
  host.AddListenAddress("127.0.0.1:0");
  ExpectStartRefused(host, {"--tls-key"});
}

// --tls-client-ca alone must not leave an operator believing mTLS is on: without
// --tls-cert/--tls-key there is no TLS at all, so the flag would have no effect.
TEST_F(SecurityControlsTest, ClientCaWithoutAServerCertificateIsRefused) {
  TempDir pki_dir;
  const absl::StatusOr<Pki> pki = MakePki(pki_dir.path());
  ASSERT_TRUE(pki.ok()) << pki.status();
  HostProcess host({"--tls-client-ca", pki->ca_cert.string()});
  host.AddListenAddress("127.0.0.1:0");
  ExpectStartRefused(host, {"--tls-client-ca"});
}

}  // namespace
}  // namespace polyplug::test
