// Supervisor: `polyplug-host --supervise`.
//
// A bundle runs inside the server process, so a bundle's SIGSEGV or abort() kills it. The
// supervisor runs the server (this same executable) as its child and, when the child dies
// without being asked to: reads its crash record, quarantines the bundle version blamed
// (RecoveryState), and starts it again on the same listen addresses. The new server loads
// what ran before at its last healthy versions and reports the crash as a FAILED event
// with reason CRASHED (CrashRecovery). A crash no bundle is blamed for restarts the same
// set after a growing pause; too many of those in a row end the supervisor.
//
// The supervisor itself loads no bundle and starts no gRPC; SIGINT and SIGTERM are passed
// on to the server (a second one kills it), and the supervisor exits with its exit code.
#ifndef POLYPLUG_HOST_SUPERVISOR_H_
#define POLYPLUG_HOST_SUPERVISOR_H_

#include <filesystem>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace polyplug::host {

struct SupervisorOptions {
  // The server's command line: argv[0] and every flag but --supervise and --listen.
  std::vector<std::string> server_args;
  // The server's listen addresses (empty: its default). After the first start, the
  // addresses it reports (TCP port 0 resolved) are used, so a restart keeps them.
  std::vector<std::string> listen;
  // The RecoveryState directory. Empty: a private temp dir, removed at exit. Either way
  // it starts empty: quarantines last as long as the supervisor.
  std::filesystem::path state_dir;
  // Crashes in a row that no bundle is blamed for before the supervisor gives up.
  int crash_loop_limit = 5;
  // A server that served at least this long ends a row of such crashes.
  absl::Duration stable_after = absl::Seconds(10);
};

// Runs the server until it stops for good; returns the exit code for main: the server's
// own after SIGINT/SIGTERM (0), the server's when it could not start the first time
// (e.g. 2 for a bad flag), 1 when the supervisor gave up.
int RunSupervisor(const SupervisorOptions& options);

}  // namespace polyplug::host

#endif  // POLYPLUG_HOST_SUPERVISOR_H_
