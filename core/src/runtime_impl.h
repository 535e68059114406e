// Runtime::Impl: the state of a runtime and the operations on it, declared here and defined
// one concept per file (the way LevelDB splits db_impl.h from db_impl.cc):
//
//   runtime.cc    creation, the loaded-bundle table, events, introspection
//   load.cc       loading a bundle: manifest, artifact, init window, publication
//   signature_check.cc  the signature policy on load and reload (docs/SIGNING.md)
//   reload.cc     the reload flow and its cascade, step by step (docs/SEMANTICS.md §4, §5)
//   unload.cc     unloading, alone or with dependents first (§6)
//   host_api.cc   the HostApi table bundles call, and live-instance accounting (§8)
//   discovery.cc  scanning bundle roots and loading in dependency order (§9)
//
// Threading: mutations (load, reload, unload) hold op_mu_ for their whole run; the tables
// they share with readers have their own small locks, never held while bundle code, a
// listener or the log sink runs.
#ifndef POLYPLUG_CORE_SRC_RUNTIME_IMPL_H_
#define POLYPLUG_CORE_SRC_RUNTIME_IMPL_H_

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/src/native_loader.h"
#include "polyplug/abi.h"
#include "polyplug/core/manifest.h"
#include "polyplug/core/phase_event.h"
#include "polyplug/core/registry.h"
#include "polyplug/core/runtime.h"

namespace polyplug::core {

// The canonical directory `path` names: itself when it is a directory, else its parent.
std::filesystem::path CanonicalDir(const std::filesystem::path& path);

class Runtime::Impl {
 public:
  Impl(Runtime* runtime, std::filesystem::path state_dir, bool owns_state_dir);
  ~Impl();  // drops every bundle, dependents first, without events

  const PolyplugHostApi* api() const { return &api_; }
  const std::filesystem::path& state_dir() const { return state_dir_; }

  // load.cc
  absl::StatusOr<BundleInfo> Load(const BundleSource& source);

  // reload.cc
  absl::StatusOr<ReloadOutcome> Reload(const std::filesystem::path& path,
                                       const ReloadOptions& options);
  absl::StatusOr<ReloadOutcome> ReloadByName(absl::string_view name, const ReloadOptions& options);

  // unload.cc
  absl::StatusOr<std::vector<std::string>> Unload(absl::string_view name, UnloadMode mode);

  // host_api.cc: counted instances and remote-style calls.
  absl::StatusOr<PolyplugGuestContractInstance> CreateInstance(
      const PolyplugGuestContractInterface& iface, PolyplugBytesView args);
  void DestroyInstance(const PolyplugGuestContractInterface& iface,
                       PolyplugGuestContractInstance instance);
  absl::StatusOr<std::string> Invoke(const PolyplugGuestContractInterface& iface,
                                     PolyplugGuestContractInstance instance,
                                     absl::string_view callee, absl::string_view method,
                                     absl::string_view request);

  // runtime.cc: introspection.
  std::vector<BundleInfo> List();
  absl::StatusOr<BundleInfo> Get(absl::string_view name);
  absl::StatusOr<std::pair<std::string, Version>> NameAndVersion(uint64_t id) const;

 private:
  struct LoadedBundle {
    Manifest manifest;  // as last loaded or reloaded; manifest.dir is where it lives
    std::filesystem::path artifact;
    std::shared_ptr<NativeLibrary> library;  // shared with its registry records
    std::vector<uint64_t> declared;          // contract ids of its [[dependency]] tables
    uint64_t reload_count = 0;
    std::string signing_key;  // BundleInfo::signing_key
  };

  // The bundle whose polyplug_init is running on this thread (the enforcement window).
  struct InitFrame {
    Impl* impl = nullptr;
    uint64_t bundle_id = 0;
    std::string bundle_name;
    absl::flat_hash_set<uint64_t> declared;
    std::vector<Registration> staged;
    absl::Status error;  // the first registration refused
  };

  // A bundle this operation swapped to its new version, until its RELOADED.
  struct Swapped {
    uint64_t reload_id = 0;
    uint64_t parent_reload_id = 0;
    Manifest manifest;  // the new version's
    std::string artifact_sha256;
    std::string signing_key;
    std::vector<uint64_t> old_contracts;  // what it provided before the swap
  };

