// The fixtures and helpers of the security tests (tests/host/security/*_test.cc), each of
// which starts the real polyplug-host: HostSecurityTest, with one throwaway PKI for the
// whole suite, and SecurityControlsTest, whose hosts need kToken. The tests that need only
// a host on a bundle root of its own use HostProcessTest (host/host_process_fixture.h).
//
// Nothing sleeps: the tests wait on calls, stream reads, inotify events of the host's
// stderr, and process exit; deadlines only bound how long a broken host can stall a test.
#ifndef POLYPLUG_TESTS_HOST_SECURITY_SECURITY_FIXTURE_H_
#define POLYPLUG_TESTS_HOST_SECURITY_SECURITY_FIXTURE_H_

#include <sys/stat.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "host/host_fixture.h"
#include "host/test_pki.h"
#include "polyplug/host/v1/host.grpc.pb.h"
#include "support/bundle_fixture.h"

namespace polyplug::test {

// The token SecurityControlsTest's hosts require.
inline constexpr char kToken[] = "s3cret-token";

// A context with a deadline and, unless empty, the given authorization metadata.
std::unique_ptr<grpc::ClientContext> ContextWith(const std::string& authorization);

// A channel of its own (local subchannel pool) to a TCP `target` with `credentials`.
std::shared_ptr<grpc::Channel> TcpChannel(const std::string& target,
                                          std::shared_ptr<grpc::ChannelCredentials> credentials);

// TLS credentials trusting `root_ca`, with a client certificate when `cert` is given.
std::shared_ptr<grpc::ChannelCredentials> TlsCredentials(const std::filesystem::path& root_ca,
                                                         const std::filesystem::path& cert = {},
                                                         const std::filesystem::path& key = {});

// GetHostInfo on `channel` (not wait-for-ready: a connection that cannot be made fails the
// call at once), with `token` as a bearer token unless empty.
grpc::Status GetHostInfo(const std::shared_ptr<grpc::Channel>& channel, host::v1::HostInfo* info,
                         const std::string& token = "");

// GetHostInfo and the names of the loaded bundles, with kToken.
host::v1::HostInfo HostInfoOf(host::v1::PluginHost::Stub& stub);
std::vector<std::string> BundleNamesOf(host::v1::PluginHost::Stub& stub);

// The port of "HOST:PORT", or 0.
int PortOf(const std::string& address);

// lstat() of a path, or nullopt.
std::optional<struct stat> Stat(const std::filesystem::path& path);

// The path of a "unix:PATH" address.
std::filesystem::path UnixPath(const std::string& address);

// Expects a host that was refused at start: Start() failed, the process exited with 2, and
// stderr has every one of `needles`. Returns the stderr.
std::string ExpectStartRefused(HostProcess& host, const std::vector<std::string>& needles);

// Sends SIGTERM and expects exit code 0.
void ExpectCleanStop(HostProcess& host);

class HostSecurityTest : public ::testing::Test {
 protected:
  // One PKI for the whole suite: generating keys is the slow part.
  static void SetUpTestSuite();
  static void TearDownTestSuite();

  void SetUp() override;

  // The suite's PKI; call as ASSERT_NO_FATAL_FAILURE(RequirePki()).
  void RequirePki();
  static const Pki& pki() { return *pki_; }

  std::vector<std::string> TlsFlags() const;

  // A TLS host on 127.0.0.1:0 (plus the fixture's unix socket) with `extra` flags; returns
  // the "127.0.0.1:<port>" it serves on. Call as ASSERT_NO_FATAL_FAILURE(...).
  void StartTlsHost(std::unique_ptr<HostProcess>& host, std::vector<std::string> extra,
                    std::string* address);

  const std::filesystem::path& root() const { return root_; }
  const TempDir& scratch() const { return scratch_; }

 private:
  static TempDir* pki_dir_;
  static Pki* pki_;
  static std::string* pki_error_;

  TempDir scratch_;
  std::filesystem::path root_ = scratch_.path() / "bundles";
};

class SecurityControlsTest : public ::testing::Test {
 protected:
  void SetUp() override;

  // A host serving the bundle root (with the counter bundle) that needs kToken; not
  // started yet.
  void StartTokenHost(std::unique_ptr<HostProcess>& host, std::vector<std::string> extra = {});

  const std::filesystem::path& root() const { return root_; }
  const std::filesystem::path& scratch() const { return scratch_.path(); }

 private:
  TempDir scratch_;
  std::filesystem::path root_ = scratch_.path() / "bundles";
};

}  // namespace polyplug::test

#endif  // POLYPLUG_TESTS_HOST_SECURITY_SECURITY_FIXTURE_H_
