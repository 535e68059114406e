#include "polyplug/host/host_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "polyplug/core/error.h"
#include "polyplug/core/runtime.h"
#include "polyplug/host/bundle_watcher.h"
#include "polyplug/host/crash_recovery.h"
#include "polyplug/host/health_service.h"
#include "polyplug/host/operation_worker.h"
#include "polyplug/host/phase_stream.h"
#include "polyplug/host/plugin_host_service.h"
#include "polyplug/host/reflection_service.h"
#include "polyplug/host/remote_instances.h"

namespace polyplug::host {
namespace {

namespace fs = std::filesystem;
using core::ErrorReason;
using core::MakeError;

bool IsLoopbackHost(absl::string_view address) {
  // address is HOST:PORT; HOST may be [v6].
  size_t colon = address.rfind(':');
  absl::string_view host = address.substr(0, colon);
  if (absl::StartsWith(host, "[") && absl::EndsWith(host, "]"))
    host = host.substr(1, host.size() - 2);
  if (host == "localhost") return true;
  // Only address literals count: a name such as 127.example.com could resolve anywhere.
  const std::string literal(host);
  in_addr v4{};
  if (inet_pton(AF_INET, literal.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  return inet_pton(AF_INET6, literal.c_str(), &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6);
}

// Whether something accepts connections on the unix socket at `path`.
bool SocketIsServed(const fs::path& path) {
  sockaddr_un address{};
  if (path.native().size() >= sizeof(address.sun_path)) return false;
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.c_str(), path.native().size());
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  const bool served =
      connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == 0;
  close(fd);
  return served;
}

void LogPhase(const core::PhaseEvent& e) {
  std::string line = absl::StrCat("polyplug-host: [seq ", e.seq, "] ", core::PhaseName(e.phase),
                                  " ", e.bundle_name, " ", e.bundle_version.ToString());
  if (e.parent_reload_id != 0)
    absl::StrAppend(&line, " (cascade of reload ", e.root_reload_id, ")");
  if (e.phase == core::Phase::kFailed) {
    absl::StrAppend(&line, " reason=", core::ReasonToken(e.reason), ": ", e.message);
  } else if (!e.message.empty()) {
    absl::StrAppend(&line, ": ", e.message);
  }
  std::fprintf(stderr, "%s\n", line.c_str());
}

}  // namespace

std::string DefaultListenAddress() {
  if (const char* dir = std::getenv("XDG_RUNTIME_DIR"); dir != nullptr && dir[0] != '\0') {
    return absl::StrCat("unix:", dir, "/polyplug-host.sock");
  }
  return absl::StrCat("unix:/tmp/polyplug-host-", getuid(), ".sock");
}

class HostServer::Impl {
 public:
  std::unique_ptr<CrashRecovery> recovery;  // under --supervise; outlives the runtime
  std::unique_ptr<core::Runtime> runtime;
  std::unique_ptr<BundleWatcher> watcher;  // stopped first: it mutates the runtime
  // After the runtime: its instances go before the runtime does.
  std::unique_ptr<RemoteInstances> instances;
  std::unique_ptr<OperationWorker> worker;
  std::unique_ptr<OperationWorker> calls;
  std::unique_ptr<PhaseHub> hub;
  std::unique_ptr<HealthService> health;
  std::unique_ptr<PluginHostService> service;
  std::unique_ptr<ReflectionService> reflection;
  std::unique_ptr<grpc::Server> server;
  std::vector<std::string> listen;
  std::vector<fs::path> unix_sockets;
  core::EventJournal::ListenerId health_listener = 0;
  core::EventJournal::ListenerId log_listener = 0;
  core::EventJournal::ListenerId instances_listener = 0;
  core::EventJournal::ListenerId recovery_listener = 0;
  bool shut_down = false;

  // gRPC 1.51's callback server drains its completion queue with two threads that sleep
  // 100 ms after a second without events, so the first call after an idle spell can wait
  // that long (performance-notes section 7). An in-process health check every 250 ms keeps
  // them awake for the cost of a few microseconds.
  std::mutex warm_mu;
  std::condition_variable warm_cv;
  bool warm_stop = false;
  std::thread warm_thread;

