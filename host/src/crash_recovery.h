// CrashRecovery: the supervised server's part of crash recovery (polyplug-host --supervise).
//
// The supervisor restarts the server after it died and quarantines the bundle version the
// crash record blames. The restarted server, through this class: refuses quarantined
// artifacts (Admit, as RuntimeOptions::admit_artifact), loads what ran before the crash at
// its newest healthy version (RestoreSources), announces the crash that caused the restart
// (CrashEvents), keeps a copy of every version that loads or reloads, and records the
// running set once it serves (OnPhase, MarkReady). Thread-safe.
#ifndef POLYPLUG_HOST_SRC_CRASH_RECOVERY_H_
#define POLYPLUG_HOST_SRC_CRASH_RECOVERY_H_

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "host/src/recovery_state.h"
#include "polyplug/core/manifest.h"
#include "polyplug/core/phase_event.h"
#include "polyplug/core/runtime.h"

namespace polyplug::host {

class CrashRecovery {
 public:
  // `state_dir` is the supervisor's RecoveryState; `restart` how many times the supervisor
  // restarted the server before this run; `ready_fd` the pipe MarkReady writes to (-1: none).
  // Installs the process's crash record.
  static absl::StatusOr<std::unique_ptr<CrashRecovery>> Start(std::filesystem::path state_dir,
                                                              uint32_t restart, int ready_fd);
  CrashRecovery(const CrashRecovery&) = delete;
  CrashRecovery& operator=(const CrashRecovery&) = delete;

  const RecoveryState& state() const { return state_; }
  uint32_t restart() const { return restart_; }

  // CRASHED for an artifact whose bytes crashed the server; OK otherwise.
  absl::Status Admit(const core::Manifest& manifest, absl::string_view sha256) const;

  // What a restarted server loads: every bundle that ran before the crash, each at the
  // newest healthy version kept that is not quarantined (a bundle without one stays out).
  // nullopt when no server served yet: then the bundle roots are loaded as usual.
  std::optional<std::vector<core::BundleSource>> RestoreSources();

  // FAILED events (reason CRASHED) for the versions the crash before this run quarantined.
  std::vector<core::PhaseEvent> CrashEvents() const;
  // Every quarantined version, oldest first.
  const std::vector<QuarantineEntry>& quarantined() const { return quarantined_; }
  // A quarantined version as the FAILED event that reports it.
  static core::PhaseEvent EventOf(const QuarantineEntry& entry);

  // Bundles that ran before the crash and that the restore left out (e.g. a dependent of a
  // quarantined provider), as FAILED events with their reason. Part of the server's state
  // like the quarantine (snapshots list them) until a bundle of that name loads again.
  void NoteNotRestored(std::vector<core::PhaseEvent> events);
  std::vector<core::PhaseEvent> NotRestored() const;

  // Journal listener: keeps a copy of each version that LOADED or RELOADED (the last few
  // per bundle) and, once ready, keeps the running set on disk.
  void OnPhase(const core::Runtime& runtime, const core::PhaseEvent& event);

  // The server serves: records the running set, then tells the supervisor which addresses
  // it listens on (so that a restart keeps a port chosen for :0).
  void MarkReady(const core::Runtime& runtime, const std::vector<std::string>& listen_addresses);

 private:
  CrashRecovery(std::filesystem::path state_dir, uint32_t restart, int ready_fd,
                std::vector<QuarantineEntry> quarantined);
  // Copies the loaded version of `bundle` into the state dir; returns its SHA-256.
  void KeepHealthyCopy(const core::BundleInfo& bundle);
  void WriteRunningSetLocked();

  const RecoveryState state_;
  const uint32_t restart_;
  int ready_fd_;
  const std::vector<QuarantineEntry> quarantined_;

  mutable std::mutex mu_;
  std::map<std::string, RunningBundle> running_;  // guarded by mu_; by name
  std::vector<core::PhaseEvent> not_restored_;    // guarded by mu_
  bool ready_ = false;                            // guarded by mu_
};

}  // namespace polyplug::host

#endif  // POLYPLUG_HOST_SRC_CRASH_RECOVERY_H_
