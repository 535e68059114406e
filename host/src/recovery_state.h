// RecoveryState: the directory polyplug-host --supervise keeps across restarts of its
// server process.
//
//   crash-record          the running server's core crash record (crash_record.h)
//   quarantine.toml       bundle versions that crashed the server; written by the supervisor
//   running.toml          the bundles the server runs and their healthy versions kept;
//                         written by the server once it serves, read by the next one
//   healthy/<id>/<sha256>/ a healthy version: its manifest.toml and artifact
//   artifacts/            the server's private artifact copies (its runtime state dir)
//
// Plain files, so that the supervisor and the server (separate processes, one at a time)
// share them without more protocol, and a person can look. Not thread-safe.
#ifndef POLYPLUG_HOST_SRC_RECOVERY_STATE_H_
#define POLYPLUG_HOST_SRC_RECOVERY_STATE_H_

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace polyplug::host {

// A bundle version that crashed the server: refused until its artifact's bytes change.
struct QuarantineEntry {
  std::string bundle_name;
  std::string version;  // "2.0.0"
  std::string sha256;   // of the artifact that crashed
  std::string signal;   // "SIGSEGV"
  std::string during;   // "polyplug_init", "method \"crash\""
  absl::Time crashed_at;
  uint32_t restart = 0;  // the restart this crash caused (1 = the first)
  std::string message;   // the FAILED event's message
};

// A bundle the server runs: where it lives, and the healthy versions kept of it.
struct RunningBundle {
  std::string name;
  std::filesystem::path dir;
  std::vector<std::string> healthy;  // SHA-256 of each, newest first
};

class RecoveryState {
 public:
  explicit RecoveryState(std::filesystem::path dir) : dir_(std::move(dir)) {}

  const std::filesystem::path& dir() const { return dir_; }
  std::filesystem::path crash_record() const { return dir_ / "crash-record"; }
  std::filesystem::path artifacts() const { return dir_ / "artifacts"; }
  // Where the healthy version `sha256` of bundle `name` is kept.
  std::filesystem::path HealthyCopy(absl::string_view name, absl::string_view sha256) const;
  std::filesystem::path HealthyCopies(absl::string_view name) const;

  // Empty when there is no quarantine file.
  absl::StatusOr<std::vector<QuarantineEntry>> ReadQuarantine() const;
  absl::Status WriteQuarantine(const std::vector<QuarantineEntry>& entries) const;

  // nullopt when no server has written one (nothing ran yet).
  absl::StatusOr<std::optional<std::vector<RunningBundle>>> ReadRunningSet() const;
  // Replaces the file in one rename, so a crash never leaves half of it.
  absl::Status WriteRunningSet(const std::vector<RunningBundle>& bundles) const;

  // Creates the directory empty: what a new supervisor starts from.
  absl::Status Reset() const;
  // Removes what belonged to a server that is gone: its crash record and artifact copies.
  void ClearServerFiles() const;

 private:
  std::filesystem::path dir_;
};

}  // namespace polyplug::host

#endif  // POLYPLUG_HOST_SRC_RECOVERY_STATE_H_
