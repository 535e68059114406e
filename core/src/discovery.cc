// Runtime::DiscoverAndLoad and LoadAll: scanning bundle roots and loading in dependency
// order (docs/SEMANTICS.md §9).
#include <algorithm>
#include <map>
#include <set>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/src/dependency_graph.h"
#include "polyplug/core/error.h"
#include "polyplug/core/ids.h"
#include "polyplug/core/runtime.h"

namespace polyplug::core {
namespace {

namespace fs = std::filesystem;

struct Candidate {
  Manifest manifest;
  BundleSource source;
  std::set<std::string> needs;  // names of the candidates it depends on
};

}  // namespace

absl::StatusOr<std::vector<BundleInfo>> Runtime::DiscoverAndLoad(
    const std::vector<fs::path>& roots, bool skip_unloadable, std::vector<NotLoaded>* not_loaded) {
  // One level deep; sorted by name within a root; de-duplicated by directory across roots.
  std::vector<std::pair<Manifest, BundleSource>> found;
  std::set<fs::path> seen_dirs;
  for (const fs::path& root : roots) {
    std::error_code ec;
    if (!fs::is_directory(root, ec)) {
      return MakeError(ErrorReason::kInvalidArgument,
                       absl::StrCat("bundle root ", root.string(), " is not a directory"));
    }
    std::vector<Manifest> in_root;
    for (const fs::directory_entry& entry : fs::directory_iterator(root, ec)) {
      if (!entry.is_directory() || !fs::exists(entry.path() / "manifest.toml")) continue;
      auto manifest = LoadManifest(entry.path());
      if (!manifest.ok()) {
        Log(LogLevel::kWarn, "scan",
            absl::StrCat("skipping ", entry.path().string(), ": ", manifest.status().message()));
        if (not_loaded) {
          not_loaded->push_back(
              {entry.path().filename().string(), entry.path(), manifest.status()});
        }
        continue;
      }
      fs::path dir = fs::weakly_canonical(entry.path(), ec);
      if (!seen_dirs.insert(dir).second) continue;
      in_root.push_back(*std::move(manifest));
    }
    // By name, then by directory: two directories of one bundle name (its v1/ and v2/)
    // load the first, whatever order the file system lists them in.
    std::sort(in_root.begin(), in_root.end(), [](const Manifest& a, const Manifest& b) {
      return std::tie(a.name, a.dir) < std::tie(b.name, b.dir);
    });
    for (Manifest& m : in_root) {
      BundleSource source{m.dir, {}};
      found.emplace_back(std::move(m), std::move(source));
    }
  }
  return LoadInOrder(std::move(found), skip_unloadable, not_loaded);
}

absl::StatusOr<std::vector<BundleInfo>> Runtime::LoadAll(const std::vector<BundleSource>& sources,
                                                         bool skip_unloadable,
                                                         std::vector<NotLoaded>* not_loaded) {
  std::vector<std::pair<Manifest, BundleSource>> found;
  std::set<fs::path> seen_dirs;
  for (const BundleSource& source : sources) {
    auto manifest = LoadManifest(source.files.empty() ? source.dir : source.files);
    if (!manifest.ok()) {
      Log(LogLevel::kWarn, "scan",
          absl::StrCat("skipping ", source.dir.string(), ": ", manifest.status().message()));
      if (not_loaded) {
        not_loaded->push_back({source.dir.filename().string(), source.dir, manifest.status()});
      }
      continue;
    }
    std::error_code ec;
    if (!seen_dirs.insert(fs::weakly_canonical(source.dir, ec)).second) continue;
    found.emplace_back(*std::move(manifest), source);
  }
  return LoadInOrder(std::move(found), skip_unloadable, not_loaded);
}

absl::StatusOr<std::vector<BundleInfo>> Runtime::LoadInOrder(
    std::vector<std::pair<Manifest, BundleSource>> found, bool skip_unloadable,
    std::vector<NotLoaded>* not_loaded) {
  // Providers: what the candidates provide, and what is already loaded.
  std::map<std::string, Candidate> candidates;
  absl::flat_hash_map<uint64_t, std::string> provider_of;  // contract id -> candidate name
  absl::flat_hash_map<uint64_t, bool> loaded_contracts;
  for (const ContractEntry& e : registry_.List()) loaded_contracts[e.contract_id] = true;
  std::set<std::string> loaded_names;
  for (const BundleInfo& b : ListBundles()) loaded_names.insert(b.name);
  for (auto& [m, source] : found) {
    if (loaded_names.contains(m.name) || candidates.contains(m.name)) continue;
    for (const ContractRef& ref : m.provides) {
      provider_of.emplace(GuestContractId(ref.name, ref.major()), m.name);
    }
    std::string name = m.name;
    candidates[name].manifest = std::move(m);
    candidates[name].source = std::move(source);
  }
  // Every bundle left out, for the caller.
  auto leave_out = [&](const std::string& name, absl::Status status) {
    if (not_loaded == nullptr) return;
    auto it = candidates.find(name);
    not_loaded->push_back(
        {name, it != candidates.end() ? it->second.source.dir : fs::path(), std::move(status)});
  };
  // What cannot be ordered: an error, or (skip_unloadable) a log line and a skipped bundle.
  std::set<std::string> skipped;
  auto refuse = [&](const std::string& name, absl::Status status) -> absl::Status {
    if (!skip_unloadable) return status;
    Log(LogLevel::kWarn, "scan",
        absl::StrCat("[", ReasonToken(ReasonOf(status)), "] ", status.message(), "; not loading ",
                     name));
    if (skipped.insert(name).second) leave_out(name, status);
    return absl::OkStatus();
  };
  for (auto& [name, c] : candidates) {
    for (const ManifestDependency& dep : c.manifest.dependencies) {
      if (dep.contract.empty() && dep.contract_id == 0) continue;
      const uint64_t id = dep.DeclaredContractId();
      if (auto it = provider_of.find(id); it != provider_of.end()) {
        if (it->second != name) c.needs.insert(it->second);
      } else if (!loaded_contracts.contains(id)) {
        std::string label = dep.contract.empty() ? FormatContractId(id) : dep.contract;
        if (label.find('@') == std::string::npos && !dep.min_version.empty()) {
          absl::StrAppend(&label, " (min_version ", dep.min_version, ")");
        }
        if (absl::Status s = refuse(
                name, MakeError(ErrorReason::kUnsatisfiedDependency,
                                absl::StrCat("bundle \"", name, "\" (", c.manifest.path.string(),
                                             ") depends on contract ", label,
                                             ", which no bundle in the roots or loaded provides")));
            !s.ok()) {
          return s;
        }
      }
    }
    for (const ContractRef& dep : c.manifest.bundle_dependencies) {
      if (candidates.contains(dep.name)) {
        if (dep.name != name) c.needs.insert(dep.name);
      } else if (!loaded_names.contains(dep.name)) {
        if (absl::Status s = refuse(
                name,
                MakeError(ErrorReason::kUnsatisfiedDependency,
                          absl::StrCat("bundle \"", name, "\" (", c.manifest.path.string(),
                                       ", field 'bundle_dependencies') needs bundle \"", dep.name,
                                       "\", which is neither in the roots nor "
                                       "loaded")));
            !s.ok()) {
          return s;
        }
      }
    }
  }

  // Providers first; what cannot be ordered is an error or (skip_unloadable) left out.
  std::map<std::string, std::set<std::string>> needs;
  for (const auto& [name, c] : candidates) needs[name] = c.needs;
  const LoadOrder ordered = OrderForLoading(needs, skipped);
  if (!ordered.cycle.empty()) {
    const absl::Status cycle = MakeError(
        ErrorReason::kDependencyCycle,
        absl::StrCat("dependency cycle among bundles ", absl::StrJoin(ordered.cycle, ", "),
                     "; none of them can be loaded first"));
    if (!skip_unloadable) return cycle;
    // Which of them are in the cycle and which only need it is not told apart; none of
    // them can load.
    Log(LogLevel::kWarn, "scan",
        absl::StrCat("[", ReasonToken(ErrorReason::kDependencyCycle), "] ", cycle.message(),
                     "; not loading them"));
    for (const std::string& name : ordered.cycle) leave_out(name, cycle);
  }
  for (const auto& [name, blocked] : ordered.blocked) {
    const std::string why = absl::StrCat("not loading \"", name, "\": it needs ",
                                         absl::StrJoin(blocked, ", "), ", which cannot be loaded");
    Log(LogLevel::kWarn, "scan", why);
    leave_out(name, MakeError(ErrorReason::kUnsatisfiedDependency, why));
  }
  std::vector<const Candidate*> order;
  for (const std::string& name : ordered.order) order.push_back(&candidates.at(name));

  // A bundle that fails to load is reported and skipped, with everything that needs it;
  // the rest still loads so that one bad bundle does not take the others down.
  std::vector<BundleInfo> loaded;
  std::set<std::string> failed;
  for (const Candidate* c : order) {
    std::vector<std::string> blocked;
    std::set_intersection(c->needs.begin(), c->needs.end(), failed.begin(), failed.end(),
                          std::back_inserter(blocked));
    if (!blocked.empty()) {
      const std::string why = absl::StrCat("not loading \"", c->manifest.name, "\": it needs ",
                                           absl::StrJoin(blocked, ", "), ", which failed to load");
      Log(LogLevel::kWarn, "scan", why);
      leave_out(c->manifest.name, MakeError(ErrorReason::kUnsatisfiedDependency, why));
      failed.insert(c->manifest.name);
      continue;
    }
    auto info = LoadBundle(c->source);
    if (!info.ok()) {
      Log(LogLevel::kWarn, "scan",
          absl::StrCat("failed to load \"", c->manifest.name, "\": ", info.status().message()));
      leave_out(c->manifest.name, info.status());
      failed.insert(c->manifest.name);
      continue;
    }
    loaded.push_back(*std::move(info));
  }
  return loaded;
}

}  // namespace polyplug::core
