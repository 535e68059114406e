// Runtime: loads, reloads and unloads bundles and owns their registry and event journal.
//
// Re-creates the polyplug runtime; docs/SEMANTICS.md says what each operation does, step by
// step. Mutations (load, reload, unload, discovery) are serialized per runtime; lookups
// never wait for them. Phase events are appended to the journal and delivered to listeners
// on the mutating thread with no internal lock held; a listener may look contracts up but
// may not start another mutation on the same runtime (it gets REENTRANT_CALL).
#ifndef POLYPLUG_CORE_RUNTIME_H_
#define POLYPLUG_CORE_RUNTIME_H_

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "polyplug/abi.h"
#include "polyplug/core/bundle_signature.h"
#include "polyplug/core/event_journal.h"
#include "polyplug/core/manifest.h"
#include "polyplug/core/phase_event.h"
#include "polyplug/core/registry.h"

namespace polyplug::core {

enum class LogLevel : int { kError = 1, kWarn = 2, kInfo = 3, kDebug = 4, kTrace = 5 };

// Called from any thread, never with an internal lock held; must not re-enter mutations.
using LogSink =
    std::function<void(LogLevel level, absl::string_view scope, absl::string_view message)>;

struct RuntimeOptions {
  bool hot_reload_enabled = true;
  size_t journal_capacity = 4096;
  // Private artifact copies. Empty: a fresh directory under the system temp dir.
  std::filesystem::path state_dir;
  // Null: Error and Warn lines go to stderr as "[polyplug] [scope] message".
  LogSink log_sink;
  LogLevel max_log_level = LogLevel::kWarn;
  // 0: a random epoch. Tests may fix it.
  uint64_t host_epoch = 0;
  // Compute the SHA-256 of every artifact loaded (BundleInfo, events). Costs about 0.6 ms
  // per MB of artifact on each load and reload; implied by admit_artifact and by a
  // signature policy other than kOff.
  bool hash_artifacts = false;
  // Asked before every load and reload opens an artifact, with the SHA-256 (lowercase hex)
  // of its bytes; an error refuses it (a reload then fires FAILED with the error's reason
  // before PREPARING, as for a missing artifact). Runs on the mutating thread. Null: all
  // are admitted. polyplug-host --supervise refuses versions that crashed the host.
  std::function<absl::Status(const Manifest& manifest, absl::string_view sha256)> admit_artifact;
  // Checked on every load and reload, right after the manifest, on the directory the files
  // are read from (docs/SIGNING.md). kRequired: UNSIGNED_BUNDLE, SIGNATURE_INVALID or
  // UNTRUSTED_SIGNING_KEY fail the load, or fire FAILED before PREPARING on a reload.
  // kWarn: a Warn log line (scope "signature"), and the load goes on. kOff reads nothing.
  SignaturePolicy signature_policy = SignaturePolicy::kOff;
  // Empty: any key whose signature holds is accepted (trust on first use). Otherwise the
  // key in bundle.sig must be one of these.
  std::vector<Ed25519PublicKey> trusted_keys;
};

// Where a bundle is loaded from. `dir` is the bundle's directory: what reloads, listings
// and polyplug_init's bundle_dir name. `files`, when set, is another directory holding the
// manifest and artifact to load this time (a copy of an earlier version of the bundle).
// A signature policy verifies the directory the files are read from: `files` when set,
// which must then hold the bundle.sig and every file it signs.
struct BundleSource {
  std::filesystem::path dir;
  std::filesystem::path files;
};

struct BundleInfo {
  uint64_t id = 0;
  std::string name;
  Version version;
  std::filesystem::path dir;
  std::filesystem::path artifact;
  std::string artifact_sha256;  // of the bytes loaded (lowercase hex)
  std::filesystem::path image;  // the private copy that is mapped
  std::string loader;
  bool needs_reinit_on_dep_reload = false;
  std::vector<std::string> provides;            // "name@major"
  std::vector<uint64_t> declared_dependencies;  // contract ids
  std::vector<ContractHandle> slots;
  uint64_t reload_count = 0;
  // Lowercase hex of the Ed25519 key that signed the files loaded, when the signature
  // policy verified them (and the key is trusted, when keys are pinned); empty otherwise.
  std::string signing_key;
};

// The files of a bundle directory as a load would judge them (Runtime::ReadBundleFiles).
struct BundleFiles {
  absl::StatusOr<Manifest> manifest;
  // The artifact the manifest names, confined to the directory (ARTIFACT_MISSING,
  // ARTIFACT_PATH_ESCAPE, ...); the manifest's error when it does not parse.
  absl::StatusOr<std::filesystem::path> artifact;
  // Whether the artifact looks complete: a 64-bit ELF shared object for this machine whose
  // tables are all there (ARTIFACT_NOT_LOADABLE says what is wrong, e.g. still being
  // written). The artifact's error when there is none.
  absl::Status artifact_check;
};

// What one Reload did: the primary's status, and every event it caused (cascade included).
struct ReloadOutcome {
  absl::Status status;  // OK when the primary reached RELOADED
  uint64_t reload_id = 0;
  std::vector<PhaseEvent> events;
  uint64_t registry_revision = 0;

