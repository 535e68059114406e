// Bundle roots and path confinement (docs/SECURITY.md, "Path confinement"): LoadBundle and
// Reload paths must resolve inside a --bundles root ('..', absolute paths, symlinks leading
// out, a root itself are PERMISSION_DENIED and have no effect), a manifest `file` must stay
// in its bundle directory, and the roots themselves: a missing root or a regular file is
// refused at start, and every --bundles root is loaded. The catalogue's rows on paths are
// in fault_catalogue_test.cc.
//
// The fixtures of tests/host/security: security_fixture.h (HostSecurityTest,
// SecurityControlsTest) and host/host_process_fixture.h (HostProcessTest). docs/SECURITY.md
// cites these tests by name: keep its table in step when one moves or is renamed.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "host/host_calls.h"
#include "host/host_fixture.h"
#include "host/host_process_fixture.h"
#include "host/security/security_fixture.h"
#include "polyplug/host/v1/host.grpc.pb.h"
#include "support/bundle_fixture.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::polyplug::host::v1;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

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

// Reload by path through a symlink in a root that leads out, and the root itself, are
// refused like LoadBundle's; nothing is reloaded.
TEST_F(SecurityControlsTest, ReloadByPathThroughASymlinkLeadingOutIsRefused) {
  std::unique_ptr<HostProcess> host;
  StartTokenHost(host);
  const fs::path outside = scratch() / "outside";
  fs::create_directories(outside);
  // The loaded counter's own directory, reached from outside through a symlink chain:
  // <root>/escape -> <scratch>/outside, where outside/counter_v1 is a copy of the bundle.
  CopyTestBundle("counter_v1", outside);
  const absl::Status started = host->Start();
  ASSERT_TRUE(started.ok()) << started;
  fs::create_directory_symlink(outside, root() / "escape");  // after start: not scanned
  const uint64_t last_seq = HostInfoOf(host->stub()).last_seq();

  for (const std::string& path :
       {(root() / "escape" / "counter_v1").string(), std::string("escape/counter_v1"),
        root().string(), (root() / ".").string()}) {
    SCOPED_TRACE("Reload path " + path);
    auto context = host->NewContext();
    v1::ReloadRequest request;
    request.set_path(path);
    v1::ReloadResponse response;
    const grpc::Status status = host->stub().Reload(context.get(), request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << ToString(status);
    EXPECT_EQ(ReasonTokenOf(status), "PERMISSION_DENIED") << ToString(status);
    EXPECT_EQ(TrailingReasonOf(*context), "PERMISSION_DENIED");
  }
  EXPECT_EQ(HostInfoOf(host->stub()).last_seq(), last_seq) << "a refused reload emitted events";
  ExpectCleanStop(*host);
}

// A manifest `file` reached through a symlinked directory that leads out of the bundle is
// refused (the artifact itself is a regular file, so only the directory check can catch it).
TEST_F(SecurityControlsTest, ManifestFileThroughASymlinkedDirectoryLeadingOutIsRefused) {
  std::unique_ptr<HostProcess> host;
  StartTokenHost(host);
  const absl::Status started = host->Start();
  ASSERT_TRUE(started.ok()) << started;
  const fs::path bundle = CopyTestBundle("stateless", root());
  const fs::path outside = scratch() / "outside-lib";
  fs::create_directories(outside);
  fs::rename(bundle / "libstateless.so", outside / "libstateless.so");
  fs::create_directory_symlink(outside, bundle / "sub");
  ASSERT_TRUE(ReplaceInFile(bundle / "manifest.toml", "file = \"libstateless.so\"",
                            "file = \"sub/libstateless.so\""));
  const uint64_t last_seq = HostInfoOf(host->stub()).last_seq();

  auto context = host->NewContext();
  v1::LoadBundleRequest request;
  request.set_path(bundle.string());
  v1::LoadBundleResponse response;
  const grpc::Status status = host->stub().LoadBundle(context.get(), request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << ToString(status);
  EXPECT_EQ(ReasonTokenOf(status), "ARTIFACT_PATH_ESCAPE") << ToString(status);
  EXPECT_THAT(status.error_message(), HasSubstr("field 'file'"));
  EXPECT_THAT(status.error_message(), HasSubstr("symlinked directory"));
  EXPECT_THAT(BundleNamesOf(host->stub()), ::testing::ElementsAre("counter"));
  EXPECT_EQ(HostInfoOf(host->stub()).last_seq(), last_seq);
  ExpectCleanStop(*host);
}

// ---------------------------------------------------------------------------------------
// Bundle roots

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

}  // namespace
}  // namespace polyplug::test
