#include "support/child_process.h"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"

extern char** environ;

namespace polyplug::test {
namespace {

// In the forked child: async-signal-safe calls only.
bool LimitFileSize(uint64_t bytes) {
  if (bytes == 0) return true;
  const rlimit limit{bytes, bytes};
  return setrlimit(RLIMIT_FSIZE, &limit) == 0;
}

namespace fs = std::filesystem;

// The one thread that forks children: it lives as long as the process (the object is never
// destroyed), so their parent-death signal fires when the process ends, and only then.
class Spawner {
 public:
  static Spawner& Get() {
    static Spawner* const spawner = new Spawner();
    return *spawner;
  }

  // Runs `job` on the spawning thread and waits for it.
  absl::StatusOr<pid_t> Run(std::function<absl::StatusOr<pid_t>()> job) {
    std::packaged_task<absl::StatusOr<pid_t>()> task(std::move(job));
    std::future<absl::StatusOr<pid_t>> result = task.get_future();
    {
      std::lock_guard<std::mutex> lock(mu_);
      jobs_.push_back(std::move(task));
    }
    cv_.notify_one();
    return result.get();
  }

 private:
  Spawner() {
    std::thread([this] {
      for (;;) {
        std::packaged_task<absl::StatusOr<pid_t>()> task;
        {
          std::unique_lock<std::mutex> lock(mu_);
          cv_.wait(lock, [this] { return !jobs_.empty(); });
          task = std::move(jobs_.front());
          jobs_.pop_front();
        }
        task();
      }
    }).detach();
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::packaged_task<absl::StatusOr<pid_t>()>> jobs_;
};

// The program to exec: argv[0], or its first match in PATH.
std::string Resolve(const SpawnOptions& options) {
  const std::string& program = options.argv[0];
  if (!options.search_path || program.find('/') != std::string::npos) return program;
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/bin:/bin";
  for (size_t start = 0; start <= dirs.size();) {
    size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    const fs::path candidate = fs::path(dirs.substr(start, end - start)) / program;
    if (access(candidate.c_str(), X_OK) == 0) return candidate.string();
    start = end + 1;
  }
  return program;
}

// In the child, between fork and exec: async-signal-safe calls only. Returns false on error.
bool Apply(const Redirect& redirect, int target) {
  int fd = -1;
  switch (redirect.kind) {
    case Redirect::Kind::kInherit:
      return true;
    case Redirect::Kind::kDevNull:
      fd = open("/dev/null", target == STDIN_FILENO ? O_RDONLY : O_WRONLY);
      break;
    case Redirect::Kind::kTruncate:
      fd = open(redirect.file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      break;
    case Redirect::Kind::kAppend:
      fd = open(redirect.file.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
      break;
    case Redirect::Kind::kFd:
      return dup2(redirect.fd, target) >= 0;
    case Redirect::Kind::kStdout:
      return dup2(STDOUT_FILENO, target) >= 0;
  }
  if (fd < 0) return false;
  if (fd == target) return true;
  const bool ok = dup2(fd, target) >= 0;
  close(fd);
  return ok;
}

absl::StatusOr<pid_t> ForkAndExec(const SpawnOptions& options) {
  // Everything the child needs is built here: after fork it may not allocate.
  const std::string program = Resolve(options);
  std::vector<std::string> args = options.argv;
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    bool replaced = false;
    for (const auto& [name, value] : options.env) {
      replaced = replaced || std::strncmp(*e, (name + "=").c_str(), name.size() + 1) == 0;
    }
    if (!replaced) env_strings.emplace_back(*e);
  }
  for (const auto& [name, value] : options.env) env_strings.push_back(name + "=" + value);
  std::vector<char*> envp;
  for (std::string& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  const std::string cwd = options.cwd.string();

  // The child reports a failure before exec (its errno) on this pipe; exec closes it.
  int report[2];
  if (pipe2(report, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe2: ", std::strerror(errno)));
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    const int error = errno;
    close(report[0]);
    close(report[1]);
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(error)));
  }
  if (pid == 0) {
    // The test process may have died between fork and prctl: then nobody would signal us.
    if (prctl(PR_SET_PDEATHSIG, options.death_signal) != 0 || getppid() != parent ||
        !Apply(options.in, STDIN_FILENO) || !Apply(options.out, STDOUT_FILENO) ||
        !Apply(options.err, STDERR_FILENO) || (!cwd.empty() && chdir(cwd.c_str()) != 0) ||
        !LimitFileSize(options.file_size_limit)) {
      const int error = errno;
      (void)!write(report[1], &error, sizeof(error));
      _exit(127);
    }
    execve(program.c_str(), argv.data(), envp.data());
    const int error = errno;
    (void)!write(report[1], &error, sizeof(error));
    _exit(127);
  }
  close(report[1]);
  int child_error = 0;
  ssize_t got;
  do {
    got = read(report[0], &child_error, sizeof(child_error));
  } while (got < 0 && errno == EINTR);
  close(report[0]);
  if (got == static_cast<ssize_t>(sizeof(child_error))) {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return absl::InternalError(
        absl::StrCat("cannot start ", program, ": ", std::strerror(child_error)));
  }
  return pid;
}

}  // namespace

absl::StatusOr<pid_t> Spawn(const SpawnOptions& options) {
  if (options.argv.empty()) return absl::InvalidArgumentError("Spawn: no argv");
  return Spawner::Get().Run([&options] { return ForkAndExec(options); });
}

}  // namespace polyplug::test
