#include "host/src/recovery_state.h"

#include <unistd.h>

#include <toml++/toml.h>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "polyplug/core/error.h"
#include "polyplug/core/ids.h"

namespace polyplug::host {
namespace {

namespace fs = std::filesystem;
using core::ErrorReason;
using core::MakeError;

constexpr char kQuarantineFile[] = "quarantine.toml";
constexpr char kRunningSetFile[] = "running.toml";

absl::StatusOr<std::optional<toml::table>> ReadToml(const fs::path& file) {
  std::error_code ec;
  if (!fs::exists(file, ec)) return std::nullopt;
  try {
    return toml::parse_file(file.string());
  } catch (const toml::parse_error& e) {
    return MakeError(ErrorReason::kInternal,
                     absl::StrCat(file.string(), ": ", std::string(e.description())));
  }
}

// Writes `table` to `file` through a temporary file and a rename.
absl::Status WriteToml(const fs::path& file, const toml::table& table) {
  const fs::path temp = fs::path(file).concat(absl::StrCat(".", getpid(), ".tmp"));
  {
    std::ofstream out(temp, std::ios::trunc);
    out << "# Written by polyplug-host --supervise.\n" << table << "\n";
    out.flush();
    if (!out) {
      return MakeError(ErrorReason::kInternal, absl::StrCat("cannot write ", temp.string()));
    }
  }
  std::error_code ec;
  fs::rename(temp, file, ec);
  if (ec) {
    return MakeError(ErrorReason::kInternal,
                     absl::StrCat("cannot replace ", file.string(), ": ", ec.message()));
  }
  return absl::OkStatus();
}

std::string StringOf(const toml::table& table, std::string_view key) {
  return table[key].value_or(std::string());
}

}  // namespace

fs::path RecoveryState::HealthyCopies(absl::string_view name) const {
  // By id: bundle names may hold characters a path should not.
  return dir_ / "healthy" / core::FormatBundleId(core::BundleId(name));
}

fs::path RecoveryState::HealthyCopy(absl::string_view name, absl::string_view sha256) const {
  return HealthyCopies(name) / std::string(sha256);
}

absl::StatusOr<std::vector<QuarantineEntry>> RecoveryState::ReadQuarantine() const {
  auto table = ReadToml(dir_ / kQuarantineFile);
  if (!table.ok()) return table.status();
  std::vector<QuarantineEntry> entries;
  if (!table->has_value()) return entries;
  if (const toml::array* versions = (**table)["version"].as_array()) {
    for (const toml::node& node : *versions) {
      const toml::table* t = node.as_table();
      if (t == nullptr) continue;
      QuarantineEntry e;
      e.bundle_name = StringOf(*t, "bundle");
      e.version = StringOf(*t, "version");
      e.sha256 = StringOf(*t, "sha256");
      e.signal = StringOf(*t, "signal");
      e.during = StringOf(*t, "during");
      e.message = StringOf(*t, "message");
      e.restart = static_cast<uint32_t>((*t)["restart"].value_or(int64_t{0}));
      std::string error;
      if (!absl::ParseTime(absl::RFC3339_full, StringOf(*t, "crashed_at"), &e.crashed_at, &error)) {
        e.crashed_at = absl::UnixEpoch();
      }
      entries.push_back(std::move(e));
    }
  }
  return entries;
}

absl::Status RecoveryState::WriteQuarantine(const std::vector<QuarantineEntry>& entries) const {
  toml::array versions;
  for (const QuarantineEntry& e : entries) {
    versions.push_back(toml::table{
        {"bundle", e.bundle_name},
        {"version", e.version},
        {"sha256", e.sha256},
        {"signal", e.signal},
        {"during", e.during},
        {"crashed_at", absl::FormatTime(absl::RFC3339_full, e.crashed_at, absl::UTCTimeZone())},
        {"restart", static_cast<int64_t>(e.restart)},
        {"message", e.message},
    });
  }
  return WriteToml(dir_ / kQuarantineFile, toml::table{{"version", std::move(versions)}});
}

absl::StatusOr<std::optional<std::vector<RunningBundle>>> RecoveryState::ReadRunningSet() const {
  auto table = ReadToml(dir_ / kRunningSetFile);
  if (!table.ok()) return table.status();
  if (!table->has_value()) return std::nullopt;
  std::vector<RunningBundle> bundles;
  if (const toml::array* list = (**table)["bundle"].as_array()) {
    for (const toml::node& node : *list) {
      const toml::table* t = node.as_table();
      if (t == nullptr) continue;
      RunningBundle b;
      b.name = StringOf(*t, "name");
      b.dir = StringOf(*t, "dir");
      if (const toml::array* healthy = (*t)["healthy"].as_array()) {
        for (const toml::node& sha : *healthy) {
          if (auto text = sha.value<std::string>()) b.healthy.push_back(*text);
        }
      }
      bundles.push_back(std::move(b));
    }
  }
  return std::optional<std::vector<RunningBundle>>(std::move(bundles));
}

absl::Status RecoveryState::WriteRunningSet(const std::vector<RunningBundle>& bundles) const {
  toml::array list;
  for (const RunningBundle& b : bundles) {
    toml::array healthy;
    for (const std::string& sha : b.healthy) healthy.push_back(sha);
    list.push_back(
        toml::table{{"name", b.name}, {"dir", b.dir.string()}, {"healthy", std::move(healthy)}});
  }
  return WriteToml(dir_ / kRunningSetFile, toml::table{{"bundle", std::move(list)}});
}

absl::Status RecoveryState::Reset() const {
  std::error_code ec;
  for (const char* name : {kQuarantineFile, kRunningSetFile}) fs::remove(dir_ / name, ec);
  fs::remove_all(dir_ / "healthy", ec);
  ClearServerFiles();
  // Private when made here; a directory the user named keeps its mode.
  if (fs::create_directories(dir_, ec)) fs::permissions(dir_, fs::perms::owner_all, ec);
  if (ec || !fs::is_directory(dir_, ec)) {
    return MakeError(ErrorReason::kInvalidArgument,
                     absl::StrCat("--state-dir ", dir_.string(),
                                  " cannot be used: ", ec ? ec.message() : "not a directory"));
  }
  return absl::OkStatus();
}

void RecoveryState::ClearServerFiles() const {
  std::error_code ec;
  fs::remove(crash_record(), ec);
  fs::remove_all(artifacts(), ec);
}

}  // namespace polyplug::host