  bool ok() const { return status.ok(); }
  // The dependents whose cascaded reload failed (their FAILED events), in order.
  std::vector<std::string> FailedDependents() const;
};

// What a reload request asks beyond its bundle.
struct ReloadOptions {
  // Lowercase hex SHA-256: reload only if the artifact the new version names has these
  // bytes (the build a CI job means). Otherwise EXPECTED_SHA256_MISMATCH, as a request
  // error: no event, nothing reloaded. Checked on the private copy that would be loaded.
  std::string expected_sha256;
};

enum class UnloadMode { kRefuseIfInUse, kCascade };

// A bundle that DiscoverAndLoad or LoadAll left out (skip_unloadable), and why.
struct NotLoaded {
  std::string name;  // the manifest's; the directory's name when the manifest is unreadable
  std::filesystem::path dir;
  absl::Status status;  // carries the reason (UNSATISFIED_DEPENDENCY, DEPENDENCY_CYCLE, ...)
};

class Runtime {
 public:
  static absl::StatusOr<std::unique_ptr<Runtime>> Create(RuntimeOptions options);
  ~Runtime();  // unloads everything (dependents first)

  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Loads the bundle at `path` (its directory or a file inside it): validate, open, init,
  // check registrations == provides, publish, then LOADED. A failure publishes nothing,
  // fires nothing, and returns the error.
  absl::StatusOr<BundleInfo> LoadBundle(const std::filesystem::path& path);
  absl::StatusOr<BundleInfo> LoadBundle(const BundleSource& source);

  // Hot reload, with the cascade to dependents that opted in (docs/SEMANTICS.md §4, §5).
  // `path` names a loaded bundle's directory or a file in it, or another directory whose
  // manifest names a loaded bundle (its new version; the bundle moves there when the
  // reload succeeds). Request errors (HOT_RELOAD_DISABLED, BUNDLE_NOT_FOUND) are returned
  // as a status with no events; failures of the reload itself are an outcome with FAILED.
  absl::StatusOr<ReloadOutcome> ReloadBundle(const std::filesystem::path& path,
                                             const ReloadOptions& options = {});
  absl::StatusOr<ReloadOutcome> ReloadBundleByName(absl::string_view name,
                                                   const ReloadOptions& options = {});

  // docs/SEMANTICS.md §6. kRefuseIfInUse gives DEPENDENCY_IN_USE when a loaded bundle
  // declared a dependency on one of its contracts; kCascade unloads those dependents first.
  // Returns the names unloaded, in order.
  absl::StatusOr<std::vector<std::string>> UnloadBundle(absl::string_view name, UnloadMode mode);

  // Scans each root one level deep, orders the bundles found by dependency (providers
  // first) and loads them. A cycle or an unsatisfied dependency is an error naming the
  // bundles; nothing is loaded then, unless `skip_unloadable`: then those
  // bundles, and the ones that need them, are skipped with a Warn log line carrying the
  // reason token ("[DEPENDENCY_CYCLE] ..."), and the rest loads. Bundles already loaded
  // are skipped; a bundle that fails to load is logged and skipped with its dependents.
  // Each bundle left out is also added to `not_loaded` when given. docs/SEMANTICS.md §9.
  absl::StatusOr<std::vector<BundleInfo>> DiscoverAndLoad(
      const std::vector<std::filesystem::path>& roots, bool skip_unloadable = false,
      std::vector<NotLoaded>* not_loaded = nullptr);
  // DiscoverAndLoad's ordering and loading for a given list of bundles (first wins for a
  // directory listed twice). A manifest that cannot be read is logged and skipped.
  absl::StatusOr<std::vector<BundleInfo>> LoadAll(const std::vector<BundleSource>& sources,
                                                  bool skip_unloadable = false,
                                                  std::vector<NotLoaded>* not_loaded = nullptr);

