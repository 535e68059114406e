// Loading a bundle (docs/SEMANTICS.md §3): read and validate the manifest, copy the artifact
// aside and admit it, open it, run polyplug_init in the enforcement window, check what it
// registered against the manifest, publish everything at once, then LOADED.
#include <algorithm>
#include <iterator>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/src/crash_record.h"
#include "core/src/runtime_impl.h"
#include "polyplug/core/error.h"
#include "polyplug/core/ids.h"

namespace polyplug::core {

namespace fs = std::filesystem;

absl::StatusOr<BundleInfo> Runtime::Impl::Load(const BundleSource& source) {
  if (absl::Status s = CheckNotReentrant(); !s.ok()) return s;
  OperationLock op(this);
  OperationContext ctx;
  return LoadLocked(source, ctx);
}

absl::StatusOr<BundleInfo> Runtime::Impl::LoadLocked(const BundleSource& source,
                                                     OperationContext& ctx) {
  const bool elsewhere = !source.files.empty();
  auto manifest = LoadManifest(elsewhere ? source.files : source.dir);
  if (!manifest.ok()) return manifest.status();
  manifest->dir = CanonicalDir(manifest->dir);
  // The signature of the files about to be read, which are the copy's when loading one.
  auto signature = CheckSignature(*manifest, "loading");
  if (!signature.ok()) return signature.status();
  // The artifact is read where the files are; the bundle lives in its own directory.
  const Manifest files = *manifest;
  if (elsewhere) manifest->dir = CanonicalDir(source.dir);
  if (manifest->loader != NativeLoader::kName) return NoLoader(*manifest);
  {
    std::lock_guard<std::mutex> lock(bundles_mu_);
    if (auto it = bundles_.find(manifest->id); it != bundles_.end()) {
      const fs::path& loaded_from = it->second.manifest.dir;
      return MakeError(
          ErrorReason::kBundleAlreadyLoaded,
          absl::StrCat(
              "bundle \"", manifest->name, "\" (", FormatBundleId(manifest->id),
              ") is already loaded from ", loaded_from.string(),
              loaded_from == manifest->dir
                  ? ""
                  : absl::StrCat("; to replace it with the version in ", manifest->dir.string(),
                                 ", reload it with that path (its instances are "
                                 "dropped at PREPARING, its dependents follow)")));
    }
  }
  auto artifact = NativeLoader::ResolveArtifact(files);
  if (!artifact.ok()) return artifact.status();
  auto staged = StageAndAdmit(*manifest, *artifact);
  if (!staged.ok()) return staged.status();
  if (absl::Status s = CheckArtifactSigned(*signature, *manifest, *artifact, *staged, "loading");
      !s.ok())
    return s;
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
  event.signing_key = signature->signing_key;
  LoadedBundle bundle;
  bundle.manifest = *manifest;
  bundle.artifact = *artifact;
  bundle.library = std::move(library);
  bundle.declared = manifest->DeclaredContractIds();
  bundle.signing_key = signature->signing_key;
  {
    std::lock_guard<std::mutex> lock(bundles_mu_);
    bundles_[manifest->id] = std::move(bundle);
  }
  Emit(ctx, std::move(event));
  return InfoOf(manifest->id);
}

absl::StatusOr<StagedArtifact> Runtime::Impl::StageAndAdmit(const Manifest& manifest,
                                                            const fs::path& artifact,
                                                            std::string* sha256, bool hash) {
  auto staged = loader_.Stage(manifest, artifact, hash);
  if (!staged.ok()) return staged.status();
  if (sha256 != nullptr) *sha256 = staged->sha256();
  if (runtime_->options_.admit_artifact) {
    if (absl::Status s = runtime_->options_.admit_artifact(manifest, staged->sha256()); !s.ok())
      return s;
  }
  return staged;
}

absl::Status Runtime::Impl::NoLoader(const Manifest& manifest) const {
  return MakeError(ErrorReason::kNoLoader,
                   absl::StrCat(manifest.path.string(), ": field 'loader': bundle \"",
                                manifest.name, "\" asks for loader \"", manifest.loader,
                                "\"; this host has only \"", NativeLoader::kName, "\""));
}

absl::StatusOr<std::pair<std::shared_ptr<NativeLibrary>, std::vector<Registration>>>
Runtime::Impl::OpenAndInit(const Manifest& manifest, StagedArtifact staged) {
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
  InitStack().push_back(&frame);
  PolyplugAbiError result;
  {
    BundleCodeScope initialising(BundleActivity::kInit, &(*library)->crash_record_image(), nullptr);
    result = (*library)->init()(&api_, &init_ctx);
  }
  InitStack().pop_back();
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

// Transactional registration: registered == provides exactly, function counts as
// declared, no collisions with other bundles.
absl::Status Runtime::Impl::CheckRegistrations(const Manifest& manifest,
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
                       "\"': the manifest says ", it->second, " functions, the bundle registered ",
                       reg.iface.function_count));
    }
  }
  return runtime_->registry_.Check(manifest.id, staged);
}

void Runtime::Impl::CloseLibrary(std::shared_ptr<NativeLibrary> library, absl::string_view bundle) {
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

}  // namespace polyplug::core
