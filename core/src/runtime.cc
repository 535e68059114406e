#include "polyplug/core/runtime.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "polyplug/core/crash_record.h"
#include "polyplug/core/error.h"
#include "polyplug/core/ids.h"
#include "polyplug/core/native_loader.h"

namespace polyplug::core {
namespace {

namespace fs = std::filesystem;

bool IsValidUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t extra;
    if (c < 0x80) {
      extra = 0;
    } else if ((c >> 5) == 0x6) {
      extra = 1;
    } else if ((c >> 4) == 0xE) {
      extra = 2;
    } else if ((c >> 3) == 0x1E) {
      extra = 3;
    } else {
      return false;
    }
    if (extra > s.size() - i - 1) return false;
    for (size_t k = 1; k <= extra; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) return false;
    }
    i += extra + 1;
  }
  return true;
}

PolyplugAbiError AbiError(PolyplugAbiErrorCode code, absl::string_view static_message) {
  return {code, {static_message.data(), static_message.size()}};
}

fs::path CanonicalDir(const fs::path& path) {
  std::error_code ec;
  fs::path dir = fs::is_directory(path, ec) ? path : path.parent_path();
  fs::path canonical = fs::weakly_canonical(fs::absolute(dir, ec), ec);
  if (canonical.filename().empty()) canonical = canonical.parent_path();
  return canonical;
}

}  // namespace

class Runtime::Impl {
 public:
  struct LoadedBundle {
    Manifest manifest;
    fs::path artifact;
    std::shared_ptr<NativeLibrary> library;  // shared with its registry records
    std::vector<uint64_t> declared;
    uint64_t reload_count = 0;
  };

  // The bundle whose polyplug_init is running on this thread (the enforcement window).
  struct InitFrame {
    Impl* impl = nullptr;
    uint64_t bundle_id = 0;
    std::string bundle_name;
    absl::flat_hash_set<uint64_t> declared;
    std::vector<Registration> staged;
    absl::Status error;  // first registration error
  };

  // Collects the events of one mutation.
  struct OperationContext {
    std::vector<PhaseEvent> events;
    std::set<uint64_t> visited;
  };

  Impl(Runtime* runtime, fs::path state_dir, bool owns_state_dir)
      : runtime_(runtime),
        loader_(state_dir, runtime->options_.hash_artifacts ||
                               static_cast<bool>(runtime->options_.admit_artifact)),
        state_dir_(std::move(state_dir)),
        owns_state_dir_(owns_state_dir) {
    api_.runtime = this;
    api_.register_guest_contract = &Impl::ApiRegister;
    api_.find_guest_contract = &Impl::ApiFind;
    api_.resolve_guest_contract = &Impl::ApiResolve;
    api_.create_guest_instance = &Impl::ApiCreateInstance;
    api_.destroy_guest_instance = &Impl::ApiDestroyInstance;
    api_.log = &Impl::ApiLog;
    api_.registry_revision = &Impl::ApiRevision;
  }

  ~Impl() {
    // Silent teardown: listeners may already be gone, so no events are journaled. Remove
    // dependents first so no bundle outlives what it uses.
    std::lock_guard<std::mutex> op(op_mu_);
    for (;;) {
      std::vector<std::pair<std::string, uint64_t>> remaining;
      {
        std::lock_guard<std::mutex> lock(bundles_mu_);
        for (const auto& [id, b] : bundles_) remaining.push_back({b.manifest.name, id});
      }
      if (remaining.empty()) break;
      bool progressed = false;
      for (const auto& [name, id] : remaining) {
        if (!DependentsOf(id).empty()) continue;
        DropBundle(id);
        progressed = true;
      }
      if (!progressed) DropBundle(remaining.front().second);  // a cycle: break it anywhere
    }
    if (owns_state_dir_) {
      std::error_code ec;
      fs::remove_all(state_dir_, ec);
    }
  }

  const PolyplugHostApi* api() const { return &api_; }
  const fs::path& state_dir() const { return state_dir_; }

  // ---- Serialization of mutations ------------------------------------------------------

  class OperationLock {
   public:
    explicit OperationLock(Impl* impl) : impl_(impl) {
      impl_->op_mu_.lock();
      impl_->op_owner_.store(std::this_thread::get_id());
    }
    ~OperationLock() {
      impl_->op_owner_.store(std::thread::id());
      impl_->op_mu_.unlock();
    }

   private:
    Impl* impl_;
  };

  absl::Status CheckNotReentrant() const {
    if (op_owner_.load() == std::this_thread::get_id()) {
      return MakeError(ErrorReason::kReentrantCall,
                       "a phase callback or log sink tried to load, reload or unload a bundle "
                       "while another operation of the same runtime is running on this thread");
    }
    return absl::OkStatus();
  }

  // ---- Load -----------------------------------------------------------------------------

  absl::StatusOr<BundleInfo> Load(const BundleSource& source) {
    if (absl::Status s = CheckNotReentrant(); !s.ok()) return s;
    OperationLock op(this);
    OperationContext ctx;
    return LoadLocked(source, ctx);
  }

