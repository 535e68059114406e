// HostServer::Start in process: every option is checked before anything is created,
// loaded or bound, so a refused start leaves nothing behind.
#include "polyplug/host/host_server.h"

#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "polyplug/core/error.h"
#include "support/bundle_fixture.h"

namespace polyplug::host {
namespace {

namespace fs = std::filesystem;
using test::CopyTestBundle;
using test::HasReason;
using test::TempDir;
using ::testing::HasSubstr;

class HostServerStartTest : public ::testing::Test {
 protected:
  HostServerOptions Options() {
    HostServerOptions options;
    options.listen = {"unix:" + (dir_ / "host.sock").string()};
    options.state_dir = dir_ / "state";
    return options;
  }
  void ExpectNothingLeftBehind() {
    EXPECT_FALSE(fs::exists(dir_ / "state")) << "the runtime was created";
    EXPECT_FALSE(fs::exists(dir_ / "host.sock")) << "the socket was bound";
  }

  TempDir dir_;
};

TEST_F(HostServerStartTest, WatchWithoutABundleRootIsRefusedBeforeAnythingStarts) {
  HostServerOptions options = Options();
  options.watch = true;
  absl::StatusOr<std::unique_ptr<HostServer>> server = HostServer::Start(options);
  ASSERT_THAT(server.status(), HasReason(core::ErrorReason::kInvalidArgument));
  EXPECT_THAT(std::string(server.status().message()), HasSubstr("--watch needs a bundle root"));
  ExpectNothingLeftBehind();
}

TEST_F(HostServerStartTest, ABadListenAddressIsRefusedBeforeTheBundlesLoad) {
  const fs::path root = dir_ / "bundles";
  fs::create_directories(root);
  CopyTestBundle("counter_v1", root);
  HostServerOptions options = Options();
  options.bundle_roots = {root};
  options.listen.push_back("0.0.0.0:0");  // remote, with neither TLS nor a token
  absl::StatusOr<std::unique_ptr<HostServer>> server = HostServer::Start(options);
  ASSERT_THAT(server.status(), HasReason(core::ErrorReason::kPermissionDenied));
  EXPECT_THAT(std::string(server.status().message()), HasSubstr("0.0.0.0:0"));
  ExpectNothingLeftBehind();
}

TEST_F(HostServerStartTest, ARootThatIsNoDirectoryIsRefusedBeforeAnythingStarts) {
  HostServerOptions options = Options();
  options.bundle_roots = {dir_ / "missing"};
  absl::StatusOr<std::unique_ptr<HostServer>> server = HostServer::Start(options);
  ASSERT_THAT(server.status(), HasReason(core::ErrorReason::kInvalidArgument));
  EXPECT_THAT(std::string(server.status().message()), HasSubstr("is not a directory"));
  ExpectNothingLeftBehind();
}

// The unix socket appears at its path only with mode 0600, and goes at shutdown.
TEST_F(HostServerStartTest, TheUnixSocketIsOwnerOnlyAndRemovedAtShutdown) {
  absl::StatusOr<std::unique_ptr<HostServer>> server = HostServer::Start(Options());
  ASSERT_TRUE(server.ok()) << server.status();
  const fs::path socket = dir_ / "host.sock";
  ASSERT_TRUE(fs::is_socket(socket));
  EXPECT_EQ(fs::status(socket).permissions(), fs::perms::owner_read | fs::perms::owner_write);
  EXPECT_THAT((*server)->listen_addresses(), ::testing::ElementsAre("unix:" + socket.string()));
  // Nothing else is left beside it (the private directory it was bound in is gone).
  size_t entries = 0;
  for (const fs::directory_entry& e : fs::directory_iterator(dir_.path())) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 2u) << "host.sock and state/ only";
  (*server)->Shutdown();
  EXPECT_FALSE(fs::exists(socket));
}

}  // namespace
}  // namespace polyplug::host
