#include "host/src/bundle_watcher.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "host/src/not_loaded_event.h"
#include "polyplug/core/manifest.h"

namespace polyplug::host {
namespace {

namespace fs = std::filesystem;

constexpr uint32_t kRootMask =
    IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM | IN_ONLYDIR | IN_EXCL_UNLINK;
constexpr uint32_t kBundleMask = IN_CLOSE_WRITE | IN_MODIFY | IN_MOVED_TO | IN_MOVED_FROM |
                                 IN_CREATE | IN_DELETE | IN_ATTRIB | IN_ONLYDIR | IN_EXCL_UNLINK;

// What "settled" compares: each file's existence, size and modification time.
struct FileState {
  bool exists = false;
  uintmax_t size = 0;
  fs::file_time_type mtime;
  friend bool operator==(const FileState&, const FileState&) = default;
};

FileState StateOf(const fs::path& file) {
  std::error_code ec;
  FileState state;
  state.size = fs::file_size(file, ec);
  if (ec) return {};
  state.mtime = fs::last_write_time(file, ec);
  if (ec) return {};
  state.exists = true;
  return state;
}

}  // namespace

class BundleWatcher::Loop {
 public:
  Loop(core::Runtime& runtime, OperationWorker& operations, BundleWatcherOptions options)
      : runtime_(runtime), operations_(operations), options_(std::move(options)) {}

  ~Loop() {
    Stop();
    if (inotify_fd_ >= 0) close(inotify_fd_);
    if (stop_fd_ >= 0) close(stop_fd_);
  }

  absl::Status Open() {
    inotify_fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (inotify_fd_ < 0) {
      return absl::UnavailableError(absl::StrCat("--watch: inotify_init1: ", std::strerror(errno)));
    }
    stop_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (stop_fd_ < 0) {
      return absl::UnavailableError(absl::StrCat("--watch: eventfd: ", std::strerror(errno)));
    }
    for (const fs::path& root : options_.roots) {
      const int wd = inotify_add_watch(inotify_fd_, root.c_str(), kRootMask);
      if (wd < 0) {
        return absl::InvalidArgumentError(absl::StrCat("--watch: cannot watch bundle root ",
                                                       root.string(), ": ", std::strerror(errno)));
      }
      watches_[wd] = Watch{root, true};
      std::error_code ec;
      for (const fs::directory_entry& entry : fs::directory_iterator(root, ec)) {
        if (entry.is_directory(ec)) WatchBundleDir(entry.path());
      }
    }
    thread_ = std::thread([this] { Run(); });
    return absl::OkStatus();
  }

  void Stop() {
    if (!thread_.joinable()) return;
    const uint64_t one = 1;
    (void)!write(stop_fd_, &one, sizeof(one));
    thread_.join();
  }

 private:
  struct Watch {
    fs::path path;
    bool is_root = false;
  };
  // A bundle directory that changed and has not been acted on yet.
  struct Pending {
    absl::Time due;
    std::optional<std::pair<FileState, FileState>> seen;  // manifest, artifact
    std::optional<absl::Time> invalid_since;
  };

  void Log(const std::string& line) const {
    if (options_.log) options_.log(line);
  }

  void WatchBundleDir(const fs::path& dir) {
    const int wd = inotify_add_watch(inotify_fd_, dir.c_str(), kBundleMask);
    if (wd < 0) {
      Log(absl::StrCat("cannot watch ", dir.string(), ": ", std::strerror(errno)));
      return;
    }
    watches_[wd] = Watch{dir, false};
  }

  void Touch(const fs::path& dir) {
    Pending& p = pending_[dir];
    p.due = absl::Now() + options_.settle;
    p.seen.reset();
    p.invalid_since.reset();
  }

