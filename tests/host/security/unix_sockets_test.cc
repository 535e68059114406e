// Unix sockets (docs/SECURITY.md, "Defaults"): created 0600 whatever the umask, the
// default one under $XDG_RUNTIME_DIR and removed at exit; the stale socket of a killed host
// is replaced, while a live host's socket and a regular file at the path are left alone.
//
// The fixtures of tests/host/security: security_fixture.h (HostSecurityTest,
// SecurityControlsTest) and host/host_process_fixture.h (HostProcessTest). docs/SECURITY.md
// cites these tests by name: keep its table in step when one moves or is renamed.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

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

}  // namespace
}  // namespace polyplug::test
