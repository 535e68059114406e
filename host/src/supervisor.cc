#include "polyplug/host/supervisor.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "core/src/crash_record.h"
#include "host/src/recovery_state.h"

namespace polyplug::host {
namespace {

namespace fs = std::filesystem;

void Log(const std::string& line) {
  std::fprintf(stderr, "polyplug-host: supervise: %s\n", line.c_str());
}

std::string DescribeExit(int status) {
  if (WIFSIGNALED(status)) return absl::StrCat("died of ", core::SignalName(WTERMSIG(status)));
  return absl::StrCat("exited with ", WEXITSTATUS(status));
}

class Supervisor {
 public:
  explicit Supervisor(const SupervisorOptions& options)
      : options_(options), listen_(options.listen), state_(options.state_dir) {}

  ~Supervisor() {
    if (signal_fd_ >= 0) close(signal_fd_);
    if (owns_state_dir_) {
      std::error_code ec;
      fs::remove_all(state_.dir(), ec);
    }
  }

  int Run() {
    if (int code = Prepare(); code != 0) return code;
    for (uint32_t restart = 0;; ++restart) {
      std::optional<int> status = RunServer(restart);
      if (!status) return 1;  // could not start a process at all
      if (stopping_) return WIFEXITED(*status) ? WEXITSTATUS(*status) : 128 + WTERMSIG(*status);
      if (WIFEXITED(*status) && WEXITSTATUS(*status) == 0) {
        Log(absl::StrCat("the server (pid ", pid_, ") stopped (exit 0); stopping too"));
        return 0;
      }
      if (!ever_ready_ && WIFEXITED(*status)) {
        Log(absl::StrCat("the server did not start (", DescribeExit(*status),
                         "); not restarting it"));
        return WEXITSTATUS(*status);
      }
      std::optional<absl::Duration> pause = OnCrash(*status, restart + 1);
      if (!pause) return 1;
      if (*pause > absl::ZeroDuration() && !Pause(*pause)) return 0;
    }
  }