  absl::StatusOr<BundleInfo> LoadLocked(const BundleSource& source, OperationContext& ctx) {
    const bool elsewhere = !source.files.empty();
    auto manifest = LoadManifest(elsewhere ? source.files : source.dir);
    if (!manifest.ok()) return manifest.status();
    manifest->dir = CanonicalDir(manifest->dir);
    // The artifact is read where the files are; the bundle lives in its own directory.
    const Manifest files = *manifest;
    if (elsewhere) manifest->dir = CanonicalDir(source.dir);
    if (manifest->loader != NativeLoader::kName) return NoLoader(*manifest);
    {
      std::lock_guard<std::mutex> lock(bundles_mu_);
      if (auto it = bundles_.find(manifest->id); it != bundles_.end()) {
        return MakeError(
            ErrorReason::kBundleAlreadyLoaded,
            absl::StrCat("bundle \"", manifest->name, "\" (", FormatBundleId(manifest->id),
                         ") is already loaded from ", it->second.manifest.dir.string()));
      }
    }
    auto artifact = NativeLoader::ResolveArtifact(files);
    if (!artifact.ok()) return artifact.status();
    auto staged = StageAndAdmit(*manifest, *artifact);
    if (!staged.ok()) return staged.status();
    auto image = OpenAndInit(*manifest, *std::move(staged));
    if (!image.ok()) return image.status();
    auto& [library, staged_registrations] = *image;
    auto published = runtime_->registry_.Publish(manifest->id, std::move(staged_registrations));
    if (!published.ok()) {
      CloseLibrary(std::move(library), manifest->name);
      return published.status();
    }
    PhaseEvent event = BaseEvent(Phase::kLoaded, *manifest);
    event.reload_id = event.root_reload_id = NextOperationId();
    event.artifact_sha256 = library->sha256();
    LoadedBundle bundle;
    bundle.manifest = *manifest;
    bundle.artifact = *artifact;
    bundle.library = std::move(library);
    bundle.declared = manifest->DeclaredContractIds();
    {
      std::lock_guard<std::mutex> lock(bundles_mu_);
      bundles_[manifest->id] = std::move(bundle);
    }
    Emit(ctx, std::move(event));
    return InfoOf(manifest->id);
  }

  // Copies the artifact aside and asks RuntimeOptions::admit_artifact about its bytes.
  absl::StatusOr<StagedArtifact> StageAndAdmit(const Manifest& manifest, const fs::path& artifact,
                                               std::string* sha256 = nullptr) {
    auto staged = loader_.Stage(manifest, artifact);
    if (!staged.ok()) return staged.status();
    if (sha256 != nullptr) *sha256 = staged->sha256();
    if (runtime_->options_.admit_artifact) {
      if (absl::Status s = runtime_->options_.admit_artifact(manifest, staged->sha256()); !s.ok())
        return s;
    }
    return staged;
  }

  absl::Status NoLoader(const Manifest& manifest) const {
    return MakeError(ErrorReason::kNoLoader,
                     absl::StrCat(manifest.path.string(), ": field 'loader': bundle \"",
                                  manifest.name, "\" asks for loader \"", manifest.loader,
                                  "\"; this host has only \"", NativeLoader::kName, "\""));
  }

  // Opens the artifact, runs polyplug_init inside the enforcement window and checks what
  // it registered against the manifest. Nothing is published; on failure the library is
  // closed again.
  absl::StatusOr<std::pair<std::shared_ptr<NativeLibrary>, std::vector<Registration>>> OpenAndInit(
      const Manifest& manifest, StagedArtifact staged) {
    auto library = loader_.Open(manifest, std::move(staged));
    if (!library.ok()) return library.status();
    InitFrame frame;
    frame.impl = this;
    frame.bundle_id = manifest.id;
    frame.bundle_name = manifest.name;
    for (uint64_t id : manifest.DeclaredContractIds()) frame.declared.insert(id);
    const std::string dir = manifest.dir.string();
    PolyplugBundleInitContext init_ctx{
        manifest.id,
        {dir.data(), dir.size()},
        {manifest.name.data(), manifest.name.size()},
        {manifest.version.major, manifest.version.minor, manifest.version.patch}};
    init_stack().push_back(&frame);
    PolyplugAbiError result;
    {
      BundleCodeScope initialising(BundleActivity::kInit, &(*library)->crash_record_image(),
                                   nullptr);
      result = (*library)->init()(&api_, &init_ctx);
    }
    init_stack().pop_back();
    absl::Status status;
    if (!frame.error.ok()) {
      // A refused registration is the cause even when init then gave up because of it
      // (guest.hpp passes the refusal on): its reason and detail say what was wrong.
      status = frame.error;
    } else if (result.code != POLYPLUG_ABI_OK) {
      status = MakeError(ErrorReason::kInitFailed,
                         absl::StrCat("bundle \"", manifest.name,
                                      "\": polyplug_init failed: ", DescribeAbiError(result)));
    } else {
      status = CheckRegistrations(manifest, frame.staged);
    }
    if (!status.ok()) {
      CloseLibrary(*std::move(library), manifest.name);
      return status;
    }
    std::shared_ptr<NativeLibrary> shared = *std::move(library);
    for (Registration& reg : frame.staged) reg.code = shared;
    return std::make_pair(std::move(shared), std::move(frame.staged));
  }