  void KeepWarm() {
    auto stub =
        grpc::health::v1::Health::NewStub(server->InProcessChannel(grpc::ChannelArguments()));
    std::unique_lock<std::mutex> lock(warm_mu);
    while (!warm_cv.wait_for(lock, std::chrono::milliseconds(250), [this] { return warm_stop; })) {
      lock.unlock();
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
      grpc::health::v1::HealthCheckRequest request;
      grpc::health::v1::HealthCheckResponse response;
      stub->Check(&context, request, &response);
      lock.lock();
    }
  }

  void Shutdown() {
    if (shut_down) return;
    shut_down = true;
    if (watcher) watcher->Stop();
    {
      std::lock_guard<std::mutex> lock(warm_mu);
      warm_stop = true;
    }
    warm_cv.notify_all();
    if (warm_thread.joinable()) warm_thread.join();
    // Order: stop new work, let the running operation finish, end streams, stop gRPC.
    worker->Shutdown();
    calls->Shutdown();
    hub->Shutdown();
    health->Shutdown();
    // Our streams are already ended; the deadline only bounds idle client connections,
    // which would otherwise hold Shutdown for its whole length.
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    server->Wait();
    runtime->journal().RemoveListener(health_listener);
    runtime->journal().RemoveListener(log_listener);
    runtime->journal().RemoveListener(instances_listener);
    runtime->journal().RemoveListener(recovery_listener);
    instances.reset();  // destroys the remote instances left, while their bundles are loaded
    std::error_code ec;
    for (const fs::path& socket : unix_sockets) fs::remove(socket, ec);
  }
};

HostServer::HostServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HostServer::~HostServer() { Shutdown(); }

void HostServer::Shutdown() {
  if (impl_) impl_->Shutdown();
}

const std::vector<std::string>& HostServer::listen_addresses() const { return impl_->listen; }

absl::StatusOr<std::unique_ptr<HostServer>> HostServer::Start(HostServerOptions options) {
  auto impl = std::make_unique<Impl>();
  if (options.listen.empty()) options.listen.push_back(DefaultListenAddress());
  const bool tls = !options.tls_cert_pem.empty() && !options.tls_key_pem.empty();
  if (options.tls_cert_pem.empty() != options.tls_key_pem.empty()) {
    return MakeError(ErrorReason::kInvalidArgument, "--tls-cert and --tls-key go together");
  }
  if (!tls && !options.tls_client_ca_pem.empty()) {
    // Client certificates are checked only in a TLS handshake: without a server
    // certificate the host would serve plaintext and check nobody.
    return MakeError(ErrorReason::kInvalidArgument,
                     "--tls-client-ca needs --tls-cert and --tls-key (client certificates are "
                     "checked only over TLS)");
  }
  for (const std::string& address : options.listen) {
    if (absl::StartsWith(address, "unix:")) continue;
    if (address.find(':') == std::string::npos) {
      return MakeError(ErrorReason::kInvalidArgument,
                       absl::StrCat("--listen ", address, ": expected unix:PATH or HOST:PORT"));
    }
    if (!IsLoopbackHost(address) && !tls && options.auth_token.empty() &&
        !options.insecure_remote) {
      return MakeError(ErrorReason::kPermissionDenied,
                       absl::StrCat("--listen ", address,
                                    " is not a loopback address; loading code is the most "
                                    "dangerous thing this API does, so a remote listener needs "
                                    "TLS (--tls-cert/--tls-key) or a token (--auth-token-file), "
                                    "or an explicit --insecure-remote"));
    }
  }
  std::vector<fs::path> roots;
  for (const fs::path& root : options.bundle_roots) {
    std::error_code ec;
    if (!fs::is_directory(root, ec)) {
      return MakeError(ErrorReason::kInvalidArgument,
                       absl::StrCat("--bundles ", root.string(), " is not a directory"));
    }
    roots.push_back(fs::canonical(root, ec));
  }

  core::RuntimeOptions runtime_options;
  runtime_options.hot_reload_enabled = options.hot_reload;
  runtime_options.journal_capacity = options.journal_size;
  runtime_options.state_dir = options.state_dir;
  runtime_options.hash_artifacts = options.hash_artifacts;
  if (!options.supervisor_state.empty()) {
    auto recovery = CrashRecovery::Start(options.supervisor_state, options.supervisor_restart,
                                         options.supervisor_fd);
    if (!recovery.ok()) return recovery.status();
    impl->recovery = *std::move(recovery);
    runtime_options.state_dir = impl->recovery->state().artifacts();
    runtime_options.admit_artifact = [recovery = impl->recovery.get()](
                                         const core::Manifest& manifest, absl::string_view sha) {
      return recovery->Admit(manifest, sha);
    };
  }
  auto runtime = core::Runtime::Create(runtime_options);
  if (!runtime.ok()) return runtime.status();
  impl->runtime = *std::move(runtime);
  core::Runtime& rt = *impl->runtime;

  impl->log_listener = rt.journal().AddListener(LogPhase);
  impl->health = std::make_unique<HealthService>();
  HealthService* health = impl->health.get();
  impl->health_listener = rt.journal().AddListener([health, &rt](const core::PhaseEvent& e) {
    switch (e.phase) {
      case core::Phase::kPreparing:
        health->SetStatus(e.bundle_name, false);
        break;
      case core::Phase::kUnloading:
        health->Clear(e.bundle_name);
        break;
      case core::Phase::kFailed:
        // The previous version serves again; a version that crashed the host before this
        // process started leaves nothing to serve when no other version is loaded.
        if (rt.GetBundle(e.bundle_name).ok()) health->SetStatus(e.bundle_name, true);
        break;
      default:
        health->SetStatus(e.bundle_name, true);
        break;
    }
  });
  std::optional<std::vector<core::BundleSource>> restore;
  if (CrashRecovery* recovery = impl->recovery.get()) {
    impl->recovery_listener = rt.journal().AddListener(
        [recovery, &rt](const core::PhaseEvent& e) { recovery->OnPhase(rt, e); });
    // The crash this run follows comes first in its journal, then the versions restored.
    for (core::PhaseEvent& event : recovery->CrashEvents()) rt.journal().Append(std::move(event));
    restore = recovery->RestoreSources();
  }
  if (restore) {
    auto loaded = rt.LoadAll(*restore, /*skip_unloadable=*/true);
    if (!loaded.ok()) {
      std::fprintf(stderr, "polyplug-host: restoring the bundles that ran before failed: %s\n",
                   std::string(loaded.status().message()).c_str());
    }
  } else if (!roots.empty()) {
    // A cycle or a missing provider keeps only the bundles concerned from loading.
    auto loaded = rt.DiscoverAndLoad(roots, /*skip_unloadable=*/true);
    if (!loaded.ok()) {
      std::fprintf(stderr, "polyplug-host: loading the bundle roots failed: %s\n",
                   std::string(loaded.status().message()).c_str());
    }
  }

  if (options.watch) {
    if (roots.empty()) {
      return MakeError(ErrorReason::kInvalidArgument,
                       "--watch needs a bundle root to watch (--bundles DIR)");
    }
    BundleWatcherOptions watch;
    watch.roots = roots;
    watch.settle = options.watch_settle;
    watch.not_ready_grace = std::max(absl::Seconds(1), 10 * options.watch_settle);
    watch.log = [](const std::string& line) {
      std::fprintf(stderr, "polyplug-host: watch: %s\n", line.c_str());
    };
    auto watcher = BundleWatcher::Start(rt, std::move(watch));
    if (!watcher.ok()) return watcher.status();
    impl->watcher = *std::move(watcher);
  }

  impl->instances = std::make_unique<RemoteInstances>(
      rt, RemoteInstancesOptions{.drain_timeout = options.drain_timeout,
                                 .sessionless_idle_timeout = options.instance_idle_timeout});
  RemoteInstances* instances = impl->instances.get();
  // Runs on the mutating thread before the swap: instances of a reloading bundle go first.
  impl->instances_listener =
      rt.journal().AddListener([instances](const core::PhaseEvent& e) { instances->OnPhase(e); });
  impl->worker = std::make_unique<OperationWorker>();
  impl->calls = std::make_unique<OperationWorker>(options.call_threads);
  impl->hub = std::make_unique<PhaseHub>(
      rt, PhaseHubOptions{options.max_subscribers, 1024, impl->recovery.get()});
  PluginHostServiceOptions service_options;
  service_options.bundle_roots = roots;
  service_options.auth_token = options.auth_token;
  service_options.recovery = impl->recovery.get();
  impl->service = std::make_unique<PluginHostService>(
      rt, *impl->hub, *impl->worker, *impl->instances, *impl->calls, service_options);
  impl->reflection = std::make_unique<ReflectionService>(
      std::vector<std::string>{"polyplug.host.v1.PluginHost", "grpc.health.v1.Health",
                               "grpc.reflection.v1.ServerReflection",
                               "grpc.reflection.v1alpha.ServerReflection"},
      [token = options.auth_token](grpc::CallbackServerContext* context) {
        return Authorize(context, token);
      });

  grpc::ServerBuilder builder;
  // TCP listeners on port 0 get a free port; it is reported in listen_addresses().
  std::vector<std::pair<std::string, std::unique_ptr<int>>> selected_ports;
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (tls) {
    grpc::SslServerCredentialsOptions ssl(
        options.tls_client_ca_pem.empty()
            ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
            : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    ssl.pem_root_certs = options.tls_client_ca_pem;
    ssl.pem_key_cert_pairs.push_back({options.tls_key_pem, options.tls_cert_pem});
    credentials = grpc::SslServerCredentials(ssl);
  }
  for (const std::string& address : options.listen) {
    if (absl::StartsWith(address, "unix:")) {
      fs::path socket = address.substr(5);
      std::error_code ec;
      // A socket left by a host that died is replaced; a live host's socket and any
      // other file are not touched.
      if (fs::is_socket(socket, ec)) {
        if (SocketIsServed(socket)) {
          return MakeError(
              ErrorReason::kInvalidArgument,
              absl::StrCat("--listen ", address, ": another process is serving on this socket"));
        }
        fs::remove(socket, ec);
      }
      impl->unix_sockets.push_back(socket);
      // Unix sockets are local: plaintext with file permissions as the access control.
      builder.AddListeningPort(address, grpc::InsecureServerCredentials());
    } else {
      selected_ports.push_back({address, std::make_unique<int>(0)});
      builder.AddListeningPort(address, credentials, selected_ports.back().second.get());
    }
  }
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  // Clients of long-lived streams send keepalive pings (polyplug's client every 30 s) to
  // notice a dead host; C-core's default would answer pings more often than every 5 min
  // on a quiet connection with GOAWAY "too_many_pings".
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // The host pings its clients too, so a client that vanished without closing its
  // connection (a dead machine, a cut network) is noticed within about 80 s and its
  // sessions' instances are destroyed. A closed socket (a killed process) is noticed at once.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 60'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20'000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  builder.RegisterService(impl->service.get());
  builder.RegisterService(impl->health.get());
  builder.RegisterService(impl->reflection->v1());
  builder.RegisterService(impl->reflection->v1alpha());
  const mode_t old_mask = umask(0177);  // sockets are created 0600
  impl->server = builder.BuildAndStart();
  umask(old_mask);
  if (impl->server == nullptr) {
    return MakeError(ErrorReason::kInvalidArgument,
                     absl::StrCat("cannot listen on ", absl::StrJoin(options.listen, ", "),
                                  " (address in use, or a directory that does not exist?)"));
  }
  for (const fs::path& socket : impl->unix_sockets) {
    std::error_code ec;
    fs::permissions(socket, fs::perms::owner_read | fs::perms::owner_write, ec);
  }
  health->SetStatus("", true);
  impl->listen = options.listen;
  for (std::string& address : impl->listen) {
    for (const auto& [requested, port] : selected_ports) {
      if (address == requested && absl::EndsWith(address, ":0")) {
        address = absl::StrCat(address.substr(0, address.size() - 1), *port);
      }
    }
  }
  impl->service->SetListenAddresses(impl->listen);
  impl->warm_thread = std::thread([raw = impl.get()] { raw->KeepWarm(); });
  if (impl->recovery) impl->recovery->MarkReady(rt, impl->listen);
  return std::unique_ptr<HostServer>(new HostServer(std::move(impl)));
}

}  // namespace polyplug::host
