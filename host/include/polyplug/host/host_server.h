// HostServer: the polyplug-host control plane (polyplug.host.v1.PluginHost, health,
// reflection) served over a runtime, in polyplug-host or embedded in an application.
//
// An application that embeds it (a game's runtime process, say) keeps calling its bundles
// in process through the core's handles, at nanosecond cost, while an editor, CI or grpcurl
// reloads them over gRPC. With OperationThread::kApplication, every load, reload and unload
// requested over gRPC or by --watch waits until the application calls
// RunPendingOperations() at a point it chooses (its frame boundary), and runs there, on its
// thread: a frame that calls through handles never sees a bundle swapped under it and never
// waits on gRPC work. docs/EMBEDDING.md walks through it.
#ifndef POLYPLUG_HOST_HOST_SERVER_H_
#define POLYPLUG_HOST_HOST_SERVER_H_

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "polyplug/core/bundle_signature.h"

namespace polyplug::core {
class Runtime;
}  // namespace polyplug::core

namespace polyplug::host {

// Where the loads, reloads and unloads requested over gRPC or by --watch run.
enum class OperationThread {
  // On the host's own worker thread, one at a time, as soon as they arrive.
  kHostWorker,
  // Queued, in arrival order, until the application calls
  // HostServer::RunPendingOperations(), which runs them on the application's thread.
  kApplication,
};

struct HostServerOptions {
  // "unix:PATH" or "HOST:PORT". Empty: the default address (wire::DefaultHostAddress(),
  // unix:$XDG_RUNTIME_DIR/polyplug-host.sock, else unix:/tmp/polyplug-host-<uid>.sock).
  std::vector<std::string> listen;
  // Bundle roots: everything one level below is loaded at start; load and reload paths
  // must resolve inside them.
  std::vector<std::filesystem::path> bundle_roots;
  OperationThread operations = OperationThread::kHostWorker;
  // The runtime's own settings, for the runtime Start() creates. An application that brings
  // its runtime sets them in its RuntimeOptions instead, and leaves these at their defaults.
  std::filesystem::path state_dir;  // empty: a private temp dir
  bool hot_reload = true;
  bool hash_artifacts = false;  // SHA-256 of every artifact loaded (implied by supervision)
  size_t journal_size = 4096;
  // Which bundles load (docs/SIGNING.md): off, warn (log what is unsigned or does not
  // verify, load it anyway) or required; checked on every load and reload. With
  // trusted_keys, a valid bundle.sig must also be made by one of them.
  core::SignaturePolicy signature_policy = core::SignaturePolicy::kOff;
  std::vector<core::Ed25519PublicKey> trusted_keys;
  std::string auth_token;                                    // empty: no authentication
  std::string tls_cert_pem, tls_key_pem, tls_client_ca_pem;  // TLS when cert and key are set
  bool insecure_remote = false;  // allow non-loopback TCP without TLS or token
  size_t max_subscribers = 256;
  int max_message_bytes = 4 << 20;
  size_t call_threads = 4;  // threads running bundles' code for remote calls
  // How long a reload or unload waits for remote calls in flight on the bundle (with
  // kApplication, inside RunPendingOperations(): a frame's hitch when a call is slow).
  absl::Duration drain_timeout = absl::Seconds(10);
  // Remote instances made outside a session die after this long without a call.
  absl::Duration instance_idle_timeout = absl::Minutes(10);
  // PushBundle uploads land here, as <deploy_root>/<bundle name>; it is a bundle root too
  // (added to bundle_roots if missing, created if missing). One host per deploy root.
  // Empty: PushBundle is refused.
  std::filesystem::path deploy_root;
  // The largest upload PushBundle takes (all files together).
  uint64_t max_bundle_bytes = 256ull << 20;
  // Reload bundles when their files change (BundleWatcher); needs bundle roots.
  bool watch = false;
  absl::Duration watch_settle = absl::Milliseconds(200);
  // Join a fleet (docs/FLEET.md): register in etcd at `etcd_endpoints` ("HOST:PORT"),
  // follow the fleet's desired state, fetch what is missing from peers into deploy_root
  // (required) and acknowledge it. Empty: not in a fleet. etcd being unreachable never
  // stops the host: it serves its local bundles and keeps trying.
  std::string fleet;
  std::vector<std::string> etcd_endpoints;
  // The host's name in the fleet; empty: "<hostname>-<advertised address>" (stable across
  // restarts, so that a restarted host takes its place again).
  std::string fleet_host_id;
  // Where peers and polyplugctl reach this host; empty: the first TCP listen address,
  // else the first.
  std::string fleet_advertise;
  // PEM roots that peers' TLS certificates must chain to: peers at TCP addresses are then
  // called over TLS, presenting tls_cert_pem/tls_key_pem when they ask for a client
  // certificate. Empty: tls_client_ca_pem; both empty: plaintext.
  std::string fleet_peer_ca_pem;
  // The host's registration lives this long without etcd hearing from it.
  absl::Duration fleet_lease_ttl = absl::Seconds(10);
  // Set by polyplug-host --supervise for the server it runs (CrashRecovery): the
  // supervisor's state directory (state_dir is ignored then), the pipe to report readiness
  // on, and how many times it restarted the server before.
  std::filesystem::path supervisor_state;
  int supervisor_fd = -1;
  uint32_t supervisor_restart = 0;
};

// One control plane over one runtime. Thread-safe unless a method says otherwise.
class HostServer {
 public:
  // Validates the options, creates a runtime of its own, loads the bundle roots into it
  // (on the calling thread), starts listening. An error says which option is wrong.
  static absl::StatusOr<std::unique_ptr<HostServer>> Start(HostServerOptions options);
  // The same over the application's `runtime`, which must outlive the server. Bundles it
  // already loaded stay and are served; the bundle roots are loaded into it as well (those
  // already loaded are skipped). The runtime settings of `options` (state_dir, hot_reload,
  // hash_artifacts, journal_size, signature_policy, trusted_keys) and --supervise's must be
  // left at their defaults. The
  // application may go on loading, reloading and unloading on its runtime itself (the
  // runtime serializes that with the host's operations), but not while Shutdown() runs.
  static absl::StatusOr<std::unique_ptr<HostServer>> Start(core::Runtime& runtime,
                                                           HostServerOptions options);
  ~HostServer();  // Shutdown()