  // Transactional registration (reference 5.3, newest): registered == provides exactly,
  // function counts as declared, no collisions with other bundles.
  absl::Status CheckRegistrations(const Manifest& manifest,
                                  const std::vector<Registration>& staged) const {
    std::set<std::string> declared;
    for (const ContractRef& ref : manifest.provides) declared.insert(ref.ToString());
    std::set<std::string> registered;
    for (const Registration& reg : staged) {
      std::string with_major = absl::StrCat(reg.contract_name, "@", reg.version.major);
      registered.insert(declared.contains(reg.contract_name) ? reg.contract_name : with_major);
    }
    std::vector<std::string> extra, missing;
    std::set_difference(registered.begin(), registered.end(), declared.begin(), declared.end(),
                        std::back_inserter(extra));
    std::set_difference(declared.begin(), declared.end(), registered.begin(), registered.end(),
                        std::back_inserter(missing));
    if (!extra.empty() || !missing.empty()) {
      std::string text = absl::StrCat("bundle \"", manifest.name, "\" (", manifest.path.string(),
                                      ", field 'provides'): ");
      if (!extra.empty()) {
        absl::StrAppend(&text, "polyplug_init registered ", absl::StrJoin(extra, ", "),
                        " which the manifest does not provide");
      }
      if (!missing.empty()) {
        absl::StrAppend(&text, extra.empty() ? "" : "; ", "the manifest provides ",
                        absl::StrJoin(missing, ", "), " but polyplug_init did not register it");
      }
      return MakeError(ErrorReason::kProvidesMismatch, text);
    }
    for (const Registration& reg : staged) {
      std::string key = absl::StrCat(reg.contract_name, "@", reg.version.major);
      if (auto it = manifest.function_count.find(key);
          it != manifest.function_count.end() && it->second != reg.iface.function_count) {
        return MakeError(
            ErrorReason::kProvidesMismatch,
            absl::StrCat(manifest.path.string(), ": field 'function_count.\"", key,
                         "\"': the manifest says ", it->second,
                         " functions, the bundle registered ", reg.iface.function_count));
      }
    }
    return runtime_->registry_.Check(manifest.id, staged);
  }

  // Closes a library no reader can reach any more, unless callers still hold interfaces
  // retained from it (Registry::Retain): then the last of them closes it.
  void CloseLibrary(std::shared_ptr<NativeLibrary> library, absl::string_view bundle) {
    if (!library) return;
    if (library.use_count() > 1) {
      runtime_->Log(LogLevel::kInfo, "loader.native",
                    absl::StrCat("bundle \"", bundle,
                                 "\": the old image stays mapped until the calls still "
                                 "running on it return"));
      return;
    }
    std::string warning = library->Close();
    if (!warning.empty()) {
      runtime_->Log(LogLevel::kWarn, "loader.native",
                    absl::StrCat("bundle \"", bundle, "\": ", warning));
    }
  }

  // ---- Reload (reference 5.5) -----------------------------------------------------------

  absl::StatusOr<ReloadOutcome> Reload(const fs::path& path) {
    if (absl::Status s = CheckNotReentrant(); !s.ok()) return s;
    // Step 1: a runtime without hot reload rejects the request and fires nothing.
    if (!runtime_->options_.hot_reload_enabled) {
      return MakeError(ErrorReason::kHotReloadDisabled,
                       "hot reload is disabled for this runtime (unload and load instead)");
    }
    OperationLock op(this);
    const fs::path dir = CanonicalDir(path);
    uint64_t bundle_id = 0;
    {
      std::lock_guard<std::mutex> lock(bundles_mu_);
      for (const auto& [id, b] : bundles_) {
        if (b.manifest.dir == dir) bundle_id = id;
      }
    }
    if (bundle_id == 0) {
      return MakeError(ErrorReason::kBundleNotFound,
                       absl::StrCat("no loaded bundle lives in ", dir.string(),
                                    " (load it first; reload only replaces loaded bundles)"));
    }
    OperationContext ctx;
    ReloadOutcome outcome;
    outcome.reload_id = NextOperationId();
    absl::Status status = ReloadOne(bundle_id, outcome.reload_id, 0, outcome.reload_id, ctx);
    if (ReasonOf(status) == ErrorReason::kNoLoader && ctx.events.empty()) return status;
    outcome.status = status;
    outcome.events = std::move(ctx.events);
    outcome.registry_revision = runtime_->registry_.revision();
    return outcome;
  }

  absl::StatusOr<ReloadOutcome> ReloadByName(absl::string_view name) {
    fs::path dir;
    {
      std::lock_guard<std::mutex> lock(bundles_mu_);
      auto it = bundles_.find(BundleId(name));
      if (it == bundles_.end()) return BundleNotFound(name);
      dir = it->second.manifest.dir;
    }
    return Reload(dir);
  }

