// HostClient: a connection to one polyplug-host, its calls, subscriptions and live handles.
//
// Every call returns absl::Status / StatusOr. A host error keeps its gRPC code and message
// ("[REASON] what was wrong"); FailureReasonOf() reads the reason. Transport failures say
// which target could not be reached. A reload that fails is not an error: it is a
// ReloadResponse with outcome RELOAD_OUTCOME_FAILED and the reason.
#ifndef POLYPLUG_CLIENT_HOST_CLIENT_H_
#define POLYPLUG_CLIENT_HOST_CLIENT_H_

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "polyplug/client/live_instance.h"
#include "polyplug/client/phase_event.h"
#include "polyplug/client/subscription.h"
#include "polyplug/client/tracked_contract.h"
#include "polyplug/host/v1/host.pb.h"

namespace polyplug::client {

struct ConnectOptions {
  // Sent as "authorization: Bearer <token>" on every call; empty: none.
  std::string auth_token;
  // TLS for host:port targets. Empty roots: the system's trust store.
  bool tls = false;
  std::string tls_root_certs_pem;
  std::string tls_client_cert_pem;  // with the key: a client certificate (mTLS)
  std::string tls_client_key_pem;
  std::string tls_server_name;  // checked against the certificate instead of the target host
  // The deadline of a call that sets none. Reload waits for the cascade, so keep it generous.
  absl::Duration call_timeout = absl::Seconds(60);
  // Reconnect backoff of subscriptions: doubles from initial to max, with jitter.
  absl::Duration reconnect_initial_backoff = absl::Milliseconds(100);
  absl::Duration reconnect_max_backoff = absl::Seconds(5);
  // Largest message accepted from the host.
  int max_message_bytes = 4 << 20;
};

struct CallOptions {
  absl::Duration timeout = absl::ZeroDuration();  // zero: ConnectOptions::call_timeout
  // Wait for the host to come up (until the deadline) instead of failing at once with
  // UNAVAILABLE when it cannot be reached.
  bool wait_for_ready = false;
  // Reload, LoadBundle, UnloadBundle and PushBundle: sent as the request's request_id, so
  // that the host runs the operation once for this id (a retry with it gets the first
  // outcome) and GetOperation finds its outcome after a lost response. Other calls ignore it.
  std::string request_id;
};

enum class ServingStatus : int { kUnknown = 0, kServing = 1, kNotServing = 2, kServiceUnknown = 3 };
absl::string_view ServingStatusName(ServingStatus status);  // "SERVING", ...

// The reason a host error carries ("[BUNDLE_NOT_FOUND] ..." and the polyplug-reason
// trailer); FAILURE_REASON_UNSPECIFIED for transport errors and OK.
host::v1::FailureReason FailureReasonOf(const absl::Status& status);

// "unix:/run/user/1000/polyplug-host.sock": the host's default address for this user
// ($XDG_RUNTIME_DIR, else /tmp/polyplug-host-<uid>.sock), as polyplug-host computes it.
std::string DefaultHostTarget();

// One channel to a host. Thread-safe; calls may run concurrently. Subscriptions and
// tracked contracts keep the channel alive and may outlive the HostClient.
class HostClient {
 public:
  // `target`: "unix:PATH", "unix:///abs/path", "HOST:PORT", or an absolute socket path. Does
  // not wait for the host: the first call fails with UNAVAILABLE if nobody listens (use
  // CallOptions::wait_for_ready to wait). INVALID_ARGUMENT for a malformed target or
  // inconsistent TLS options.
  static absl::StatusOr<std::unique_ptr<HostClient>> Connect(absl::string_view target,
                                                             ConnectOptions options = {});
  ~HostClient();
  HostClient(const HostClient&) = delete;
  HostClient& operator=(const HostClient&) = delete;

