// DeployRoot: the bundle root polyplug-host owns for PushBundle (--deploy-root).
//
// An upload is written into the root's hidden staging directory (.polyplug-staging, which
// no scan takes for a bundle), then becomes <root>/<bundle name> with one rename, or one
// exchange with the version there, and is loaded or reloaded from there. When that fails
// the exchange is undone: the directory holds what the running version was loaded from.
// One host owns a deploy root at a time (it holds .polyplug-deploy.lock).
#ifndef POLYPLUG_HOST_SRC_DEPLOY_ROOT_H_
#define POLYPLUG_HOST_SRC_DEPLOY_ROOT_H_

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "host/src/bundle_upload.h"
#include "polyplug/core/phase_event.h"
#include "polyplug/core/runtime.h"

namespace polyplug::host {

// What placing and loading (or reloading) an upload did.
struct DeployOutcome {
  enum class Action { kLoaded, kReloaded, kFailed, kDependentsFailed };
  Action action = Action::kFailed;
  absl::Status failure;  // kFailed: why (its reason: UNSIGNED_BUNDLE, INIT_FAILED, ...)
  std::filesystem::path dir;
  uint64_t reload_id = 0;  // the operation's id (root_reload_id of its events); 0 if none ran
  std::vector<core::PhaseEvent> events;
  std::vector<std::string> failed_dependents;
  std::optional<core::BundleInfo> bundle;  // as loaded afterwards
};

class DeployRoot {
 public:
  // Creates `dir` if needed, takes its lock (FAILED_PRECONDITION when another host holds
  // it) and removes what an earlier host left in its staging directory.
  static absl::StatusOr<std::unique_ptr<DeployRoot>> Open(const std::filesystem::path& dir,
                                                          UploadLimits limits);
  ~DeployRoot();  // releases the lock

  DeployRoot(const DeployRoot&) = delete;
  DeployRoot& operator=(const DeployRoot&) = delete;

  // Canonical.
  const std::filesystem::path& dir() const { return dir_; }
  const UploadLimits& limits() const { return limits_; }

  // An upload into a staging directory of its own. Thread-safe.
  absl::StatusOr<std::unique_ptr<BundleUpload>> BeginUpload(UploadHeader header);

  // Places `upload` (finished) as <root>/<name> and loads it, or reloads it when the bundle
  // is loaded from there. Refuses a bundle loaded from another directory. Run it where the
  // runtime's mutations run (the operation worker), one at a time.
  DeployOutcome Deploy(core::Runtime& runtime, BundleUpload& upload);

 private:
  DeployRoot(std::filesystem::path dir, UploadLimits limits, int lock_fd);
  // Undoes a placement: the previous files back at `target` (or none).
  absl::Status Revert(const std::filesystem::path& staging, const std::filesystem::path& target,
                      bool exchanged);

  const std::filesystem::path dir_;
  const std::filesystem::path staging_;
  const UploadLimits limits_;
  const int lock_fd_;
  std::atomic<uint64_t> next_upload_{1};
};

}  // namespace polyplug::host

#endif  // POLYPLUG_HOST_SRC_DEPLOY_ROOT_H_