  absl::Status ReloadOne(uint64_t bundle_id, uint64_t reload_id, uint64_t parent_id,
                         uint64_t root_id, OperationContext& ctx) {
    ctx.visited.insert(bundle_id);
    Manifest current;
    {
      std::lock_guard<std::mutex> lock(bundles_mu_);
      current = bundles_.at(bundle_id).manifest;
    }
    std::string sha256;  // of the artifact tried, once it was read
    auto fail = [&](const absl::Status& error) {
      PhaseEvent event = BaseEvent(Phase::kFailed, current);
      event.artifact_sha256 = sha256;
      event.reload_id = reload_id;
      event.parent_reload_id = parent_id;
      event.root_reload_id = root_id;
      event.reason =
          ReasonOf(error) == ErrorReason::kUnspecified ? ErrorReason::kInternal : ReasonOf(error);
      event.message = std::string(error.message());
      Emit(ctx, std::move(event));
      return error;
    };
    // Steps 2-3: re-read and re-validate the manifest; a failure fires FAILED.
    auto manifest = LoadManifest(current.dir);
    if (!manifest.ok()) return fail(manifest.status());
    manifest->dir = current.dir;
    if (manifest->id != bundle_id) {
      return fail(
          MakeError(ErrorReason::kManifestInvalid,
                    absl::StrCat(manifest->path.string(),
                                 ": field 'name': the bundle "
                                 "was loaded as \"",
                                 current.name,
                                 "\" but the manifest "
                                 "now says \"",
                                 manifest->name, "\"; unload and load to rename a bundle")));
    }
    // Step 4: loader lookup; no callback when it cannot hot reload.
    if (manifest->loader != NativeLoader::kName) return NoLoader(*manifest);
    // Step 5: the artifact must exist (and stay inside the bundle directory), and be
    // admitted: it is copied aside now, so that the bytes admitted are the bytes opened.
    auto artifact = NativeLoader::ResolveArtifact(*manifest);
    if (!artifact.ok()) return fail(artifact.status());
    auto staged = StageAndAdmit(*manifest, *artifact, &sha256);
    if (!staged.ok()) return fail(staged.status());
    // Steps 6-8: PREPARING (listeners destroy their instances now), then the
    // informational leak check on what is still alive afterwards. Never blocks.
    PhaseEvent preparing = BaseEvent(Phase::kPreparing, current);
    preparing.reload_id = reload_id;
    preparing.parent_reload_id = parent_id;
    preparing.root_reload_id = root_id;
    preparing.live_instances = LiveInstancesOf(bundle_id);
    Emit(ctx, std::move(preparing));
    if (const uint64_t live = LiveInstancesOf(bundle_id); live > 0) {
      runtime_->Log(LogLevel::kWarn, "reload",
                    absl::StrCat(live, " live guest instance(s) of bundle \"", current.name,
                                 "\" remain after PREPARING (destroy them when PREPARING "
                                 "arrives). Proceeding anyway."));
    }
    // Steps 9-11: reload window: open and init the new image, registrations staged.
    auto image = OpenAndInit(*manifest, *std::move(staged));
    if (!image.ok()) return fail(image.status());
    auto& [library, registrations] = *image;
    // Step 12: swap into the old slots, keeping generations.
    if (absl::Status s = runtime_->registry_.Swap(bundle_id, std::move(registrations)); !s.ok()) {
      CloseLibrary(std::move(library), manifest->name);
      return fail(
          MakeError(ErrorReason::kSwapFailed,
                    absl::StrCat("bundle \"", manifest->name, "\": swap failed: ", s.message())));
    }
    std::shared_ptr<NativeLibrary> old_library;
    {
      std::lock_guard<std::mutex> lock(bundles_mu_);
      LoadedBundle& b = bundles_.at(bundle_id);
      old_library = std::move(b.library);
      b.library = std::move(library);
      b.manifest = *manifest;
      b.artifact = *artifact;
      b.declared = manifest->DeclaredContractIds();
      ++b.reload_count;
    }
    CloseLibrary(std::move(old_library), manifest->name);  // no reader can reach it now
    // Step 13: the old instances are dead.
    ResetInstances(bundle_id);
    // Step 14: cascade to opted-in dependents, then RELOADED.
    for (uint64_t dependent : CascadeTargets(bundle_id, ctx)) {
      absl::Status s = ReloadOne(dependent, NextOperationId(), reload_id, root_id, ctx);
      if (!s.ok()) {
        runtime_->Log(LogLevel::kWarn, "reload",
                      absl::StrCat("cascade reload of a dependent of \"", manifest->name,
                                   "\" failed: ", s.message()));
      }
    }
    PhaseEvent reloaded = BaseEvent(Phase::kReloaded, *manifest);
    reloaded.artifact_sha256 = sha256;
    reloaded.reload_id = reload_id;
    reloaded.parent_reload_id = parent_id;
    reloaded.root_reload_id = root_id;
    Emit(ctx, std::move(reloaded));
    return absl::OkStatus();
  }

  // Dependents that opted in, sorted by name, not yet visited in this operation.
  std::vector<uint64_t> CascadeTargets(uint64_t bundle_id, const OperationContext& ctx) {
    std::vector<std::pair<std::string, uint64_t>> targets;
    {
      std::lock_guard<std::mutex> lock(bundles_mu_);
      for (uint64_t id : DependentsOfLocked(bundle_id)) {
        const LoadedBundle& b = bundles_.at(id);
        if (b.manifest.needs_reinit_on_dep_reload && !ctx.visited.contains(id)) {
          targets.push_back({b.manifest.name, id});
        }
      }
    }
    std::sort(targets.begin(), targets.end());
    std::vector<uint64_t> ids;
    for (const auto& t : targets) ids.push_back(t.second);
    return ids;
  }

  // Loaded bundles (other than bundle_id) that declared a dependency on a contract it
  // provides.
  std::vector<uint64_t> DependentsOf(uint64_t bundle_id) {
    std::lock_guard<std::mutex> lock(bundles_mu_);
    return DependentsOfLocked(bundle_id);
  }

  std::vector<uint64_t> DependentsOfLocked(uint64_t bundle_id) {
    absl::flat_hash_set<uint64_t> exported;
    for (const ContractEntry& e : runtime_->registry_.ListBundle(bundle_id))
      exported.insert(e.contract_id);
    if (auto it = bundles_.find(bundle_id); it != bundles_.end()) {
      for (const ContractRef& ref : it->second.manifest.provides) {
        exported.insert(GuestContractId(ref.name, ref.major()));
      }
    }
    std::vector<uint64_t> out;
    for (const auto& [id, b] : bundles_) {
      if (id == bundle_id) continue;
      for (uint64_t dep : b.declared) {
        if (exported.contains(dep)) {
          out.push_back(id);
          break;
        }
      }
    }
    return out;
  }

  // ---- Unload (reference 5.7) -----------------------------------------------------------

