// Spawn: how tests and benchmarks start programs (polyplug-host, polyplugctl, openssl, ...),
// tied to the life of the test process.
//
// Every child gets a parent-death signal, so a test binary that is killed (a timeout, ^C, a
// crash) leaves no polyplug-host behind. Linux sends that signal when the *thread* that
// forked the child ends, not the process; so every child is forked by one spawning thread
// that lives as long as the process, whichever thread asked. Thread-safe.
#ifndef POLYPLUG_TESTS_SUPPORT_CHILD_PROCESS_H_
#define POLYPLUG_TESTS_SUPPORT_CHILD_PROCESS_H_

#include <signal.h>
#include <sys/types.h>

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace polyplug::test {

// Where one of the child's standard streams goes.
struct Redirect {
  enum class Kind { kInherit, kDevNull, kTruncate, kAppend, kFd, kStdout };
  Kind kind = Kind::kInherit;
  std::filesystem::path file;  // kTruncate, kAppend: created with mode 0600 if missing
  int fd = -1;                 // kFd: dup2'ed into place (the caller keeps and closes it)

  static Redirect Inherit() { return {}; }
  static Redirect DevNull() { return {Kind::kDevNull, {}, -1}; }
  static Redirect Truncate(std::filesystem::path path) { return {Kind::kTruncate, path, -1}; }
  static Redirect Append(std::filesystem::path path) { return {Kind::kAppend, path, -1}; }
  static Redirect Fd(int fd) { return {Kind::kFd, {}, fd}; }
  static Redirect ToStdout() { return {Kind::kStdout, {}, -1}; }  // stderr only
};

struct SpawnOptions {
  // argv[0] is a path, or, with search_path, a name looked up in PATH.
  std::vector<std::string> argv;
  bool search_path = false;
  // Set in the child's environment, replacing a variable of the same name.
  std::vector<std::pair<std::string, std::string>> env;
  Redirect in = Redirect::DevNull();
  Redirect out = Redirect::Inherit();
  Redirect err = Redirect::Inherit();
  std::filesystem::path cwd;  // empty: the test's
  // Sent to the child when the test process ends. SIGKILL for tests; a benchmark that lets
  // its server clean up asks for SIGTERM.
  int death_signal = SIGKILL;
  // RLIMIT_FSIZE of the child (0: unchanged): writes past it fail with EFBIG, which is how
  // a test gives a program a disk that fills up.
  uint64_t file_size_limit = 0;
};

// Starts the child and returns its pid; the caller waits for it (waitpid works from any
// thread). An error when it cannot be started (e.g. argv[0] does not exist).
absl::StatusOr<pid_t> Spawn(const SpawnOptions& options);

}  // namespace polyplug::test

#endif  // POLYPLUG_TESTS_SUPPORT_CHILD_PROCESS_H_
