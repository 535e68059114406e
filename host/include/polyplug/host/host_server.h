// HostServer: one polyplug-host process: runtime, services, listeners, shutdown.
#ifndef POLYPLUG_HOST_HOST_SERVER_H_
#define POLYPLUG_HOST_HOST_SERVER_H_

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace polyplug::host {

struct HostServerOptions {
  // "unix:PATH" or "HOST:PORT". Empty: the default address (wire::DefaultHostAddress(),
  // unix:$XDG_RUNTIME_DIR/polyplug-host.sock, else unix:/tmp/polyplug-host-<uid>.sock).
  std::vector<std::string> listen;
  // Bundle roots: everything one level below is loaded at start; load and reload paths
  // must resolve inside them.
  std::vector<std::filesystem::path> bundle_roots;
  std::filesystem::path state_dir;  // empty: a private temp dir
  bool hot_reload = true;
  bool hash_artifacts = false;  // SHA-256 of every artifact loaded (implied by supervision)
  size_t journal_size = 4096;
  std::string auth_token;                                    // empty: no authentication
  std::string tls_cert_pem, tls_key_pem, tls_client_ca_pem;  // TLS when cert and key are set
  bool insecure_remote = false;  // allow non-loopback TCP without TLS or token
  size_t max_subscribers = 256;
  int max_message_bytes = 4 << 20;
  size_t call_threads = 4;  // threads running bundles' code for remote calls
  // How long a reload or unload waits for remote calls in flight on the bundle.
  absl::Duration drain_timeout = absl::Seconds(10);
  // Remote instances made outside a session die after this long without a call.
  absl::Duration instance_idle_timeout = absl::Minutes(10);
  // Reload bundles when their files change (BundleWatcher); needs bundle roots.
  bool watch = false;
  absl::Duration watch_settle = absl::Milliseconds(200);
  // Set by polyplug-host --supervise for the server it runs (CrashRecovery): the
  // supervisor's state directory (state_dir is ignored then), the pipe to report readiness
  // on, and how many times it restarted the server before.
  std::filesystem::path supervisor_state;
  int supervisor_fd = -1;
  uint32_t supervisor_restart = 0;
};

class HostServer {
 public:
  // Validates options, creates the runtime, loads the bundle roots, starts listening.
  static absl::StatusOr<std::unique_ptr<HostServer>> Start(HostServerOptions options);
  ~HostServer();  // Shutdown()

  // Stops accepting, lets an in-flight reload finish, ends streams with UNAVAILABLE.
  void Shutdown();

  const std::vector<std::string>& listen_addresses() const;

 private:
  class Impl;
  explicit HostServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace polyplug::host

#endif  // POLYPLUG_HOST_HOST_SERVER_H_
