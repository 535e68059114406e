// Runtime: creation, the table of loaded bundles, events and introspection; the public
// methods forward to Runtime::Impl (core/src/runtime_impl.h lists where each part lives).
#include "polyplug/core/runtime.h"

#include <algorithm>
#include <cstdio>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "core/src/runtime_impl.h"
#include "polyplug/core/error.h"
#include "polyplug/core/ids.h"

namespace polyplug::core {

namespace fs = std::filesystem;

fs::path CanonicalDir(const fs::path& path) {
  std::error_code ec;
  fs::path dir = fs::is_directory(path, ec) ? path : path.parent_path();
  fs::path canonical = fs::weakly_canonical(fs::absolute(dir, ec), ec);
  if (canonical.filename().empty()) canonical = canonical.parent_path();
  return canonical;
}

// ---- Runtime::Impl: state, events, the bundle table -----------------------------------------

Runtime::Impl::Impl(Runtime* runtime, fs::path state_dir, bool owns_state_dir)
    : runtime_(runtime),
      // A signature policy binds the staged bytes to the signed SHA-256, so it hashes.
      loader_(state_dir, runtime->options_.hash_artifacts ||
                             static_cast<bool>(runtime->options_.admit_artifact) ||
                             runtime->options_.signature_policy != SignaturePolicy::kOff),
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

Runtime::Impl::~Impl() {
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

Runtime::Impl::OperationLock::OperationLock(Impl* impl) : impl_(impl) {
  impl_->op_mu_.lock();
  impl_->op_owner_.store(std::this_thread::get_id());
}

Runtime::Impl::OperationLock::~OperationLock() {
  impl_->op_owner_.store(std::thread::id());
  impl_->op_mu_.unlock();
}

absl::Status Runtime::Impl::CheckNotReentrant() const {
  if (op_owner_.load() == std::this_thread::get_id()) {
    return MakeError(ErrorReason::kReentrantCall,
                     "a phase callback or log sink tried to load, reload or unload a bundle "
                     "while another operation of the same runtime is running on this thread");
  }
  return absl::OkStatus();
}

PhaseEvent Runtime::Impl::BaseEvent(Phase phase, const Manifest& manifest) const {
  PhaseEvent event;
  event.phase = phase;
  event.bundle_id = manifest.id;
  event.bundle_name = manifest.name;
  event.bundle_version = manifest.version;
  return event;
}

void Runtime::Impl::Emit(OperationContext& ctx, PhaseEvent event) {
  event.registry_revision = runtime_->registry_.revision();
  PhaseEvent stored = runtime_->journal_.Append(std::move(event));
  runtime_->Log(LogLevel::kDebug, "journal",
                absl::StrCat(PhaseName(stored.phase), " ", stored.bundle_name, " seq=", stored.seq,
                             stored.message.empty() ? "" : ": ", stored.message));
  ctx.events.push_back(std::move(stored));
}

absl::Status Runtime::Impl::BundleNotFound(absl::string_view name) const {
  return MakeError(ErrorReason::kBundleNotFound,
                   absl::StrCat("no bundle named \"", name, "\" is loaded"));
}

absl::flat_hash_set<uint64_t> Runtime::Impl::ExportedContractsLocked(uint64_t bundle_id) const {
  absl::flat_hash_set<uint64_t> exported;
  for (const ContractEntry& e : runtime_->registry_.ListBundle(bundle_id))
    exported.insert(e.contract_id);
  if (auto it = bundles_.find(bundle_id); it != bundles_.end()) {
    for (const ContractRef& ref : it->second.manifest.provides) {
      exported.insert(GuestContractId(ref.name, ref.major()));
    }
  }
  return exported;
}

std::vector<uint64_t> Runtime::Impl::DependentsLocked(
    uint64_t bundle_id, const absl::flat_hash_set<uint64_t>& exported) const {
  std::vector<uint64_t> out;
  for (const auto& [id, b] : bundles_) {
    if (id == bundle_id) continue;
    if (std::any_of(b.declared.begin(), b.declared.end(),
                    [&](uint64_t dep) { return exported.contains(dep); })) {
      out.push_back(id);
    }
  }
  return out;
}

std::vector<uint64_t> Runtime::Impl::DependentsOf(uint64_t bundle_id) {
  std::lock_guard<std::mutex> lock(bundles_mu_);
  return DependentsLocked(bundle_id, ExportedContractsLocked(bundle_id));
}

// ---- Introspection --------------------------------------------------------------------------

BundleInfo Runtime::Impl::InfoOf(uint64_t id) {
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
    info.signing_key = b.signing_key;
  }
  for (const ContractEntry& e : runtime_->registry_.ListBundle(id)) info.slots.push_back(e.handle);
  return info;
}

std::vector<BundleInfo> Runtime::Impl::List() {
  std::vector<std::pair<std::string, uint64_t>> ids;
  {
    std::lock_guard<std::mutex> lock(bundles_mu_);
    for (const auto& [id, b] : bundles_) ids.push_back({b.manifest.name, id});
  }
  std::sort(ids.begin(), ids.end());
  std::vector<BundleInfo> out;
  for (const auto& [name, id] : ids) {
    BundleInfo info = InfoOf(id);
    if (info.id != 0) out.push_back(std::move(info));
  }
  return out;
}

absl::StatusOr<BundleInfo> Runtime::Impl::Get(absl::string_view name) {
  BundleInfo info = InfoOf(BundleId(name));
  if (info.id == 0) return BundleNotFound(name);
  return info;
}

absl::StatusOr<std::pair<std::string, Version>> Runtime::Impl::NameAndVersion(uint64_t id) const {
  std::lock_guard<std::mutex> lock(bundles_mu_);
  auto it = bundles_.find(id);
  if (it == bundles_.end()) return BundleNotFound(FormatBundleId(id));
  return std::make_pair(it->second.manifest.name, it->second.manifest.version);
}

// ---- Runtime ------------------------------------------------------------------------------

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
  if (options.signature_policy != SignaturePolicy::kOff &&
      options.signature_policy != SignaturePolicy::kWarn &&
      options.signature_policy != SignaturePolicy::kRequired) {
    return MakeError(ErrorReason::kInvalidArgument,
                     absl::StrCat("signature_policy ", static_cast<int>(options.signature_policy),
                                  " is none of off (0), warn (1), required (2)"));
  }
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

std::vector<std::string> ReloadOutcome::FailedDependents() const {
  std::vector<std::string> names;
  for (const PhaseEvent& e : events) {
    if (e.phase == Phase::kFailed && e.parent_reload_id != 0) names.push_back(e.bundle_name);
  }
  return names;
}

absl::StatusOr<ReloadOutcome> Runtime::ReloadBundle(const fs::path& path,
                                                    const ReloadOptions& options) {
  return impl_->Reload(path, options);
}

absl::StatusOr<ReloadOutcome> Runtime::ReloadBundleByName(absl::string_view name,
                                                          const ReloadOptions& options) {
  return impl_->ReloadByName(name, options);
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

absl::StatusOr<std::string> Runtime::Invoke(const PolyplugGuestContractInterface& iface,
                                            PolyplugGuestContractInstance instance,
                                            absl::string_view callee, absl::string_view method,
                                            absl::string_view request) {
  return impl_->Invoke(iface, instance, callee, method, request);
}

BundleFiles Runtime::ReadBundleFiles(const fs::path& dir) {
  BundleFiles files;
  files.manifest = LoadManifest(dir);
  files.artifact = files.manifest.ok() ? NativeLoader::ResolveArtifact(*files.manifest)
                                       : absl::StatusOr<fs::path>(files.manifest.status());
  files.artifact_check = files.artifact.ok()
                             ? NativeLoader::CheckArtifact(*files.artifact, files.manifest->name)
                             : files.artifact.status();
  return files;
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
