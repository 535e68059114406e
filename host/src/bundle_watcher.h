// BundleWatcher: `polyplug-host --watch`, reload on rebuild.
//
// Watches the bundle roots with inotify. When a bundle directory's files change (the
// linker rewriting the artifact in place, a file renamed over it, an edited manifest), it
// waits until the change has settled: no event for `settle`, then the artifact's and the
// manifest's size and mtime unchanged over another `settle`, and the artifact a complete
// ELF shared object. Then it reloads the bundle. An artifact that stays invalid (garbage,
// or half-written and no longer growing) for `not_ready_grace` is reloaded anyway, so the
// FAILED event says what is wrong with it; the previous version stays live, and the next
// change is picked up again. A new bundle directory is loaded (with any other bundle of the
// roots not loaded yet, providers first); a removed one is unloaded with its dependents.
//
// The watcher decides on its own thread; the loads, reloads and unloads it decides on run
// where the host runs those of the RPCs (an OperationWorker: the host's worker thread, or
// the application's RunPendingOperations), in order with them. A new directory that does
// not load is a FAILED event with its reason, so that a subscriber learns of it. What the
// watcher does and why is reported through `log`, one line at a time.
#ifndef POLYPLUG_HOST_SRC_BUNDLE_WATCHER_H_
#define POLYPLUG_HOST_SRC_BUNDLE_WATCHER_H_

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "host/src/operation_worker.h"
#include "polyplug/core/runtime.h"

namespace polyplug::host {

struct BundleWatcherOptions {
  std::vector<std::filesystem::path> roots;  // canonical
  absl::Duration settle = absl::Milliseconds(200);
  absl::Duration not_ready_grace = absl::Seconds(2);
  std::function<void(const std::string&)> log;  // may be empty
};

class BundleWatcher {
 public:
  // Starts watching. `runtime` and `operations` must outlive the watcher. Fails when
  // inotify is unavailable or a root cannot be watched.
  static absl::StatusOr<std::unique_ptr<BundleWatcher>> Start(core::Runtime& runtime,
                                                              OperationWorker& operations,
                                                              BundleWatcherOptions options);
  // Stops deciding; what it posted already still runs. Idempotent.
  void Stop();
  ~BundleWatcher();  // calls Stop()

  BundleWatcher(const BundleWatcher&) = delete;
  BundleWatcher& operator=(const BundleWatcher&) = delete;

 private:
  class Loop;
  explicit BundleWatcher(std::unique_ptr<Loop> loop);
  std::unique_ptr<Loop> loop_;
};

}  // namespace polyplug::host

#endif  // POLYPLUG_HOST_SRC_BUNDLE_WATCHER_H_