  // Lookups: lock-free, see Registry.
  absl::StatusOr<ContractHandle> Find(uint64_t contract_id, uint32_t min_major) const {
    return registry_.Find(contract_id, min_major);
  }
  absl::StatusOr<const PolyplugGuestContractInterface*> Resolve(ContractHandle h) const {
    return registry_.Resolve(h);
  }
  // See Registry::Retain: keeps the interface and its bundle's code alive with no pin.
  absl::StatusOr<std::shared_ptr<const PolyplugGuestContractInterface>> Retain(
      ContractHandle h) const {
    return registry_.Retain(h);
  }
  ReadPin Pin() const { return registry_.Pin(); }
  const Registry& registry() const { return registry_; }

  // Counted instance creation and destruction (docs/SEMANTICS.md §8). Bundle code runs on
  // the calling thread, marked in the crash record.
  absl::StatusOr<PolyplugGuestContractInstance> CreateInstance(
      const PolyplugGuestContractInterface& iface, PolyplugBytesView args);
  void DestroyInstance(const PolyplugGuestContractInterface& iface,
                       PolyplugGuestContractInstance instance);

  // Runs `method` of the contract's message-style invoke entry on `instance` with the
  // `request` bytes and returns the response bytes: what a caller in another process can
  // reach. NOT_INVOCABLE without an invoke entry, METHOD_NOT_FOUND when the bundle has no
  // such method, CALL_FAILED with the bundle's error otherwise. `callee` names the contract
  // in error messages (e.g. "example.greeter@1 from bundle greeter"; empty: its id). Bundle
  // code runs on the calling thread, marked in the crash record; the caller keeps `iface`
  // valid (a pin, or Retain).
  absl::StatusOr<std::string> Invoke(const PolyplugGuestContractInterface& iface,
                                     PolyplugGuestContractInstance instance,
                                     absl::string_view callee, absl::string_view method,
                                     absl::string_view request);

  // What a load of the bundle directory `dir` would find there, read without loading or
  // copying anything: for a file watcher that decides whether a write has finished.
  static BundleFiles ReadBundleFiles(const std::filesystem::path& dir);

  std::vector<BundleInfo> ListBundles() const;
  absl::StatusOr<BundleInfo> GetBundle(absl::string_view name) const;
  // The name and version of loaded bundle `id`, without building a BundleInfo (for every
  // reply that names a provider). BUNDLE_NOT_FOUND when none is loaded.
  absl::StatusOr<std::pair<std::string, Version>> BundleNameAndVersion(uint64_t id) const;

  EventJournal& journal() { return journal_; }
  const EventJournal& journal() const { return journal_; }
  uint64_t host_epoch() const { return journal_.host_epoch(); }
  bool hot_reload_enabled() const { return options_.hot_reload_enabled; }
  const std::filesystem::path& state_dir() const;

  // The HostApi table handed to bundles; valid for the runtime's lifetime.
  const PolyplugHostApi* host_api() const;

  // The in-process on_reload equivalent: sees every journal event, in seq order, with the
  // ABI's view of it. Returns an id for RemovePhaseCallback.
  using PhaseCallback = std::function<void(const PolyplugReloadPhase&, const PhaseEvent&)>;
  EventJournal::ListenerId AddPhaseCallback(PhaseCallback callback);
  void RemovePhaseCallback(EventJournal::ListenerId id);

  void Log(LogLevel level, absl::string_view scope, absl::string_view message) const;

 private:
  class Impl;
  explicit Runtime(RuntimeOptions options);
  // DiscoverAndLoad and LoadAll past reading the manifests.
  absl::StatusOr<std::vector<BundleInfo>> LoadInOrder(
      std::vector<std::pair<Manifest, BundleSource>> found, bool skip_unloadable,
      std::vector<NotLoaded>* not_loaded);

  RuntimeOptions options_;
  EventJournal journal_;
  Registry registry_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace polyplug::core

#endif  // POLYPLUG_CORE_RUNTIME_H_