  // Reloads a loaded bundle and returns once its terminal phase (cascade included) is in.
  // `bundle` is a name, or a path (it contains '/') inside one of the host's bundle roots.
  absl::StatusOr<host::v1::ReloadResponse> Reload(absl::string_view bundle,
                                                  const CallOptions& call = {});
  // The same, only if the artifact on the host has the SHA-256 `expected_sha256`
  // (lowercase hex, what sha256sum prints for the build meant): otherwise
  // FAILED_PRECONDITION (EXPECTED_SHA256_MISMATCH) and nothing happens.
  absl::StatusOr<host::v1::ReloadResponse> Reload(absl::string_view bundle,
                                                  absl::string_view expected_sha256,
                                                  const CallOptions& call = {});
  // Loads the bundle directory (or its manifest.toml) at `path`, a path on the host.
  absl::StatusOr<host::v1::LoadBundleResponse> LoadBundle(absl::string_view path,
                                                          const CallOptions& call = {});
  // Uploads the bundle directory `dir`, on this machine, into the host's deploy root and
  // loads it there, or reloads it when it is loaded from there (PushBundle). Sends every
  // regular file below `dir`; INVALID_ARGUMENT names an entry that is a symlink, device or
  // anything but a file or directory. The deadline covers the upload and the load or
  // reload. A push whose bundle does not load is a response with PUSH_OUTCOME_FAILED and
  // the reason (the host's previous version stays), not an error.
  absl::StatusOr<host::v1::PushBundleResponse> PushBundle(const std::filesystem::path& dir,
                                                          const CallOptions& call = {});
  // Unloads a bundle; with `cascade`, its dependents first.
  absl::StatusOr<host::v1::UnloadBundleResponse> UnloadBundle(absl::string_view name, bool cascade,
                                                              const CallOptions& call = {});
  // `contract`: "name@major" (or a bare name for major 0). `min_version`: the lowest
  // acceptable provider major version, 0 = any.
  absl::StatusOr<host::v1::ContractHandle> FindContract(absl::string_view contract,
                                                        uint32_t min_version = 0,
                                                        const CallOptions& call = {});
  absl::StatusOr<host::v1::ListBundlesResponse> ListBundles(const CallOptions& call = {});
  // `bundle`: only its providers; empty: all.
  absl::StatusOr<host::v1::ListContractsResponse> ListContracts(absl::string_view bundle = "",
                                                                const CallOptions& call = {});
  absl::StatusOr<host::v1::HostInfo> GetHostInfo(const CallOptions& call = {});
  // The outcome of the operation that carried `request_id` (CallOptions::request_id); with
  // `wait`, once it is done (or the call's deadline passes). NOT_FOUND
  // (OPERATION_NOT_FOUND) when the host does not remember it.
  absl::StatusOr<host::v1::Operation> GetOperation(absl::string_view request_id, bool wait,
                                                   const CallOptions& call = {});
  // The host answers `payload` back and does nothing else: a ping.
  absl::StatusOr<std::string> Echo(absl::string_view payload, const CallOptions& call = {});
  // grpc.health.v1 Check: "" is the host itself, a bundle's name that loaded bundle;
  // kServiceUnknown for a name the host does not know.
  absl::StatusOr<ServingStatus> CheckHealth(absl::string_view service = "",
                                            const CallOptions& call = {});

  // Remote calls: instances of a contract made in the host and methods run on them. An
  // instance is destroyed by DestroyInstance, or by a reload or unload of its bundle (then
  // calls on it fail with FAILED_PRECONDITION, INSTANCE_INVALIDATED_BY_RELOAD). A contract
  // without the message-style invoke entry is UNIMPLEMENTED (NOT_INVOCABLE).
  absl::StatusOr<host::v1::InstanceRef> CreateInstance(absl::string_view contract,
                                                       absl::string_view args = "",
                                                       uint32_t min_version = 0,
                                                       const CallOptions& call = {});
  absl::StatusOr<host::v1::InstanceRef> CreateInstance(const host::v1::ContractHandle& handle,
                                                       absl::string_view args = "",
                                                       const CallOptions& call = {});
  absl::StatusOr<host::v1::InvokeResponse> Invoke(const host::v1::InstanceRef& instance,
                                                  absl::string_view method,
                                                  absl::string_view request,
                                                  const CallOptions& call = {});
  // Runs `method` on a fresh instance of `contract` ("name@major") made for this call.
  absl::StatusOr<host::v1::InvokeResponse> InvokeOnce(absl::string_view contract,
                                                      absl::string_view method,
                                                      absl::string_view request,
                                                      uint32_t min_version = 0,
                                                      const CallOptions& call = {});
  absl::Status DestroyInstance(const host::v1::InstanceRef& instance, const CallOptions& call = {});

  // Starts a subscription at once; it connects (and reconnects) in the background.
  std::unique_ptr<Subscription> Subscribe(PhaseHandlers handlers, SubscribeOptions options = {});

  // Tracks `contract` ("name@major") with providers of major version >= `min_version`.
  // Looks it up before returning (Current() then holds the result, possibly an error) and
  // refreshes it on the HostClient's tracking subscription, one shared by all trackers.
  // The first call starts that subscription and waits for its snapshot, or for the host to
  // prove unreachable (then Current() is UNAVAILABLE until the host comes).
  std::unique_ptr<TrackedContract> TrackContract(absl::string_view contract, uint32_t min_version,
                                                 RefreshCallback on_refreshed = nullptr);

  // A remote instance of `contract` ("name@major", provider major >= `min_version`) made
  // with `args` when first called, and made again after every reload; see LiveInstance.
  std::unique_ptr<LiveInstance> MakeLiveInstance(absl::string_view contract,
                                                 uint32_t min_version = 0,
                                                 absl::string_view args = "",
                                                 LiveInstanceOptions options = {});

  const std::string& target() const;

 private:
  class Impl;
  explicit HostClient(std::unique_ptr<Impl> impl);
  std::shared_ptr<const internal::Connection> connection() const;
  std::unique_ptr<Impl> impl_;
};

}  // namespace polyplug::client

#endif  // POLYPLUG_CLIENT_HOST_CLIENT_H_
