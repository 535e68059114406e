// HostClient::PushBundle and `polyplugctl push` against a real polyplug-host with a deploy
// root: what a CI job runs to deploy a build, its exit codes and its --json output.
#include <sys/stat.h>

#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/client_fixture.h"
#include "client/polyplugctl_json.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "polyplug/core/bundle_signature.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
namespace v1 = ::polyplug::host::v1;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

class PushTest : public ClientTest {
 protected:
  fs::path deploy_root() const { return dir_.path() / "deploy"; }
  void StartPushHost() {
    ASSERT_NO_FATAL_FAILURE(StartHost({"--deploy-root", deploy_root().string()}));
  }
  ProcessResult Ctl(std::vector<std::string> args) {
    args.insert(args.begin(), {POLYPLUGCTL_BINARY, "--host", address()});
    return RunProcess(args, {});
  }
  // The bundles placed in the deploy root (its lock and staging directory aside).
  std::vector<std::string> Placed() const {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(deploy_root())) {
      const std::string name = entry.path().filename().string();
      if (name[0] != '.') names.push_back(name);
    }
    EXPECT_TRUE(fs::is_empty(deploy_root() / ".polyplug-staging"));
    return names;
  }
};

std::string Shown(const ProcessResult& r) {
  return absl::StrCat("exit ", r.exit_code, "\n--- stdout\n", r.out, "--- stderr\n", r.err);
}

TEST_F(PushTest, PolyplugctlPushLoadsThenReloadsAndExitsByOutcome) {
  ASSERT_NO_FATAL_FAILURE(StartPushHost());
  const ProcessResult loaded = Ctl({"push", TestBundleDir("counter_v1").string()});
  EXPECT_EQ(loaded.exit_code, 0) << Shown(loaded);
  EXPECT_THAT(loaded.out, HasSubstr("LOADED counter 1.0.0  into "));
  EXPECT_THAT(loaded.out, HasSubstr("digest "));

  const ProcessResult reloaded = Ctl({"push", TestBundleDir("counter_v2").string()});
  EXPECT_EQ(reloaded.exit_code, 0) << Shown(reloaded);
  EXPECT_THAT(reloaded.out, HasSubstr("RELOADED counter 2.0.0 (was 1.0.0)"));

  // --json: the response, with host.proto's field names.
  const ProcessResult json = Ctl({"--json", "push", TestBundleDir("counter_v1").string()});
  EXPECT_EQ(json.exit_code, 0) << Shown(json);
  const v1::PushBundleResponse response = ParseCtlJson<v1::PushBundleResponse>(json.out);
  EXPECT_EQ(response.outcome(), v1::PUSH_OUTCOME_RELOADED);
  EXPECT_EQ(response.bundle_digest(),
            core::DigestToHex(core::DigestBundle(TestBundleDir("counter_v1"))->digest));

  // A build that does not load: exit 1, the reason, and the running version stays.
  const ProcessResult failed = Ctl({"push", TestBundleDir("init_fails").string()});
  EXPECT_EQ(failed.exit_code, 1) << Shown(failed);
  EXPECT_THAT(failed.out, HasSubstr("FAILED init_fails: [INIT_FAILED]"));
  EXPECT_THAT(Placed(), ::testing::ElementsAre("counter"));
}

TEST_F(PushTest, AHostWithoutADeployRootIsAFailureNotAnOutage) {
  ASSERT_NO_FATAL_FAILURE(StartHost());
  const ProcessResult result = Ctl({"push", TestBundleDir("counter_v1").string()});
  EXPECT_EQ(result.exit_code, 1) << Shown(result);
  EXPECT_THAT(result.err, HasSubstr("NO_DEPLOY_ROOT"));
}

TEST_F(PushTest, ASymlinkOrFifoInTheBundleIsRefusedBeforeAnythingIsSent) {
  ASSERT_NO_FATAL_FAILURE(StartPushHost());
  auto client = Connect();
  const TempDir work;
  const fs::path linked = CopyBundle(TestBundleDir("counter_v1"), work.path() / "linked");
  fs::create_symlink("/etc/passwd", linked / "passwd");
  auto pushed = client->PushBundle(linked);
  EXPECT_EQ(pushed.status().code(), absl::StatusCode::kInvalidArgument) << pushed.status();
  EXPECT_THAT(std::string(pushed.status().message()), HasSubstr("\"passwd\" is a symlink"));

  const fs::path piped = CopyBundle(TestBundleDir("counter_v1"), work.path() / "piped");
  ASSERT_EQ(mkfifo((piped / "pipe").c_str(), 0600), 0);
  pushed = client->PushBundle(piped);
  EXPECT_EQ(pushed.status().code(), absl::StatusCode::kInvalidArgument) << pushed.status();
  EXPECT_THAT(std::string(pushed.status().message()), HasSubstr("\"pipe\" is a FIFO"));
  EXPECT_THAT(Placed(), IsEmpty());
}

TEST_F(PushTest, ALargeBundleArrivesBitForBit) {
  ASSERT_NO_FATAL_FAILURE(StartPushHost());
  auto client = Connect();
  const TempDir work;
  const fs::path bundle = CopyBundle(TestBundleDir("counter_v1"), work.path() / "counter");
  // 16 MiB across files of odd sizes, so that chunks span file boundaries.
  std::string bytes(5'000'003, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>((i * 7919) >> 3);
  fs::create_directories(bundle / "assets" / "levels");
  WriteFile(bundle / "assets" / "a.bin", bytes);
  WriteFile(bundle / "assets" / "levels" / "b.bin", bytes.substr(1));
  WriteFile(bundle / "assets" / "empty.bin", "");
  WriteFile(bundle / "z.bin", bytes + bytes.substr(0, 1'777'000));
  // A filler that ends the bytes on a 1 MiB chunk boundary, then an empty file: the last
  // file has no bytes of a chunk to travel in.
  uint64_t total = 0;
  for (const auto& entry : fs::recursive_directory_iterator(bundle)) {
    if (entry.is_regular_file()) total += entry.file_size();
  }
  WriteFile(bundle / "zz-fill.bin", std::string((1u << 20) - total % (1u << 20), 'f'));
  WriteFile(bundle / "zzz-empty", "");
  auto pushed = client->PushBundle(bundle);
  ASSERT_TRUE(pushed.ok()) << pushed.status();
  EXPECT_EQ(pushed->outcome(), v1::PUSH_OUTCOME_LOADED) << pushed->message();
  EXPECT_GT(pushed->bytes_received(), 16'000'000u);
  const auto sent = core::DigestBundle(bundle);
  const auto placed = core::DigestBundle(deploy_root() / "counter");
  ASSERT_TRUE(placed.ok()) << placed.status();
  EXPECT_EQ(placed->file_sha256, sent->file_sha256);
  EXPECT_EQ(core::DigestToHex(placed->digest), pushed->bundle_digest());
}

}  // namespace
}  // namespace polyplug::test