  absl::StatusOr<std::vector<std::string>> Unload(absl::string_view name, UnloadMode mode) {
    if (absl::Status s = CheckNotReentrant(); !s.ok()) return s;
    OperationLock op(this);
    const uint64_t id = BundleId(name);
    {
      std::lock_guard<std::mutex> lock(bundles_mu_);
      if (!bundles_.contains(id)) return BundleNotFound(name);
    }
    OperationContext ctx;
    std::vector<std::string> unloaded;
    if (mode == UnloadMode::kRefuseIfInUse) {
      std::vector<std::string> dependents;
      {
        std::lock_guard<std::mutex> lock(bundles_mu_);
        for (uint64_t d : DependentsOfLocked(id))
          dependents.push_back(bundles_.at(d).manifest.name);
      }
      if (!dependents.empty()) {
        std::sort(dependents.begin(), dependents.end());
        return MakeError(ErrorReason::kDependencyInUse,
                         absl::StrCat("cannot unload \"", name, "\": bundle(s) ",
                                      absl::StrJoin(dependents, ", "),
                                      " depend on its contracts; unload them first or cascade"));
      }
      UnloadOne(id, NextOperationId(), ctx, unloaded);
    } else {
      std::set<uint64_t> visited;
      UnloadCascade(id, ctx, visited, unloaded);
    }
    return unloaded;
  }

  void UnloadCascade(uint64_t id, OperationContext& ctx, std::set<uint64_t>& visited,
                     std::vector<std::string>& unloaded) {
    if (!visited.insert(id).second) return;
    std::vector<std::pair<std::string, uint64_t>> dependents;
    {
      std::lock_guard<std::mutex> lock(bundles_mu_);
      for (uint64_t d : DependentsOfLocked(id))
        dependents.push_back({bundles_.at(d).manifest.name, d});
    }
    std::sort(dependents.begin(), dependents.end());
    for (const auto& d : dependents) UnloadCascade(d.second, ctx, visited, unloaded);
    bool still_loaded;
    {
      std::lock_guard<std::mutex> lock(bundles_mu_);
      still_loaded = bundles_.contains(id);
    }
    if (still_loaded) UnloadOne(id, NextOperationId(), ctx, unloaded);
  }

  void UnloadOne(uint64_t id, uint64_t op_id, OperationContext& ctx,
                 std::vector<std::string>& unloaded) {
    Manifest manifest;
    {
      std::lock_guard<std::mutex> lock(bundles_mu_);
      manifest = bundles_.at(id).manifest;
    }
    PhaseEvent event = BaseEvent(Phase::kUnloading, manifest);
    event.reload_id = event.root_reload_id = op_id;
    event.live_instances = LiveInstancesOf(id);
    Emit(ctx, std::move(event));
    if (const uint64_t live = LiveInstancesOf(id); live > 0) {
      runtime_->Log(LogLevel::kWarn, "runtime",
                    absl::StrCat(live, " live guest instance(s) of bundle \"", manifest.name,
                                 "\" remain after UNLOADING; unloading anyway"));
    }
    DropBundle(id);
    unloaded.push_back(manifest.name);
  }

  void DropBundle(uint64_t id) {
    runtime_->registry_.Remove(id);  // waits until no reader can reach its interfaces
    ResetInstances(id);
    std::shared_ptr<NativeLibrary> library;
    std::string name;
    {
      std::lock_guard<std::mutex> lock(bundles_mu_);
      auto it = bundles_.find(id);
      if (it == bundles_.end()) return;
      library = std::move(it->second.library);
      name = it->second.manifest.name;
      bundles_.erase(it);
    }
    CloseLibrary(std::move(library), name);
  }

  // ---- Instances (reference 5.8) --------------------------------------------------------

  absl::StatusOr<PolyplugGuestContractInstance> CreateInstance(
      const PolyplugGuestContractInterface& iface, PolyplugBytesView args) {
    PolyplugGuestContractInstance instance{nullptr, iface.contract_id};
    if (iface.create_instance == nullptr) {
      return MakeError(ErrorReason::kInvalidArgument, "the contract has no create_instance");
    }
    PolyplugAbiError error;
    {
      BundleCodeScope creating(BundleActivity::kCreateInstance, nullptr,
                               reinterpret_cast<const void*>(iface.create_instance));
      error = iface.create_instance(iface.user_data, &api_, args, &instance);
    }
    if (error.code != POLYPLUG_ABI_OK) {
      return MakeError(
          ErrorReason::kCallFailed,
          absl::StrCat("create_instance of contract ", FormatContractId(iface.contract_id),
                       " failed: ", DescribeAbiError(error)));
    }
    instance.contract_id = iface.contract_id;
    if (instance.data != nullptr) {
      std::lock_guard<std::mutex> lock(instances_mu_);
      ++instance_counts_[iface.contract_id];
    }
    return instance;
  }

  void DestroyInstance(const PolyplugGuestContractInterface& iface,
                       PolyplugGuestContractInstance instance) {
    if (iface.destroy_instance != nullptr) {
      BundleCodeScope destroying(BundleActivity::kDestroyInstance, nullptr,
                                 reinterpret_cast<const void*>(iface.destroy_instance));
      iface.destroy_instance(iface.user_data, &api_, instance);
    }
    if (instance.data == nullptr) return;
    std::lock_guard<std::mutex> lock(instances_mu_);
    auto it = instance_counts_.find(instance.contract_id);
    if (it != instance_counts_.end() && --it->second == 0) instance_counts_.erase(it);
  }

  uint64_t LiveInstancesOf(uint64_t bundle_id) {
    uint64_t total = 0;
    auto entries = runtime_->registry_.ListBundle(bundle_id);
    std::lock_guard<std::mutex> lock(instances_mu_);
    for (const ContractEntry& e : entries) {
      if (auto it = instance_counts_.find(e.contract_id); it != instance_counts_.end())
        total += it->second;
    }
    return total;
  }

