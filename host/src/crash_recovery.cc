#include "host/src/crash_recovery.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/src/crash_record.h"
#include "core/src/paths.h"
#include "polyplug/core/error.h"
#include "polyplug/core/ids.h"

namespace polyplug::host {
namespace {

namespace fs = std::filesystem;
using core::ErrorReason;
using core::MakeError;

// Healthy versions kept per bundle: the one running and the ones before it to fall back to
// when it crashes in a call.
constexpr size_t kHealthyVersionsKept = 3;

void Log(const std::string& line) {
  std::fprintf(stderr, "polyplug-host: recovery: %s\n", line.c_str());
}

}  // namespace

absl::StatusOr<std::unique_ptr<CrashRecovery>> CrashRecovery::Start(fs::path state_dir,
                                                                    uint32_t restart,
                                                                    int ready_fd) {
  RecoveryState state(state_dir);
  auto quarantined = state.ReadQuarantine();
  if (!quarantined.ok()) return quarantined.status();
  if (absl::Status s = core::InstallCrashRecord(state.crash_record()); !s.ok()) return s;
  return std::unique_ptr<CrashRecovery>(
      new CrashRecovery(std::move(state_dir), restart, ready_fd, *std::move(quarantined)));
}

CrashRecovery::CrashRecovery(fs::path state_dir, uint32_t restart, int ready_fd,
                             std::vector<QuarantineEntry> quarantined)
    : state_(std::move(state_dir)),
      restart_(restart),
      ready_fd_(ready_fd),
      quarantined_(std::move(quarantined)) {}

absl::Status CrashRecovery::Admit(const core::Manifest& manifest, absl::string_view sha256) const {
  for (const QuarantineEntry& e : quarantined_) {
    if (e.bundle_name != manifest.name || e.sha256 != sha256) continue;
    return MakeError(
        ErrorReason::kCrashed,
        absl::StrCat("bundle \"", manifest.name, "\" ", manifest.version.ToString(), ": artifact ",
                     (manifest.dir / manifest.file).string(), " (sha256 ", sha256.substr(0, 12),
                     ") is quarantined: the same build crashed the host with ", e.signal, " in ",
                     e.during, " at ",
                     absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", e.crashed_at, absl::UTCTimeZone()),
                     ". Rebuild it (any change to the artifact lifts the quarantine), or "
                     "restart polyplug-host --supervise to forget"));
  }
  return absl::OkStatus();
}

std::optional<std::vector<core::BundleSource>> CrashRecovery::RestoreSources() {
  auto running = state_.ReadRunningSet();
  if (!running.ok()) {
    Log(absl::StrCat("cannot read the running set, loading the bundle roots instead: ",
                     running.status().message()));
    return std::nullopt;
  }
  if (!running->has_value()) return std::nullopt;
  std::vector<core::BundleSource> sources;
  std::lock_guard<std::mutex> lock(mu_);
  for (const RunningBundle& bundle : **running) {
    RunningBundle kept{bundle.name, bundle.dir, {}};
    for (const std::string& sha : bundle.healthy) {
      const bool crashed =
          std::any_of(quarantined_.begin(), quarantined_.end(), [&](const QuarantineEntry& e) {
            return e.bundle_name == bundle.name && e.sha256 == sha;
          });
      std::error_code ec;
      if (!crashed && fs::is_directory(state_.HealthyCopy(bundle.name, sha), ec)) {
        kept.healthy.push_back(sha);
      }
    }
    if (kept.healthy.empty()) {
      Log(absl::StrCat("not restoring bundle \"", bundle.name,
                       "\": no healthy version of it is left that did not crash the host"));
      std::error_code ec;
      fs::remove_all(state_.HealthyCopies(bundle.name), ec);
      continue;
    }
    if (kept.healthy.front() != bundle.healthy.front()) {
      Log(absl::StrCat("restoring bundle \"", bundle.name, "\" at an earlier healthy version (",
                       kept.healthy.front().substr(0, 12), "): its newest one crashed the host"));
    }
    sources.push_back({bundle.dir, state_.HealthyCopy(bundle.name, kept.healthy.front())});
    // OnPhase puts the version loaded first once it LOADED; the older ones follow it.
    running_[bundle.name] = std::move(kept);
  }
  return sources;
}

core::PhaseEvent CrashRecovery::EventOf(const QuarantineEntry& entry) {
  core::PhaseEvent event;
  event.phase = core::Phase::kFailed;
  event.bundle_id = core::BundleId(entry.bundle_name);
  event.bundle_name = entry.bundle_name;
  if (auto version = core::ParseVersion(entry.version); version.ok()) {
    event.bundle_version = *version;
  }
  event.reason = ErrorReason::kCrashed;
  event.message = entry.message;
  event.artifact_sha256 = entry.sha256;
  event.timestamp_unix_nanos = absl::ToUnixNanos(entry.crashed_at);
  return event;
}

std::vector<core::PhaseEvent> CrashRecovery::CrashEvents() const {
  std::vector<core::PhaseEvent> events;
  for (const QuarantineEntry& e : quarantined_) {
    if (e.restart == restart_ && restart_ > 0) events.push_back(EventOf(e));
  }
  return events;
}

void CrashRecovery::KeepHealthyCopy(const core::BundleInfo& bundle) {
  std::error_code ec;
  const fs::path dest = state_.HealthyCopy(bundle.name, bundle.artifact_sha256);
  if (fs::is_directory(dest, ec)) return;
  const fs::path relative = bundle.artifact.lexically_relative(bundle.dir).lexically_normal();
  if (relative.empty() || relative.is_absolute() || *relative.begin() == "..") {
    Log(absl::StrCat("not keeping a copy of bundle \"", bundle.name, "\": its artifact ",
                     bundle.artifact.string(), " is not inside ", bundle.dir.string()));
    return;
  }
  const fs::path temp = fs::path(dest).concat(absl::StrCat(".", getpid(), ".tmp"));
  fs::remove_all(temp, ec);
  fs::create_directories((temp / relative).parent_path(), ec);
  // Every file of the bundle, so that a copy of a signed bundle is a signed bundle (the
  // signature covers them all; a restore under --signature-policy checks the copy).
  for (fs::recursive_directory_iterator it(bundle.dir, ec), end; !ec && it != end;
       it.increment(ec)) {
    const fs::path from = it->path();
    const fs::path to = temp / from.lexically_relative(bundle.dir);
    if (it->is_symlink(ec)) continue;
    if (it->is_directory(ec)) {
      fs::create_directories(to, ec);
    } else if (it->is_regular_file(ec) && from != bundle.artifact) {
      fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
    }
  }
  if (!ec) {
    // The private copy holds exactly the bytes that loaded; a hard link costs nothing.
    fs::remove(temp / relative, ec);
    fs::create_hard_link(bundle.image, temp / relative, ec);
    if (ec) fs::copy_file(bundle.image, temp / relative, ec);
  }
  if (!ec) fs::rename(temp, dest, ec);
  if (ec) {
    Log(absl::StrCat("cannot keep a copy of bundle \"", bundle.name, "\" in ", dest.string(), ": ",
                     ec.message()));
    fs::remove_all(temp, ec);
  }
}

void CrashRecovery::NoteNotRestored(std::vector<core::PhaseEvent> events) {
  std::lock_guard<std::mutex> lock(mu_);
  for (core::PhaseEvent& e : events) not_restored_.push_back(std::move(e));
}

std::vector<core::PhaseEvent> CrashRecovery::NotRestored() const {
  std::lock_guard<std::mutex> lock(mu_);
  return not_restored_;
}

void CrashRecovery::OnPhase(const core::Runtime& runtime, const core::PhaseEvent& event) {
  if (event.phase == core::Phase::kLoaded) {
    std::lock_guard<std::mutex> lock(mu_);
    std::erase_if(not_restored_,
                  [&](const core::PhaseEvent& e) { return e.bundle_name == event.bundle_name; });
  }
  if (event.phase == core::Phase::kLoaded || event.phase == core::Phase::kReloaded) {
    auto bundle = runtime.GetBundle(event.bundle_name);
    if (!bundle.ok() || bundle->artifact_sha256.empty()) return;
    KeepHealthyCopy(*bundle);
    std::lock_guard<std::mutex> lock(mu_);
    RunningBundle& running = running_[bundle->name];
    running.name = bundle->name;
    running.dir = bundle->dir;
    std::vector<std::string> healthy{bundle->artifact_sha256};
    for (const std::string& sha : running.healthy) {
      if (sha == bundle->artifact_sha256) continue;
      if (healthy.size() < kHealthyVersionsKept) {
        healthy.push_back(sha);
      } else {
        std::error_code ec;
        fs::remove_all(state_.HealthyCopy(bundle->name, sha), ec);
      }
    }
    running.healthy = std::move(healthy);
    if (ready_) WriteRunningSetLocked();
  } else if (event.phase == core::Phase::kUnloading) {
    std::lock_guard<std::mutex> lock(mu_);
    if (running_.erase(event.bundle_name) == 0) return;
    std::error_code ec;
    fs::remove_all(state_.HealthyCopies(event.bundle_name), ec);
    if (ready_) WriteRunningSetLocked();
  }
}

void CrashRecovery::WriteRunningSetLocked() {
  std::vector<RunningBundle> bundles;
  for (const auto& [name, bundle] : running_) bundles.push_back(bundle);
  if (absl::Status s = state_.WriteRunningSet(bundles); !s.ok()) Log(std::string(s.message()));
}

void CrashRecovery::MarkReady(const core::Runtime& runtime,
                              const std::vector<std::string>& listen_addresses) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    // A restored bundle that did not load again is not running, unless the restore left it
    // out (NoteNotRestored): then the next restart tries it again, and reports it again.
    for (auto it = running_.begin(); it != running_.end();) {
      const std::string& name = it->first;
      const bool left_out =
          std::any_of(not_restored_.begin(), not_restored_.end(),
                      [&](const core::PhaseEvent& e) { return e.bundle_name == name; });
      it = runtime.GetBundle(name).ok() || left_out ? std::next(it) : running_.erase(it);
    }
    ready_ = true;
    WriteRunningSetLocked();
  }
  if (ready_fd_ < 0) return;
  const std::string line = absl::StrCat("ready ", absl::StrJoin(listen_addresses, " "), "\n");
  (void)!write(ready_fd_, line.data(), line.size());
  close(ready_fd_);
  ready_fd_ = -1;
}

}  // namespace polyplug::host
