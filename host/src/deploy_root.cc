#include "host/src/deploy_root.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "polyplug/core/error.h"

namespace polyplug::host {
namespace {

namespace fs = std::filesystem;
using core::ErrorReason;
using core::MakeError;

constexpr char kStagingDir[] = ".polyplug-staging";
constexpr char kLockFile[] = ".polyplug-deploy.lock";

absl::Status FileError(absl::string_view what, const fs::path& path, int error) {
  return MakeError(
      error == ENOSPC || error == EDQUOT ? ErrorReason::kNoSpace : ErrorReason::kInternal,
      absl::StrCat("cannot ", what, " ", path.string(), ": ", std::strerror(error)));
}

void SyncDirectory(const fs::path& dir) {
  const int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  fsync(fd);
  close(fd);
}

}  // namespace

absl::StatusOr<std::unique_ptr<DeployRoot>> DeployRoot::Open(const fs::path& dir,
                                                             UploadLimits limits) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return FileError("create the deploy root", dir, ec.value());
  const fs::path canonical = fs::canonical(dir, ec);
  if (ec) return FileError("resolve the deploy root", dir, ec.value());
  if (!fs::is_directory(canonical, ec)) {
    return MakeError(ErrorReason::kInvalidArgument,
                     absl::StrCat("--deploy-root ", dir.string(), " is not a directory"));
  }
  const fs::path lock_path = canonical / kLockFile;
  const int lock_fd = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (lock_fd < 0) return FileError("create", lock_path, errno);
  if (flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    close(lock_fd);
    if (error == EWOULDBLOCK) {
      return MakeError(ErrorReason::kInvalidArgument,
                       absl::StrCat("--deploy-root ", canonical.string(),
                                    " belongs to another running polyplug-host (it holds ",
                                    lock_path.string(), "); give each host a deploy root"));
    }
    return FileError("lock", lock_path, error);
  }
  auto root = std::unique_ptr<DeployRoot>(new DeployRoot(canonical, limits, lock_fd));
  // Uploads an earlier host did not finish (it was killed mid-upload) are dropped.
  fs::remove_all(root->staging_, ec);
  fs::create_directory(root->staging_, ec);
  if (ec) return FileError("create", root->staging_, ec.value());
  return root;
}

DeployRoot::DeployRoot(fs::path dir, UploadLimits limits, int lock_fd)
    : dir_(std::move(dir)), staging_(dir_ / kStagingDir), limits_(limits), lock_fd_(lock_fd) {}

DeployRoot::~DeployRoot() { close(lock_fd_); }

absl::StatusOr<std::unique_ptr<BundleUpload>> DeployRoot::BeginUpload(UploadHeader header) {
  const fs::path staging =
      staging_ / absl::StrCat(header.bundle_name, ".", next_upload_.fetch_add(1));
  return BundleUpload::Begin(std::move(header), limits_, staging);
}

absl::Status DeployRoot::Revert(const fs::path& staging, const fs::path& target, bool exchanged) {
  const int rc =
      exchanged ? renameat2(AT_FDCWD, staging.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE)
                : renameat2(AT_FDCWD, target.c_str(), AT_FDCWD, staging.c_str(), RENAME_NOREPLACE);
  if (rc != 0) return FileError("move the previous files back to", target, errno);
  SyncDirectory(dir_);
  return absl::OkStatus();
}

DeployOutcome DeployRoot::Deploy(core::Runtime& runtime, BundleUpload& upload) {
  DeployOutcome out;
  const std::string& name = upload.header().bundle_name;
  const fs::path target = dir_ / name;
  out.dir = target;
  auto fail = [&out](absl::Status status) {
    out.action = DeployOutcome::Action::kFailed;
    out.failure = std::move(status);
    return out;
  };
  std::optional<core::BundleInfo> loaded;
  for (core::BundleInfo& info : runtime.ListBundles()) {
    if (info.name == name) {
      loaded = std::move(info);
    } else if (info.dir == target) {
      return fail(MakeError(ErrorReason::kBundleAlreadyLoaded,
                            absl::StrCat(target.string(), " holds bundle \"", info.name,
                                         "\", which is loaded; a push of \"", name,
                                         "\" cannot replace another bundle's files")));
    }
  }
  if (loaded && loaded->dir != target) {
    return fail(MakeError(
        ErrorReason::kBundleAlreadyLoaded,
        absl::StrCat("bundle \"", name, "\" is loaded from ", loaded->dir.string(),
                     ", outside the deploy root ", dir_.string(),
                     "; a push replaces only bundles loaded from the deploy root (unload it "
                     "first to deploy it by push from now on)")));
  }

  // The upload takes the bundle's place in one rename; the files it replaces (a version
  // that is loaded, or one that failed to load) move to the staging directory.
  struct stat st;
  const bool exists = lstat(target.c_str(), &st) == 0;
  if (exists && !S_ISDIR(st.st_mode)) {
    return fail(MakeError(ErrorReason::kInvalidArgument,
                          absl::StrCat(target.string(),
                                       " exists and is not a directory (a symlink or file); "
                                       "remove it to deploy bundle \"",
                                       name, "\" there")));
  }
  const fs::path& staging = upload.staging_dir();
  if (renameat2(AT_FDCWD, staging.c_str(), AT_FDCWD, target.c_str(),
                exists ? RENAME_EXCHANGE : RENAME_NOREPLACE) != 0) {
    return fail(FileError("move the upload into place as", target, errno));
  }
  SyncDirectory(dir_);
  auto undo = [&](absl::Status why) {
    if (absl::Status s = Revert(staging, target, exists); !s.ok()) {
      why = MakeError(core::ReasonOf(why), absl::StrCat(why.message(), "; and ", s.message()));
    }
    return fail(std::move(why));
  };

  const uint64_t before = runtime.journal().last_seq();
  if (loaded) {
    absl::StatusOr<core::ReloadOutcome> outcome = runtime.ReloadBundle(target);
    if (!outcome.ok()) return undo(outcome.status());
    out.reload_id = outcome->reload_id;
    out.events = outcome->events;
    if (!outcome->ok()) return undo(outcome->status);
    out.failed_dependents = outcome->FailedDependents();
    out.action = out.failed_dependents.empty() ? DeployOutcome::Action::kReloaded
                                               : DeployOutcome::Action::kDependentsFailed;
  } else {
    absl::StatusOr<core::BundleInfo> info = runtime.LoadBundle(target);
    if (!info.ok()) return undo(info.status());
    auto events = runtime.journal().ReadAfter(before);
    if (events.ok()) {
      for (core::PhaseEvent& e : *events) {
        if (e.bundle_id == info->id && e.phase == core::Phase::kLoaded) {
          out.reload_id = e.reload_id;
          out.events.push_back(std::move(e));
        }
      }
    }
    out.action = DeployOutcome::Action::kLoaded;
  }
  for (core::BundleInfo& info : runtime.ListBundles()) {
    if (info.name == name) out.bundle = std::move(info);
  }
  return out;
}

}  // namespace polyplug::host
