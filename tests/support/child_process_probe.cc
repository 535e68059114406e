// child_process_probe: a stand-in for a test binary. It spawns `sleep 1000` with Spawn() from
// a thread that ends at once, prints the child's pid, then waits to be killed; the test that
// runs it checks that the child outlives the thread and dies with the probe.
#include <unistd.h>

#include <cstdio>
#include <thread>

#include "support/child_process.h"

int main() {
  pid_t child = -1;
  std::thread([&child] {
    polyplug::test::SpawnOptions options;
    options.argv = {"sleep", "1000"};
    options.search_path = true;
    absl::StatusOr<pid_t> pid = polyplug::test::Spawn(options);
    child = pid.ok() ? *pid : -1;
  }).join();
  std::printf("%d\n", static_cast<int>(child));
  std::fflush(stdout);
  if (child < 0) return 1;
  for (;;) pause();
}