  void ResetInstances(uint64_t bundle_id) {
    auto entries = runtime_->registry_.ListBundle(bundle_id);
    std::lock_guard<std::mutex> lock(instances_mu_);
    for (const ContractEntry& e : entries) instance_counts_.erase(e.contract_id);
  }

  // ---- Introspection --------------------------------------------------------------------

  BundleInfo InfoOf(uint64_t id) {
    BundleInfo info;
    {
      std::lock_guard<std::mutex> lock(bundles_mu_);
      auto it = bundles_.find(id);
      if (it == bundles_.end()) return info;  // unloaded meanwhile: id stays 0
      const LoadedBundle& b = it->second;
      info.id = id;
      info.name = b.manifest.name;
      info.version = b.manifest.version;
      info.dir = b.manifest.dir;
      info.artifact = b.artifact;
      if (b.library) {
        info.artifact_sha256 = b.library->sha256();
        info.image = b.library->private_copy();
      }
      info.loader = b.manifest.loader;
      info.needs_reinit_on_dep_reload = b.manifest.needs_reinit_on_dep_reload;
      for (const ContractRef& ref : b.manifest.provides) info.provides.push_back(ref.ToString());
      info.declared_dependencies = b.declared;
      info.reload_count = b.reload_count;
    }
    for (const ContractEntry& e : runtime_->registry_.ListBundle(id))
      info.slots.push_back(e.handle);
    return info;
  }

  std::vector<BundleInfo> List() {
    std::vector<std::pair<std::string, uint64_t>> ids;
    {
      std::lock_guard<std::mutex> lock(bundles_mu_);
      for (const auto& [id, b] : bundles_) ids.push_back({b.manifest.name, id});
    }
    std::sort(ids.begin(), ids.end());
    std::vector<BundleInfo> out;
    for (const auto& [name, id] : ids) {
      bool present;
      {
        std::lock_guard<std::mutex> lock(bundles_mu_);
        present = bundles_.contains(id);
      }
      if (!present) continue;
      BundleInfo info = InfoOf(id);
      if (info.id != 0) out.push_back(std::move(info));
    }
    return out;
  }

  absl::StatusOr<BundleInfo> Get(absl::string_view name) {
    const uint64_t id = BundleId(name);
    {
      std::lock_guard<std::mutex> lock(bundles_mu_);
      if (!bundles_.contains(id)) return BundleNotFound(name);
    }
    BundleInfo info = InfoOf(id);
    if (info.id == 0) return BundleNotFound(name);
    return info;
  }

  absl::StatusOr<std::pair<std::string, Version>> NameAndVersion(uint64_t id) const {
    std::lock_guard<std::mutex> lock(bundles_mu_);
    auto it = bundles_.find(id);
    if (it == bundles_.end()) return BundleNotFound(FormatBundleId(id));
    return std::make_pair(it->second.manifest.name, it->second.manifest.version);
  }

  absl::Status BundleNotFound(absl::string_view name) const {
    return MakeError(ErrorReason::kBundleNotFound,
                     absl::StrCat("no bundle named \"", name, "\" is loaded"));
  }

 private:
  static std::vector<InitFrame*>& init_stack() {
    thread_local std::vector<InitFrame*> stack;
    return stack;
  }

  static Impl* From(const PolyplugHostApi* api) {
    return api == nullptr ? nullptr : static_cast<Impl*>(api->runtime);
  }

  // The innermost init window of this runtime on this thread, if any.
  InitFrame* CurrentFrame() {
    auto& stack = init_stack();
    for (auto it = stack.rbegin(); it != stack.rend(); ++it) {
      if ((*it)->impl == this) return *it;
    }
    return nullptr;
  }

  PhaseEvent BaseEvent(Phase phase, const Manifest& manifest) const {
    PhaseEvent event;
    event.phase = phase;
    event.bundle_id = manifest.id;
    event.bundle_name = manifest.name;
    event.bundle_version = manifest.version;
    return event;
  }

  void Emit(OperationContext& ctx, PhaseEvent event) {
    event.registry_revision = runtime_->registry_.revision();
    PhaseEvent stored = runtime_->journal_.Append(std::move(event));
    runtime_->Log(LogLevel::kDebug, "journal",
                  absl::StrCat(PhaseName(stored.phase), " ", stored.bundle_name, " seq=",
                               stored.seq, stored.message.empty() ? "" : ": ", stored.message));
    ctx.events.push_back(std::move(stored));
  }

  uint64_t NextOperationId() { return next_operation_id_.fetch_add(1); }