  // What the signature policy found for the files of one load or reload.
  struct SignatureCheck {
    // The signature holds over the files of `dir`: the bytes loaded must be the bytes signed.
    bool bound = false;
    std::filesystem::path dir;
    std::map<std::string, std::string> file_sha256;  // BundleDigest::file_sha256
    // Hex of the key, while every check passed (verified, trusted, bytes bound).
    std::string signing_key;
  };

  // What one mutation (load, reload with its cascade, unload) collects as it goes.
  struct OperationContext {
    std::vector<PhaseEvent> events;
    std::map<uint64_t, Swapped> swapped;
    // The images a reload replaced and their interfaces as readers resolved them: kept
    // until the whole operation has ended, because dependents that opted in may hold
    // pointers into them until their own PREPARING (§5).
    std::vector<std::pair<std::string, std::shared_ptr<NativeLibrary>>> retired_images;
    std::vector<std::shared_ptr<const PolyplugGuestContractInterface>> retired_interfaces;
  };

  // What a reload request names: a loaded bundle, and where its new version is read from.
  struct ReloadTarget {
    uint64_t bundle_id = 0;
    std::filesystem::path dir;           // the loaded bundle's directory, or a sibling
    std::filesystem::path missing_file;  // the request named this file, which does not exist
  };

  // Serializes mutations and remembers the thread running one (for REENTRANT_CALL).
  class OperationLock {
   public:
    explicit OperationLock(Impl* impl);
    ~OperationLock();
    OperationLock(const OperationLock&) = delete;
    OperationLock& operator=(const OperationLock&) = delete;

   private:
    Impl* impl_;
  };

  // ---- runtime.cc
  absl::Status CheckNotReentrant() const;
  PhaseEvent BaseEvent(Phase phase, const Manifest& manifest) const;
  // Appends to the journal (listeners run now, on this thread) and to ctx.
  void Emit(OperationContext& ctx, PhaseEvent event);
  uint64_t NextOperationId() { return next_operation_id_.fetch_add(1); }
  absl::Status BundleNotFound(absl::string_view name) const;
  BundleInfo InfoOf(uint64_t id);
  // Contract ids the bundle provides: its published slots and its manifest's `provides`.
  // Requires bundles_mu_.
  absl::flat_hash_set<uint64_t> ExportedContractsLocked(uint64_t bundle_id) const;
  // Loaded bundles other than `bundle_id` that declared a dependency on one of `exported`.
  // Requires bundles_mu_.
  std::vector<uint64_t> DependentsLocked(uint64_t bundle_id,
                                         const absl::flat_hash_set<uint64_t>& exported) const;
  // DependentsLocked of what the bundle exports now.
  std::vector<uint64_t> DependentsOf(uint64_t bundle_id);

  // ---- load.cc
  absl::StatusOr<BundleInfo> LoadLocked(const BundleSource& source, OperationContext& ctx);
  // Copies the artifact aside and asks RuntimeOptions::admit_artifact about its bytes.
  // `hash`: hash this copy even when the runtime does not hash artifacts.
  absl::StatusOr<StagedArtifact> StageAndAdmit(const Manifest& manifest,
                                               const std::filesystem::path& artifact,
                                               std::string* sha256 = nullptr, bool hash = false);
  absl::Status NoLoader(const Manifest& manifest) const;
  // Opens the staged artifact and runs polyplug_init in the enforcement window; checks what
  // it registered against the manifest. Publishes nothing; closes the library on failure.
  absl::StatusOr<std::pair<std::shared_ptr<NativeLibrary>, std::vector<Registration>>> OpenAndInit(
      const Manifest& manifest, StagedArtifact staged);
  absl::Status CheckRegistrations(const Manifest& manifest,
                                  const std::vector<Registration>& staged) const;
  // Closes a library no reader can reach any more, unless retained interfaces still hold
  // it (Registry::Retain): then the last of them closes it.
  void CloseLibrary(std::shared_ptr<NativeLibrary> library, absl::string_view bundle);