  void Run() {
    while (true) {
      int timeout_ms = -1;
      if (!pending_.empty()) {
        absl::Time next = absl::InfiniteFuture();
        for (const auto& [dir, p] : pending_) next = std::min(next, p.due);
        timeout_ms = static_cast<int>(std::max<int64_t>(
            0, absl::ToInt64Milliseconds(absl::Ceil(next - absl::Now(), absl::Milliseconds(1)))));
      }
      pollfd fds[2] = {{inotify_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
      const int ready = poll(fds, 2, timeout_ms);
      if (ready < 0 && errno != EINTR) {
        Log(absl::StrCat("poll failed: ", std::strerror(errno), "; watching stops"));
        return;
      }
      if (fds[1].revents & POLLIN) return;
      if (fds[0].revents & POLLIN) ReadEvents();
      const absl::Time now = absl::Now();
      std::vector<fs::path> due;
      for (const auto& [dir, p] : pending_) {
        if (p.due <= now) due.push_back(dir);
      }
      for (const fs::path& dir : due) {
        if (Settle(dir, pending_.at(dir))) pending_.erase(dir);
      }
    }
  }

  void ReadEvents() {
    alignas(inotify_event) char buffer[16 * 1024];
    while (true) {
      const ssize_t n = read(inotify_fd_, buffer, sizeof(buffer));
      if (n <= 0) return;  // EAGAIN: drained
      for (ssize_t at = 0; at < n;) {
        const auto* event = reinterpret_cast<const inotify_event*>(buffer + at);
        at += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
        if (event->mask & IN_Q_OVERFLOW) {
          Log("inotify queue overflowed; checking every bundle directory");
          for (const auto& [wd, watch] : watches_) {
            if (!watch.is_root) Touch(watch.path);
          }
          continue;
        }
        auto it = watches_.find(event->wd);
        if (it == watches_.end()) continue;
        if (event->mask & IN_IGNORED) {
          watches_.erase(it);
          continue;
        }
        const Watch watch = it->second;
        if (!watch.is_root) {
          Touch(watch.path);
          continue;
        }
        if (event->len == 0 || !(event->mask & IN_ISDIR)) continue;
        const fs::path dir = watch.path / event->name;
        if (event->mask & (IN_CREATE | IN_MOVED_TO)) WatchBundleDir(dir);
        Touch(dir);
      }
    }
  }

  // Acts on `dir` once it settled; false while it has not (then `p.due` says when to look
  // again).
  bool Settle(const fs::path& dir, Pending& p) {
    const absl::Time now = absl::Now();
    const fs::path manifest_path = dir / "manifest.toml";
    const core::BundleFiles files = core::Runtime::ReadBundleFiles(dir);
    const absl::StatusOr<core::Manifest>& manifest = files.manifest;
    std::optional<fs::path> artifact;
    if (files.artifact.ok()) artifact = *files.artifact;
    const std::pair<FileState, FileState> seen{StateOf(manifest_path),
                                               artifact ? StateOf(*artifact) : FileState{}};
    if (!p.seen || *p.seen != seen) {  // still changing: look again after another settle
      p.seen = seen;
      p.due = now + options_.settle;
      return false;
    }
    if (!seen.first.exists) {
      // Something to unload only if a bundle is loaded from here (or a load of it waits,
      // which will find no manifest and do nothing).
      for (const core::BundleInfo& info : runtime_.ListBundles()) {
        if (info.dir == dir) {
          Reconcile(dir, "its manifest is gone");
          break;
        }
      }
      return true;
    }
    if (!manifest.ok()) {
      Reconcile(dir, "its manifest changed");  // a reload or load that fails, saying why
      return true;
    }
    const absl::Status& ready = files.artifact_check;
    if (!ready.ok()) {
      if (!p.invalid_since) p.invalid_since = now;
      if (now - *p.invalid_since < options_.not_ready_grace) {
        p.due = now + options_.settle;  // a writer may still be at it
        return false;
      }
      Log(absl::StrCat("bundle \"", manifest->name, "\": its artifact stayed unusable for ",
                       absl::FormatDuration(options_.not_ready_grace), ": ", ready.message()));
    }
    Reconcile(dir, "its files changed");
    return true;
  }

  // Posts what `dir` needs to where the host runs every load, reload and unload (the
  // worker, or the application's RunPendingOperations). What that is gets decided when it
  // runs, not now: earlier operations may still wait before it (an application that is
  // not pumping, a reload draining remote calls), and they change what is loaded. At most
  // one waits per directory; it sees the files as they are when it runs. The task captures
  // no watcher state: the watcher may be gone by then.
  void Reconcile(const fs::path& dir, absl::string_view why) {
    if (!queued_->Add(dir)) return;
    Log(absl::StrCat(dir.filename().string(), ": ", why));
    operations_.Post(
        [&runtime = runtime_, log = options_.log, queued = queued_, dir] {
          queued->Remove(dir);  // a change from now on posts again
          ActOn(runtime, log, dir);
        },
        [log = options_.log, queued = queued_, dir] {
          queued->Remove(dir);
          if (log) log(absl::StrCat("the host stopped before acting on ", dir.string()));
        });
  }

  // Unloads what was loaded from `dir` when its manifest is gone, reloads it when it is
  // loaded, loads it otherwise.
  static void ActOn(core::Runtime& runtime, const std::function<void(const std::string&)>& log,
                    const fs::path& dir) {
    std::optional<core::BundleInfo> loaded;
    for (core::BundleInfo& info : runtime.ListBundles()) {
      if (info.dir == dir) loaded = std::move(info);
    }
    std::error_code ec;
    if (!fs::exists(dir / "manifest.toml", ec)) {
      if (!loaded) return;
      if (log) {
        log(absl::StrCat("bundle directory ", dir.string(), " is gone: unloading \"", loaded->name,
                         "\" and its dependents"));
      }
      auto unloaded = runtime.UnloadBundle(loaded->name, core::UnloadMode::kCascade);
      if (!unloaded.ok() && log) {
        log(absl::StrCat("cannot unload \"", loaded->name, "\": ", unloaded.status().message()));
      }
      return;
    }
    if (loaded) {
      if (log) log(absl::StrCat("reloading ", loaded->name, " from ", dir.string()));
      absl::StatusOr<core::ReloadOutcome> outcome = runtime.ReloadBundle(dir);
      // The outcome itself (RELOADED or FAILED, and why) is in the phase events.
      if (!outcome.ok() && log) {
        log(absl::StrCat("reload of ", dir.string(), " refused: ", outcome.status().message()));
      }
      return;
    }
    absl::StatusOr<core::BundleInfo> info = runtime.LoadBundle(dir);
    if (info.ok()) return;
    // A load that fails publishes nothing and fires nothing (docs/SEMANTICS.md §3), but an
    // editor following the stream must learn that the directory it just wrote is broken
    // (or, BUNDLE_ALREADY_LOADED, a copy of a bundle loaded from elsewhere).
    const std::string message = absl::StrCat("--watch found bundle directory ", dir.string(),
                                             " and cannot load it: ", info.status().message());
    if (log) log(message);
    runtime.journal().Append(LoadFailedEvent(dir, info.status(), message));
  }

  // The FAILED event of a bundle directory that does not load: named after its manifest
  // when that parses, else after the directory.
  static core::PhaseEvent LoadFailedEvent(const fs::path& dir, const absl::Status& status,
                                          std::string message) {
    const core::BundleFiles files = core::Runtime::ReadBundleFiles(dir);
    core::PhaseEvent event =
        NotLoadedEvent(files.manifest.ok() ? files.manifest->name : dir.filename().string(), status,
                       std::move(message));
    if (files.manifest.ok()) event.bundle_version = files.manifest->version;
    return event;
  }

  // The directories with a task posted and not started yet; shared with those tasks.
  class QueuedDirs {
   public:
    bool Add(const fs::path& dir) {
      std::lock_guard<std::mutex> lock(mu_);
      return dirs_.insert(dir).second;
    }
    void Remove(const fs::path& dir) {
      std::lock_guard<std::mutex> lock(mu_);
      dirs_.erase(dir);
    }

   private:
    std::mutex mu_;
    std::set<fs::path> dirs_;
  };

  core::Runtime& runtime_;
  OperationWorker& operations_;
  const BundleWatcherOptions options_;
  const std::shared_ptr<QueuedDirs> queued_ = std::make_shared<QueuedDirs>();
  int inotify_fd_ = -1;
  int stop_fd_ = -1;
  std::thread thread_;
  // The watcher thread's own state (Open() fills it before the thread starts).
  absl::flat_hash_map<int, Watch> watches_;
  std::map<fs::path, Pending> pending_;
};

absl::StatusOr<std::unique_ptr<BundleWatcher>> BundleWatcher::Start(core::Runtime& runtime,
                                                                    OperationWorker& operations,
                                                                    BundleWatcherOptions options) {
  auto loop = std::make_unique<Loop>(runtime, operations, std::move(options));
  if (absl::Status s = loop->Open(); !s.ok()) return s;
  return std::unique_ptr<BundleWatcher>(new BundleWatcher(std::move(loop)));
}

BundleWatcher::BundleWatcher(std::unique_ptr<Loop> loop) : loop_(std::move(loop)) {}

BundleWatcher::~BundleWatcher() { Stop(); }

void BundleWatcher::Stop() {
  if (loop_) loop_->Stop();
}

}  // namespace polyplug::host