  // Stops accepting, lets the operation in progress finish, fails the queued ones with
  // UNAVAILABLE (reason SHUTTING_DOWN), ends streams with UNAVAILABLE. Idempotent. Not
  // from a phase listener or from inside RunPendingOperations().
  void Shutdown();

  // kApplication: runs the operations queued when it is called, in arrival order, on the
  // calling thread, and returns how many it took from the queue. The runtime's phase
  // listeners (the application's PREPARING listener that drops its instances, too) run on
  // this thread meanwhile. An operation whose caller gave up first (its deadline passed,
  // it was cancelled) is answered so and does not run. With none queued it costs one
  // atomic load.
  // A reload or unload here first waits for remote calls in flight on its bundle, up to
  // `drain_timeout`: keep that short in a frame loop. Never call it while this thread holds
  // a core::ReadPin (the swap waits for pins: it would wait for itself). Call it from one
  // thread at a time, never from a phase listener. kHostWorker: returns 0.
  size_t RunPendingOperations();
  // How many operations wait to run: for RunPendingOperations() (kApplication), or for the
  // host's worker thread (kHostWorker).
  size_t pending_operations() const;
  // Blocks until an operation waits to run or `timeout` passes; true when one does. For an
  // application with no frame loop to pump from (and for tests).
  bool WaitForPendingOperations(absl::Duration timeout) const;

  // The runtime served: the application's, or the one Start() created.
  core::Runtime& runtime() const;
  const std::vector<std::string>& listen_addresses() const;

 private:
  class Impl;
  explicit HostServer(std::unique_ptr<Impl> impl);
  // Both Start()s: `application_runtime` null when the host creates its own.
  static absl::StatusOr<std::unique_ptr<HostServer>> Serve(core::Runtime* application_runtime,
                                                           HostServerOptions options);
  static absl::Status CreateRuntime(const HostServerOptions& options, Impl& impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace polyplug::host

#endif  // POLYPLUG_HOST_HOST_SERVER_H_