  static void ApiRegister(const PolyplugHostApi* self, const PolyplugPluginDescriptor* descriptor,
                          const PolyplugGuestContractInterface* iface, PolyplugAbiError* out_err) {
    PolyplugAbiError ignored;
    if (out_err == nullptr) out_err = &ignored;
    *out_err = AbiError(POLYPLUG_ABI_OK, "");
    Impl* impl = From(self);
    if (impl == nullptr || descriptor == nullptr || iface == nullptr) {
      *out_err = AbiError(POLYPLUG_ABI_INVALID_POINTER, "register_guest_contract: null pointer");
      return;
    }
    InitFrame* frame = impl->CurrentFrame();
    if (frame == nullptr) {
      *out_err = AbiError(POLYPLUG_ABI_GENERIC,
                          "register_guest_contract is only valid inside polyplug_init");
      return;
    }
    auto reject = [&](PolyplugAbiErrorCode code, absl::string_view static_text, ErrorReason reason,
                      std::string detail) {
      *out_err = AbiError(code, static_text);
      if (frame->error.ok()) {
        frame->error = MakeError(reason, absl::StrCat("bundle \"", frame->bundle_name,
                                                      "\": register_guest_contract: ", detail));
      }
    };
    absl::string_view contract(
        descriptor->contract_name.ptr == nullptr ? "" : descriptor->contract_name.ptr,
        descriptor->contract_name.len);
    absl::string_view plugin(descriptor->name.ptr == nullptr ? "" : descriptor->name.ptr,
                             descriptor->name.len);
    if (contract.empty() || !IsValidUtf8(contract) || !IsValidUtf8(plugin)) {
      reject(POLYPLUG_ABI_INVALID_ARGUMENT, "contract name is empty or not valid UTF-8",
             ErrorReason::kInvalidArgument, "the contract name is empty or not valid UTF-8");
      return;
    }
    const PolyplugVersion v = descriptor->version;
    if (iface->dispatch_type != POLYPLUG_DISPATCH_NATIVE) {
      reject(POLYPLUG_ABI_INVALID_ARGUMENT, "unsupported dispatch type",
             ErrorReason::kInvalidArgument,
             absl::StrCat("contract \"", contract, "\" uses dispatch type ", iface->dispatch_type,
                          "; only native (0) is supported"));
      return;
    }
    if (iface->create_instance == nullptr || iface->destroy_instance == nullptr ||
        (iface->function_count > 0 && iface->functions == nullptr)) {
      reject(POLYPLUG_ABI_INVALID_POINTER, "null create/destroy/functions",
             ErrorReason::kInvalidArgument,
             absl::StrCat("contract \"", contract,
                          "\" has a null create_instance, destroy_instance "
                          "or function table"));
      return;
    }
    for (uint32_t i = 0; i < iface->function_count; ++i) {
      if (iface->functions[i] == nullptr) {
        reject(POLYPLUG_ABI_INVALID_POINTER, "null entry in function table",
               ErrorReason::kInvalidArgument,
               absl::StrCat("contract \"", contract, "\" has a null function at index ", i));
        return;
      }
    }
    const uint64_t expected_id = GuestContractId(contract, v.major);
    if (iface->contract_id != expected_id) {
      reject(POLYPLUG_ABI_INVALID_ARGUMENT, "contract id does not match name and major",
             ErrorReason::kInvalidArgument,
             absl::StrCat("contract \"", contract, "@", v.major, "\" carries id ",
                          FormatContractId(iface->contract_id), ", expected ",
                          FormatContractId(expected_id)));
      return;
    }
    for (const Registration& existing : frame->staged) {
      if (existing.iface.contract_id == iface->contract_id) {
        reject(POLYPLUG_ABI_DUPLICATE_PROVIDER, "contract registered twice",
               ErrorReason::kDuplicateProvider,
               absl::StrCat("contract \"", contract, "@", v.major, "\" registered twice"));
        return;
      }
    }
    Registration reg;
    reg.plugin_name = std::string(plugin);
    reg.contract_name = std::string(contract);
    reg.version = {v.major, v.minor, v.patch};
    reg.iface = *iface;
    frame->staged.push_back(std::move(reg));
  }

  static PolyplugGuestContractHandle ApiFind(const PolyplugHostApi* self, uint64_t contract_id,
                                             uint32_t min_major) {
    const PolyplugGuestContractHandle null_handle{POLYPLUG_NULL_HANDLE_INDEX, 0};
    Impl* impl = From(self);
    if (impl == nullptr) return null_handle;
    // Inside an init window only declared dependencies are visible (reference 3.4).
    if (InitFrame* frame = impl->CurrentFrame();
        frame != nullptr && !frame->declared.contains(contract_id)) {
      return null_handle;
    }
    auto handle = impl->runtime_->registry_.Find(contract_id, min_major);
    return handle.ok() ? handle->ToAbi() : null_handle;
  }

  static const PolyplugGuestContractInterface* ApiResolve(const PolyplugHostApi* self,
                                                          PolyplugGuestContractHandle handle) {
    Impl* impl = From(self);
    if (impl == nullptr) return nullptr;
    auto iface = impl->runtime_->registry_.Resolve({handle.index, handle.generation});
    return iface.ok() ? *iface : nullptr;
  }

  static PolyplugAbiError ApiCreateInstance(const PolyplugHostApi* self,
                                            const PolyplugGuestContractInterface* iface,
                                            PolyplugBytesView args,
                                            PolyplugGuestContractInstance* out) {
    Impl* impl = From(self);
    if (impl == nullptr || iface == nullptr || out == nullptr) {
      return AbiError(POLYPLUG_ABI_INVALID_POINTER, "create_guest_instance: null pointer");
    }
    auto instance = impl->CreateInstance(*iface, args);
    if (!instance.ok()) return AbiError(POLYPLUG_ABI_GENERIC, "create_instance failed");
    *out = *instance;
    return AbiError(POLYPLUG_ABI_OK, "");
  }

  static void ApiDestroyInstance(const PolyplugHostApi* self,
                                 const PolyplugGuestContractInterface* iface,
                                 PolyplugGuestContractInstance instance) {
    Impl* impl = From(self);
    if (impl == nullptr || iface == nullptr) return;
    impl->DestroyInstance(*iface, instance);
  }

  static void ApiLog(const PolyplugHostApi* self, PolyplugLogLevel level, PolyplugStringView scope,
                     PolyplugStringView message) {
    Impl* impl = From(self);
    if (impl == nullptr) return;
    LogLevel l = level >= POLYPLUG_LOG_ERROR && level <= POLYPLUG_LOG_TRACE
                     ? static_cast<LogLevel>(level)
                     : LogLevel::kError;
    absl::string_view s(scope.ptr == nullptr ? "" : scope.ptr,
                        scope.ptr == nullptr ? 0 : scope.len);
    absl::string_view m(message.ptr == nullptr ? "" : message.ptr,
                        message.ptr == nullptr ? 0 : message.len);
    impl->runtime_->Log(l, absl::StrCat("bundle:", s), m);
  }

