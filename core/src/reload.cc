// The reload flow (docs/SEMANTICS.md §4) and its cascade (§5), in the order they happen.
//
// One reload operation:
//   Reload            steps 1-2    the request, and the loaded bundle it names
//   ReloadOne         steps 3-10   one bundle: manifest, artifact, PREPARING, new image, swap
//   CascadeAndFinish  steps 11-13  dependents, RELOADED of each, then the old images closed
//
// The whole operation holds the operation lock; lookups never wait for it, except for the
// swap itself (step 8), which waits until no reader still pins the old interfaces.
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/src/dependency_graph.h"
#include "core/src/runtime_impl.h"
#include "polyplug/core/error.h"
#include "polyplug/core/ids.h"

namespace polyplug::core {

namespace fs = std::filesystem;

absl::StatusOr<ReloadOutcome> Runtime::Impl::Reload(const fs::path& path,
                                                    const ReloadOptions& options) {
  if (absl::Status s = CheckNotReentrant(); !s.ok()) return s;
  // Step 1: a runtime without hot reload refuses the request and fires nothing.
  if (!runtime_->options_.hot_reload_enabled) {
    return MakeError(ErrorReason::kHotReloadDisabled,
                     "hot reload is disabled for this runtime (unload and load instead)");
  }
  OperationLock op(this);
  // Step 2: the loaded bundle the request names, and where its new version is read from.
  absl::StatusOr<ReloadTarget> target = FindReloadTarget(path);
  if (!target.ok()) return target.status();

  OperationContext ctx;
  ReloadOutcome outcome;
  outcome.reload_id = NextOperationId();
  absl::Status status =
      ReloadOne(*target, outcome.reload_id, 0, outcome.reload_id, ctx, options.expected_sha256);
  // Refusals of the request itself fire nothing and are errors, not outcomes.
  if ((ReasonOf(status) == ErrorReason::kNoLoader ||
       ReasonOf(status) == ErrorReason::kExpectedSha256Mismatch) &&
      ctx.events.empty()) {
    return status;
  }
  if (status.ok()) CascadeAndFinish(target->bundle_id, outcome.reload_id, ctx);
  outcome.status = status;
  outcome.events = std::move(ctx.events);
  outcome.registry_revision = runtime_->registry_.revision();
  return outcome;
}

absl::StatusOr<ReloadOutcome> Runtime::Impl::ReloadByName(absl::string_view name,
                                                          const ReloadOptions& options) {
  fs::path dir;
  {
    std::lock_guard<std::mutex> lock(bundles_mu_);
    auto it = bundles_.find(BundleId(name));
    if (it == bundles_.end()) return BundleNotFound(name);
    dir = it->second.manifest.dir;
  }
  return Reload(dir, options);
}

// Step 2. A path names the bundle that lives in its directory (the path itself, or the
// directory of the file it names). Another directory whose manifest names a loaded bundle
// holds a new version of it (polyplug's own pattern: v1/ and v2/ of one bundle name); the
// bundle moves there if its reload succeeds. A file that does not exist is not silently
// taken as its directory: the reload of that bundle fails at step 5, naming it.
absl::StatusOr<Runtime::Impl::ReloadTarget> Runtime::Impl::FindReloadTarget(const fs::path& path) {
  std::error_code ec;
  ReloadTarget target;
  if (!fs::exists(path, ec)) target.missing_file = fs::absolute(path, ec).lexically_normal();
  target.dir = CanonicalDir(path);
  {
    std::lock_guard<std::mutex> lock(bundles_mu_);
    for (const auto& [id, b] : bundles_) {
      if (b.manifest.dir == target.dir) {
        target.bundle_id = id;
        return target;
      }
    }
  }
  if (fs::exists(target.dir / "manifest.toml", ec)) {
    absl::StatusOr<Manifest> manifest = LoadManifest(target.dir);
    if (!manifest.ok()) {
      return MakeError(
          ErrorReason::kBundleNotFound,
          absl::StrCat("no loaded bundle lives in ", target.dir.string(),
                       ", and its manifest does not name one: ", manifest.status().message()));
    }
    std::lock_guard<std::mutex> lock(bundles_mu_);
    if (bundles_.contains(manifest->id)) {
      target.bundle_id = manifest->id;
      return target;
    }
    return MakeError(ErrorReason::kBundleNotFound,
                     absl::StrCat("bundle \"", manifest->name, "\" in ", target.dir.string(),
                                  " is not loaded (load it first; reload only replaces "
                                  "loaded bundles)"));
  }
  if (!target.missing_file.empty()) {
    return MakeError(
        ErrorReason::kBundleNotFound,
        absl::StrCat("reload path ", target.missing_file.string(),
                     " does not exist, and no loaded bundle lives in ", target.dir.string()));
  }
  return MakeError(ErrorReason::kBundleNotFound,
                   absl::StrCat("no loaded bundle lives in ", target.dir.string(),
                                " (load it first; reload only replaces loaded bundles)"));
}

absl::Status Runtime::Impl::ReloadOne(const ReloadTarget& target, uint64_t reload_id,
                                      uint64_t parent_id, uint64_t root_id, OperationContext& ctx,
                                      absl::string_view expected_sha256) {
  const uint64_t bundle_id = target.bundle_id;
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

  // Step 3: read and validate the manifest where the new version is. The name is the
  // bundle's identity: a manifest that renames it fails.
  absl::StatusOr<Manifest> manifest = LoadManifest(target.dir);
  if (!manifest.ok()) return fail(manifest.status());
  manifest->dir = target.dir;
  if (manifest->id != bundle_id) {
    return fail(MakeError(
        ErrorReason::kManifestInvalid,
        absl::StrCat(manifest->path.string(), ": field 'name': the bundle was loaded as \"",
                     current.name, "\" but the manifest now says \"", manifest->name,
                     "\"; unload and load to rename a bundle")));
  }
  // The signature of the new version's files: checked on every reload, not only on load
  // (polyplug checks at load only). A refusal fires FAILED before PREPARING, as at step 5.
  absl::StatusOr<SignatureCheck> signature = CheckSignature(*manifest, "reloading");
  if (!signature.ok()) return fail(signature.status());

  // Step 4: the loader. One that cannot hot reload refuses the request with no event.
  if (manifest->loader != NativeLoader::kName) return NoLoader(*manifest);

  // Step 5: the artifact. A file the request named must exist; the one the manifest names
  // must exist inside the bundle directory. It is copied aside and admitted now, so that
  // the bytes admitted are the bytes opened. A failure here fires FAILED before PREPARING:
  // this reload could never start, and the instances need not be dropped.
  if (!target.missing_file.empty()) {
    return fail(MakeError(
        ErrorReason::kArtifactMissing,
        absl::StrCat("bundle \"", current.name, "\": reload path ", target.missing_file.string(),
                     " does not exist (name the bundle's directory, or a file in it)")));
  }
  absl::StatusOr<fs::path> artifact = NativeLoader::ResolveArtifact(*manifest);
  if (!artifact.ok()) return fail(artifact.status());
  absl::StatusOr<StagedArtifact> staged =
      StageAndAdmit(*manifest, *artifact, &sha256, /*hash=*/!expected_sha256.empty());
  if (!staged.ok()) return fail(staged.status());
  // The request's precondition: the build it means, or nothing happens (no event).
  if (!expected_sha256.empty() && sha256 != expected_sha256) {
    return MakeError(
        ErrorReason::kExpectedSha256Mismatch,
        absl::StrCat("bundle \"", current.name, "\": the artifact ", artifact->string(),
                     " has SHA-256 ", sha256, ", the request expects ", expected_sha256,
                     " (another build is on disk; nothing was reloaded)"));
  }
  if (absl::Status s = CheckArtifactSigned(*signature, *manifest, *artifact, *staged, "reloading");
      !s.ok())
    return fail(s);

  // Step 6: PREPARING. Listeners destroy the bundle's instances now, while its code is
  // still the one they were made with; what is still alive afterwards is logged, never
  // waited for.
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

  // Step 7: open the new image and run its polyplug_init in the enforcement window. What
  // it registers is staged, invisible to lookups; a failure leaves the old version live.
  auto image = OpenAndInit(*manifest, *std::move(staged));
  if (!image.ok()) return fail(image.status());
  auto& [library, registrations] = *image;

  // Step 8: the swap. The old interfaces are kept as readers resolved them (dependents may
  // hold them until their own PREPARING, §5); the new providers move into the old slots,
  // same index and generation, so handles stay valid. A contract the new version dropped
  // goes stale; a new one is published.
  std::vector<uint64_t> old_contracts;
  for (const ContractEntry& e : runtime_->registry_.ListBundle(bundle_id)) {
    old_contracts.push_back(e.contract_id);
    auto kept = runtime_->registry_.Retain(e.handle);
    if (kept.ok()) ctx.retired_interfaces.push_back(*std::move(kept));
  }
  if (absl::Status s = runtime_->registry_.Swap(bundle_id, std::move(registrations)); !s.ok()) {
    CloseLibrary(std::move(library), manifest->name);
    return fail(
        MakeError(ErrorReason::kSwapFailed,
                  absl::StrCat("bundle \"", manifest->name, "\": swap failed: ", s.message())));
  }

  // Step 9: the new version is the bundle's: its manifest (so its dependencies and opt-in
  // count from the next cascade on), its directory and artifact. The old image is retired:
  // closed when the operation ends (step 13).
  {
    std::lock_guard<std::mutex> lock(bundles_mu_);
    LoadedBundle& b = bundles_.at(bundle_id);
    ctx.retired_images.emplace_back(current.name, std::move(b.library));
    b.library = library;
    b.manifest = *manifest;
    b.artifact = *artifact;
    b.declared = manifest->DeclaredContractIds();
    b.signing_key = signature->signing_key;
    ++b.reload_count;
  }

  // Step 10: the old instances died with the old version: their counts go, including
  // those of contracts the new version no longer provides.
  ForgetInstances(old_contracts);

  Swapped& swapped = ctx.swapped[bundle_id];
  swapped.reload_id = reload_id;
  swapped.parent_reload_id = parent_id;
  swapped.manifest = *std::move(manifest);
  swapped.artifact_sha256 = sha256;
  swapped.signing_key = signature->signing_key;
  swapped.old_contracts = std::move(old_contracts);
  return absl::OkStatus();
}

void Runtime::Impl::CascadeAndFinish(uint64_t root, uint64_t root_id, OperationContext& ctx) {
  // Step 11: the cascade (§5). Who depends on whom is read once, now that the root is
  // swapped; the root counts with what it provided before the swap too, since a dependent
  // may use a contract the new version dropped. A dependent's own reload changes the graph
  // from the next operation on.
  std::vector<CascadeNode> graph;
  {
    std::lock_guard<std::mutex> lock(bundles_mu_);
    std::map<uint64_t, size_t> node_of;
    for (const auto& [id, b] : bundles_) {
      node_of[id] = graph.size();
      graph.push_back({id, b.manifest.name, b.manifest.needs_reinit_on_dep_reload, {}});
    }
    for (const auto& [provider, b] : bundles_) {
      absl::flat_hash_set<uint64_t> exported = ExportedContractsLocked(provider);
      if (provider == root)
        exported.insert(ctx.swapped.at(root).old_contracts.begin(),
                        ctx.swapped.at(root).old_contracts.end());
      for (uint64_t dependent : DependentsLocked(provider, exported)) {
        graph[node_of.at(dependent)].providers.push_back(provider);
      }
    }
  }
  CascadeSchedule schedule(std::move(graph), root);
  for (CascadeSchedule::Step step = schedule.Next();
       step.kind != CascadeSchedule::Step::Kind::kDone; step = schedule.Next()) {
    if (step.kind == CascadeSchedule::Step::Kind::kFinish) {
      // Step 12: RELOADED, once the bundle's own dependents are done.
      EmitReloaded(step.bundle, root_id, ctx);
      continue;
    }
    ReloadTarget dependent;
    dependent.bundle_id = step.bundle;
    std::string parent_name;
    {
      std::lock_guard<std::mutex> lock(bundles_mu_);
      dependent.dir = bundles_.at(step.bundle).manifest.dir;
      parent_name = bundles_.at(step.parent).manifest.name;
    }
    absl::Status s = ReloadOne(dependent, NextOperationId(), ctx.swapped.at(step.parent).reload_id,
                               root_id, ctx);
    schedule.Reloaded(step.bundle, s.ok());
    if (!s.ok()) {
      // Not propagated: the root reached its new version whatever its dependents do.
      runtime_->Log(LogLevel::kWarn, "reload",
                    absl::StrCat("cascade reload of a dependent of \"", parent_name,
                                 "\" failed: ", s.message()));
    }
  }

  // Step 13: no dependent's old code runs any more: the replaced images close (or, while
  // remote calls still run on one, when the last of them returns).
  ctx.retired_interfaces.clear();
  for (auto& [name, image] : ctx.retired_images) CloseLibrary(std::move(image), name);
  ctx.retired_images.clear();
}

void Runtime::Impl::EmitReloaded(uint64_t bundle_id, uint64_t root_id, OperationContext& ctx) {
  const Swapped& swapped = ctx.swapped.at(bundle_id);
  PhaseEvent reloaded = BaseEvent(Phase::kReloaded, swapped.manifest);
  reloaded.artifact_sha256 = swapped.artifact_sha256;
  reloaded.signing_key = swapped.signing_key;
  reloaded.reload_id = swapped.reload_id;
  reloaded.parent_reload_id = swapped.parent_reload_id;
  reloaded.root_reload_id = root_id;
  Emit(ctx, std::move(reloaded));
}

}  // namespace polyplug::core