  // ---- signature_check.cc
  // Verifies the files of manifest.dir as RuntimeOptions::signature_policy requires, right
  // after the manifest was validated; `doing` ("loading", "reloading") words the Warn line.
  // When the signature holds, `manifest` is replaced by the one parsed from the signed
  // bytes of manifest.toml. kRequired returns the problem; kWarn logs it and goes on.
  absl::StatusOr<SignatureCheck> CheckSignature(Manifest& manifest, absl::string_view doing);
  // The staged copy of `artifact` holds the bytes signed (SIGNATURE_INVALID when it does
  // not: it changed after its signature was checked). kWarn logs instead.
  absl::Status CheckArtifactSigned(SignatureCheck& check, const Manifest& manifest,
                                   const std::filesystem::path& artifact,
                                   const StagedArtifact& staged, absl::string_view doing);
  // A problem kWarn lets through: a Warn line in scope "signature" naming the bundle.
  void WarnSignatureProblem(const Manifest& manifest, absl::string_view problem,
                            absl::string_view doing) const;

  // ---- reload.cc
  absl::StatusOr<ReloadTarget> FindReloadTarget(const std::filesystem::path& path);
  // The reload of one bundle up to its swap (§4 steps 3-10); FAILED is emitted here, RELOADED
  // by the operation once the bundle's cascade has ended.
  // `expected_sha256` (the primary's precondition): EXPECTED_SHA256_MISMATCH, with no event,
  // unless the artifact has those bytes.
  absl::Status ReloadOne(const ReloadTarget& target, uint64_t reload_id, uint64_t parent_id,
                         uint64_t root_id, OperationContext& ctx,
                         absl::string_view expected_sha256 = "");
  // The cascade after the root's swap (§5), each RELOADED, then the retired images closed.
  void CascadeAndFinish(uint64_t root, uint64_t root_id, OperationContext& ctx);
  void EmitReloaded(uint64_t bundle_id, uint64_t root_id, OperationContext& ctx);

  // ---- unload.cc
  void UnloadCascade(uint64_t id, OperationContext& ctx, std::set<uint64_t>& visited,
                     std::vector<std::string>& unloaded);
  void UnloadOne(uint64_t id, uint64_t op_id, OperationContext& ctx,
                 std::vector<std::string>& unloaded);
  // Removes the bundle from the registry and the table and closes its image.
  void DropBundle(uint64_t id);

  // ---- host_api.cc
  static std::vector<InitFrame*>& InitStack();  // this thread's open init windows
  static Impl* From(const PolyplugHostApi* api);
  InitFrame* CurrentFrame();  // the innermost init window of this runtime on this thread
  uint64_t LiveInstancesOf(uint64_t bundle_id);
  void ForgetInstances(const std::vector<uint64_t>& contract_ids);
  static void ApiRegister(const PolyplugHostApi* self, const PolyplugPluginDescriptor* descriptor,
                          const PolyplugGuestContractInterface* iface, PolyplugAbiError* out_err);
  static PolyplugGuestContractHandle ApiFind(const PolyplugHostApi* self, uint64_t contract_id,
                                             uint32_t min_major);
  static const PolyplugGuestContractInterface* ApiResolve(const PolyplugHostApi* self,
                                                          PolyplugGuestContractHandle handle);
  static PolyplugAbiError ApiCreateInstance(const PolyplugHostApi* self,
                                            const PolyplugGuestContractInterface* iface,
                                            PolyplugBytesView args,
                                            PolyplugGuestContractInstance* out);
  static void ApiDestroyInstance(const PolyplugHostApi* self,
                                 const PolyplugGuestContractInterface* iface,
                                 PolyplugGuestContractInstance instance);
  static void ApiLog(const PolyplugHostApi* self, PolyplugLogLevel level, PolyplugStringView scope,
                     PolyplugStringView message);
  static uint64_t ApiRevision(const PolyplugHostApi* self);

  Runtime* runtime_;
  NativeLoader loader_;
  std::filesystem::path state_dir_;
  bool owns_state_dir_;
  PolyplugHostApi api_{};

  std::mutex op_mu_;  // serializes load, reload and unload
  std::atomic<std::thread::id> op_owner_{};

  mutable std::mutex bundles_mu_;
  std::map<uint64_t, LoadedBundle> bundles_;  // guarded by bundles_mu_

  std::mutex instances_mu_;
  absl::flat_hash_map<uint64_t, uint64_t> instance_counts_;  // contract id -> live; guarded

  std::atomic<uint64_t> next_operation_id_{1};
};

}  // namespace polyplug::core

#endif  // POLYPLUG_CORE_SRC_RUNTIME_IMPL_H_