  static uint64_t ApiRevision(const PolyplugHostApi* self) {
    Impl* impl = From(self);
    return impl == nullptr ? 0 : impl->runtime_->registry_.revision();
  }

  Runtime* runtime_;
  NativeLoader loader_;
  fs::path state_dir_;
  bool owns_state_dir_;
  PolyplugHostApi api_{};

  std::mutex op_mu_;  // serializes load, reload and unload
  std::atomic<std::thread::id> op_owner_{};

  mutable std::mutex bundles_mu_;
  std::map<uint64_t, LoadedBundle> bundles_;

  std::mutex instances_mu_;
  absl::flat_hash_map<uint64_t, uint64_t> instance_counts_;

  std::atomic<uint64_t> next_operation_id_{1};
};

// ---- Runtime -------------------------------------------------------------------------------

namespace {

uint64_t RandomEpoch() {
  absl::BitGen gen;
  uint64_t epoch = 0;
  while (epoch == 0) epoch = absl::Uniform<uint64_t>(gen);
  return epoch;
}

}  // namespace

Runtime::Runtime(RuntimeOptions options)
    : options_(std::move(options)),
      journal_(options_.host_epoch != 0 ? options_.host_epoch : RandomEpoch(),
               options_.journal_capacity) {}

absl::StatusOr<std::unique_ptr<Runtime>> Runtime::Create(RuntimeOptions options) {
  bool owns = false;
  std::error_code ec;
  if (options.state_dir.empty()) {
    std::string templ = (fs::temp_directory_path(ec) / "polyplug-state-XXXXXX").string();
    if (mkdtemp(templ.data()) == nullptr) {
      return MakeError(ErrorReason::kInternal,
                       absl::StrCat("cannot create a state directory from ", templ));
    }
    options.state_dir = templ;
    owns = true;
  } else {
    fs::create_directories(options.state_dir, ec);
    if (ec) {
      return MakeError(ErrorReason::kInvalidArgument,
                       absl::StrCat("state directory ", options.state_dir.string(),
                                    " cannot be created: ", ec.message()));
    }
  }
  fs::path state_dir = options.state_dir;
  std::unique_ptr<Runtime> runtime(new Runtime(std::move(options)));
  runtime->impl_ = std::make_unique<Impl>(runtime.get(), state_dir, owns);
  return runtime;
}

Runtime::~Runtime() { impl_.reset(); }

absl::StatusOr<BundleInfo> Runtime::LoadBundle(const fs::path& path) {
  return impl_->Load(BundleSource{path, {}});
}

absl::StatusOr<BundleInfo> Runtime::LoadBundle(const BundleSource& source) {
  return impl_->Load(source);
}

absl::StatusOr<ReloadOutcome> Runtime::ReloadBundle(const fs::path& path) {
  return impl_->Reload(path);
}

absl::StatusOr<ReloadOutcome> Runtime::ReloadBundleByName(absl::string_view name) {
  return impl_->ReloadByName(name);
}

absl::StatusOr<std::vector<std::string>> Runtime::UnloadBundle(absl::string_view name,
                                                               UnloadMode mode) {
  return impl_->Unload(name, mode);
}

absl::StatusOr<PolyplugGuestContractInstance> Runtime::CreateInstance(
    const PolyplugGuestContractInterface& iface, PolyplugBytesView args) {
  return impl_->CreateInstance(iface, args);
}

void Runtime::DestroyInstance(const PolyplugGuestContractInterface& iface,
                              PolyplugGuestContractInstance instance) {
  impl_->DestroyInstance(iface, instance);
}

std::vector<BundleInfo> Runtime::ListBundles() const { return impl_->List(); }

absl::StatusOr<BundleInfo> Runtime::GetBundle(absl::string_view name) const {
  return impl_->Get(name);
}

absl::StatusOr<std::pair<std::string, Version>> Runtime::BundleNameAndVersion(uint64_t id) const {
  return impl_->NameAndVersion(id);
}

const fs::path& Runtime::state_dir() const { return impl_->state_dir(); }

const PolyplugHostApi* Runtime::host_api() const { return impl_->api(); }

EventJournal::ListenerId Runtime::AddPhaseCallback(PhaseCallback callback) {
  return journal_.AddListener([callback = std::move(callback)](const PhaseEvent& event) {
    PolyplugReloadPhase phase{};
    phase.phase_type = static_cast<PolyplugReloadPhaseType>(event.phase);
    phase.bundle_id = event.bundle_id;
    phase.bundle_name = {event.bundle_name.data(), event.bundle_name.size()};
    if (event.phase == Phase::kFailed) phase.reason = {event.message.data(), event.message.size()};
    callback(phase, event);
  });
}

void Runtime::RemovePhaseCallback(EventJournal::ListenerId id) { journal_.RemoveListener(id); }

void Runtime::Log(LogLevel level, absl::string_view scope, absl::string_view message) const {
  if (static_cast<int>(level) > static_cast<int>(options_.max_log_level)) return;
  if (options_.log_sink) {
    options_.log_sink(level, scope, message);
    return;
  }
  if (level <= LogLevel::kWarn) {
    std::fprintf(stderr, "[polyplug] [%.*s] %.*s\n", static_cast<int>(scope.size()), scope.data(),
                 static_cast<int>(message.size()), message.data());
  }
}

}  // namespace polyplug::core
