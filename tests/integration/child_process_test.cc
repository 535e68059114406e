// Spawn (tests/support/child_process.h): a child started for a test dies with the test
// process, whichever thread started it, and not before.
#include "support/child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <thread>

#include "gtest/gtest.h"

namespace polyplug::test {
namespace {

// A pidfd of `pid`: readable once the process has exited (Linux 5.3).
int PidFd(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }

bool ExitedWithin(int pidfd, int timeout_ms) {
  pollfd p{pidfd, POLLIN, 0};
  return poll(&p, 1, timeout_ms) == 1;
}

TEST(SpawnTest, AChildOutlivesTheThreadThatAskedForItAndDiesWithTheProcess) {
  int out[2];
  ASSERT_EQ(pipe2(out, O_CLOEXEC), 0);
  SpawnOptions probe;
  probe.argv = {POLYPLUG_CHILD_PROCESS_PROBE};
  probe.out = Redirect::Fd(out[1]);
  absl::StatusOr<pid_t> probe_pid = Spawn(probe);
  close(out[1]);
  ASSERT_TRUE(probe_pid.ok()) << probe_pid.status();
  const int probe_fd = PidFd(*probe_pid);
  ASSERT_GE(probe_fd, 0);

  // The probe prints its child's pid once the thread that spawned it has ended (a read
  // that ends at EOF if the probe died).
  std::string line;
  char c;
  while (read(out[0], &c, 1) == 1 && c != '\n') line.push_back(c);
  close(out[0]);
  ASSERT_FALSE(line.empty()) << "the probe printed nothing";
  const pid_t sleeper = static_cast<pid_t>(std::stol(line));
  ASSERT_GT(sleeper, 0) << "the probe could not spawn sleep";
  const int sleeper_fd = PidFd(sleeper);
  ASSERT_GE(sleeper_fd, 0);
  EXPECT_FALSE(ExitedWithin(sleeper_fd, 0)) << "the child died with the thread that asked";

  kill(*probe_pid, SIGKILL);
  int status = 0;
  ASSERT_EQ(waitpid(*probe_pid, &status, 0), *probe_pid);
  // The parent-death signal: the sleeper goes as soon as the probe is gone.
  EXPECT_TRUE(ExitedWithin(sleeper_fd, 60'000)) << "the child outlived its test process";
  close(sleeper_fd);
  close(probe_fd);
}

TEST(SpawnTest, AProgramThatCannotBeStartedIsAnErrorNamingIt) {
  SpawnOptions options;
  options.argv = {"/nonexistent/polyplug-host"};
  absl::StatusOr<pid_t> pid = Spawn(options);
  ASSERT_FALSE(pid.ok());
  EXPECT_NE(std::string(pid.status().message()).find("/nonexistent/polyplug-host"),
            std::string::npos)
      << pid.status();
}

}  // namespace
}  // namespace polyplug::test