 private:
  // The state dir, and SIGINT/SIGTERM/SIGCHLD as a file descriptor. 0 when ready.
  int Prepare() {
    if (state_.dir().empty()) {
      std::error_code ec;
      std::string templ = (fs::temp_directory_path(ec) / "polyplug-supervise-XXXXXX").string();
      if (mkdtemp(templ.data()) == nullptr) {
        Log(absl::StrCat("cannot create a state directory: ", std::strerror(errno)));
        return 2;
      }
      state_ = RecoveryState(templ);
      owns_state_dir_ = true;
    }
    if (absl::Status s = state_.Reset(); !s.ok()) {
      Log(std::string(s.message()));
      return 2;
    }
    sigset_t signals;
    sigemptyset(&signals);
    for (int s : {SIGINT, SIGTERM, SIGCHLD}) sigaddset(&signals, s);
    sigprocmask(SIG_BLOCK, &signals, &original_mask_);
    signal_fd_ = signalfd(-1, &signals, SFD_CLOEXEC);
    if (signal_fd_ < 0) {
      Log(absl::StrCat("signalfd: ", std::strerror(errno)));
      return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    return 0;
  }

  // Starts the server and waits for it to end; its wait status.
  std::optional<int> RunServer(uint32_t restart) {
    state_.ClearServerFiles();
    std::vector<std::string> args = options_.server_args;
    for (const std::string& address : listen_) args.push_back(absl::StrCat("--listen=", address));
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) != 0) {
      Log(absl::StrCat("pipe: ", std::strerror(errno)));
      return std::nullopt;
    }
    args.push_back(absl::StrCat("--supervisor_state=", state_.dir().string()));
    args.push_back(absl::StrCat("--supervisor_fd=", ready[1]));
    args.push_back(absl::StrCat("--supervisor_restart=", restart));
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    const pid_t parent = getpid();
    pid_ = fork();
    if (pid_ < 0) {
      Log(absl::StrCat("fork: ", std::strerror(errno)));
      close(ready[0]);
      close(ready[1]);
      return std::nullopt;
    }
    if (pid_ == 0) {
      // The server ends with its supervisor, even one killed with SIGKILL.
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != parent) _exit(1);
      sigprocmask(SIG_SETMASK, &original_mask_, nullptr);
      signal(SIGPIPE, SIG_DFL);
      fcntl(ready[1], F_SETFD, 0);
      // The running executable, even if its file was replaced since.
      execv("/proc/self/exe", argv.data());
      std::fprintf(stderr, "polyplug-host: supervise: cannot run the server: %s\n",
                   std::strerror(errno));
      _exit(127);
    }
    close(ready[1]);
    const absl::Time started = absl::Now();
    Log(absl::StrCat(restart == 0 ? "started" : "restarted", " the server (pid ", pid_, ")"));
    int ready_fd = ready[0];
    std::string ready_text;
    ready_at_.reset();
    while (true) {
      pollfd fds[2] = {{signal_fd_, POLLIN, 0}, {ready_fd, POLLIN, 0}};
      if (poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        Log(absl::StrCat("poll: ", std::strerror(errno)));
      }
      if (ready_fd >= 0 && (fds[1].revents & (POLLIN | POLLHUP)) != 0) {
        char buffer[4096];
        const ssize_t n = read(ready_fd, buffer, sizeof(buffer));
        if (n > 0) ready_text.append(buffer, static_cast<size_t>(n));
        if (n <= 0 || ready_text.find('\n') != std::string::npos) {
          close(ready_fd);
          ready_fd = -1;
          OnReady(ready_text, started);
        }
      }
      if ((fds[0].revents & POLLIN) == 0) continue;
      signalfd_siginfo info{};
      if (read(signal_fd_, &info, sizeof(info)) != sizeof(info)) continue;
      if (info.ssi_signo == SIGINT || info.ssi_signo == SIGTERM) {
        const int signal = static_cast<int>(info.ssi_signo);
        // A second signal does not wait for a graceful end any more.
        kill(pid_, stopping_ ? SIGKILL : signal);
        if (!stopping_) {
          Log(absl::StrCat(core::SignalName(signal), " received, stopping the server"));
        }
        stopping_ = true;
        continue;
      }
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        if (ready_fd >= 0) close(ready_fd);
        return status;
      }
    }
  }

  void OnReady(const std::string& text, absl::Time started) {
    const std::string first_line = text.substr(0, text.find('\n'));
    absl::string_view line = first_line;
    if (!absl::ConsumePrefix(&line, "ready")) return;
    ever_ready_ = true;
    ready_at_ = absl::Now();
    std::vector<std::string> addresses = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    // Later starts use the addresses this one got: a port chosen for :0 stays the same.
    if (!addresses.empty()) listen_ = addresses;
    Log(absl::StrCat("the server (pid ", pid_, ") serves, ",
                     absl::FormatDuration(absl::Trunc(*ready_at_ - started, absl::Milliseconds(1))),
                     " after its start"));
  }

  // Blames and quarantines after an unrequested death; the pause before the restart, or
  // nullopt to give up.
  std::optional<absl::Duration> OnCrash(int status, uint32_t restart) {
    const int death_signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    auto report = core::ReadCrashRecord(state_.crash_record(), death_signal);
    const std::string death = absl::StrCat("the server (pid ", pid_, ") ", DescribeExit(status));
    if (!report.ok()) {
      Log(absl::StrCat(death, "; its crash record cannot be read: ", report.status().message()));
    }
    if (report.ok() && report->culprit && Quarantine(*report, death_signal, restart)) {
      const core::CrashCulprit& c = *report->culprit;
      Log(absl::StrCat(death, ": ", report->explanation, ". Quarantined bundle \"", c.bundle_name,
                       "\" ", c.version, " (artifact sha256 ", c.sha256.substr(0, 12),
                       "); restarting the server without it (restart ", restart, ")"));
      unexplained_in_a_row_ = 0;
      return absl::ZeroDuration();
    }
    if (ready_at_ && absl::Now() - *ready_at_ >= options_.stable_after) unexplained_in_a_row_ = 0;
    ++unexplained_in_a_row_;
    const std::string why = report.ok() ? report->explanation : "no crash record";
    if (unexplained_in_a_row_ >= options_.crash_loop_limit) {
      Log(absl::StrCat(death, " (", why, "): ", unexplained_in_a_row_,
                       " crashes in a row that no bundle can be blamed for; giving up"));
      return std::nullopt;
    }
    const absl::Duration pause = std::min(
        absl::Seconds(5), absl::Milliseconds(100) * (int64_t{1} << (unexplained_in_a_row_ - 1)));
    Log(absl::StrCat(death, " (", why,
                     "); no bundle to blame, restarting it with the same "
                     "bundles in ",
                     absl::FormatDuration(pause), " (restart ", restart, ")"));
    return pause;
  }

  // Adds the culprit to the quarantine; false when it was already there (no progress).
  bool Quarantine(const core::CrashReport& report, int death_signal, uint32_t restart) {
    const core::CrashCulprit& c = *report.culprit;
    auto entries = state_.ReadQuarantine();
    if (!entries.ok()) entries = std::vector<QuarantineEntry>();
    for (const QuarantineEntry& e : *entries) {
      if (e.bundle_name == c.bundle_name && e.sha256 == c.sha256) return false;
    }
    QuarantineEntry entry;
    entry.bundle_name = c.bundle_name;
    entry.version = c.version;
    entry.sha256 = c.sha256;
    entry.signal = core::SignalName(report.signal != 0 ? report.signal : death_signal);
    entry.during = core::DescribeActivity(c.activity, c.detail);
    entry.crashed_at = absl::Now();
    entry.restart = restart;
    entry.message = absl::StrCat(
        "bundle \"", c.bundle_name, "\" ", c.version, " crashed the host with ", entry.signal,
        " in ", entry.during, " (artifact sha256 ", c.sha256.substr(0, 12),
        "); polyplug-host restarted without this version, which stays quarantined until its "
        "artifact changes");
    entries->push_back(std::move(entry));
    if (absl::Status s = state_.WriteQuarantine(*entries); !s.ok()) {
      Log(absl::StrCat("cannot write the quarantine: ", s.message()));
      return false;
    }
    return true;
  }

  // Waits `pause`; false when SIGINT/SIGTERM came meanwhile.
  bool Pause(absl::Duration pause) {
    const absl::Time until = absl::Now() + pause;
    for (absl::Time now = absl::Now(); now < until; now = absl::Now()) {
      pollfd fd{signal_fd_, POLLIN, 0};
      const int timeout_ms = static_cast<int>(absl::ToInt64Milliseconds(until - now)) + 1;
      if (poll(&fd, 1, timeout_ms) <= 0) continue;
      signalfd_siginfo info{};
      if (read(signal_fd_, &info, sizeof(info)) != sizeof(info)) continue;
      if (info.ssi_signo == SIGINT || info.ssi_signo == SIGTERM) {
        Log(absl::StrCat(core::SignalName(static_cast<int>(info.ssi_signo)),
                         " received while waiting to restart; stopping"));
        return false;
      }
    }
    return true;
  }

  const SupervisorOptions options_;
  std::vector<std::string> listen_;
  RecoveryState state_;
  bool owns_state_dir_ = false;
  sigset_t original_mask_{};
  int signal_fd_ = -1;
  pid_t pid_ = -1;
  bool stopping_ = false;
  bool ever_ready_ = false;
  std::optional<absl::Time> ready_at_;
  int unexplained_in_a_row_ = 0;
};

}  // namespace

int RunSupervisor(const SupervisorOptions& options) { return Supervisor(options).Run(); }

}  // namespace polyplug::host
