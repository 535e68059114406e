#include "polyplug/host/host_server.h"

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "host/src/bundle_watcher.h"
#include "host/src/crash_recovery.h"
#include "host/src/deploy_root.h"
#include "host/src/fleet_agent.h"
#include "host/src/grpc_workarounds.h"
#include "host/src/health_service.h"
#include "host/src/listeners.h"
#include "host/src/not_loaded_event.h"
#include "host/src/operation_worker.h"
#include "host/src/phase_pipeline.h"
#include "host/src/phase_stream.h"
#include "host/src/plugin_host_service.h"
#include "host/src/reflection_service.h"
#include "host/src/remote_instances.h"
#include "polyplug/core/error.h"
#include "polyplug/core/runtime.h"

namespace polyplug::host {
namespace {

namespace fs = std::filesystem;
using core::ErrorReason;
using core::MakeError;

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

// A bundle's health service follows its phases: NOT_SERVING from PREPARING to the terminal
// phase, unknown once unloaded.
void UpdateHealth(HealthService& health, const core::Runtime& runtime, const core::PhaseEvent& e) {
  switch (e.phase) {
    case core::Phase::kPreparing:
      health.SetStatus(e.bundle_name, false);
      break;
    case core::Phase::kUnloading:
      health.Clear(e.bundle_name);
      break;
    case core::Phase::kFailed:
      // The previous version serves again; a version that crashed the host before this
      // process started leaves nothing to serve when no other version is loaded.
      if (runtime.GetBundle(e.bundle_name).ok()) health.SetStatus(e.bundle_name, true);
      break;
    default:
      health.SetStatus(e.bundle_name, true);
      break;
  }
}

// The bundle roots, canonical; every option checked before anything starts or loads.
absl::StatusOr<std::vector<fs::path>> CheckOptions(const HostServerOptions& options) {
  std::vector<fs::path> roots;
  for (const fs::path& root : options.bundle_roots) {
    std::error_code ec;
    if (!fs::is_directory(root, ec)) {
      return MakeError(ErrorReason::kInvalidArgument,
                       absl::StrCat("--bundles ", root.string(), " is not a directory"));
    }
    roots.push_back(fs::canonical(root, ec));
  }
  if (!options.deploy_root.empty()) {
    std::error_code ec;
    if (fs::exists(options.deploy_root, ec) && !fs::is_directory(options.deploy_root, ec)) {
      return MakeError(
          ErrorReason::kInvalidArgument,
          absl::StrCat("--deploy-root ", options.deploy_root.string(), " is not a directory"));
    }
    if (options.max_bundle_bytes == 0) {
      return MakeError(ErrorReason::kInvalidArgument, "--max-bundle-bytes must be at least 1");
    }
  }
  if (!options.fleet.empty()) {
    if (options.deploy_root.empty()) {
      return MakeError(
          ErrorReason::kInvalidArgument,
          "--fleet needs --deploy-root DIR: bundles fetched from the fleet land there");
    }
    if (options.etcd_endpoints.empty()) {
      return MakeError(ErrorReason::kInvalidArgument,
                       "--fleet needs --etcd HOST:PORT[,HOST:PORT...] (the fleet's etcd cluster)");
    }
  } else if (!options.etcd_endpoints.empty()) {
    return MakeError(ErrorReason::kInvalidArgument, "--etcd is for --fleet NAME");
  }
  if (options.watch && roots.empty() && options.deploy_root.empty()) {
    return MakeError(ErrorReason::kInvalidArgument,
                     "--watch needs a bundle root to watch (--bundles DIR)");
  }
  if (options.call_threads == 0) {
    return MakeError(ErrorReason::kInvalidArgument, "call_threads must be at least 1");
  }
  return roots;
}

// An application's runtime has its settings already: the options must not pretend to set
// them (the first one set is named).
absl::Status CheckNoRuntimeSettings(const HostServerOptions& options) {
  const HostServerOptions defaults;
  const char* set = nullptr;
  if (options.state_dir != defaults.state_dir) set = "state_dir";
  if (options.hot_reload != defaults.hot_reload) set = "hot_reload";
  if (options.hash_artifacts != defaults.hash_artifacts) set = "hash_artifacts";
  if (options.journal_size != defaults.journal_size) set = "journal_size";
  if (options.signature_policy != defaults.signature_policy) set = "signature_policy";
  if (!options.trusted_keys.empty()) set = "trusted_keys";
  if (set != nullptr) {
    return MakeError(ErrorReason::kInvalidArgument,
                     absl::StrCat("HostServerOptions::", set,
                                  " configures a runtime the host creates; this host serves the "
                                  "application's runtime, so set it in its RuntimeOptions"));
  }
  if (!options.supervisor_state.empty() || options.supervisor_fd >= 0) {
    return MakeError(ErrorReason::kInvalidArgument,
                     "--supervise restarts the process a bundle crashed, so it needs a host that "
                     "owns its runtime (HostServer::Start without a runtime)");
  }
  return absl::OkStatus();
}

}  // namespace

class HostServer::Impl {
 public:
  // Declared in the order they are made; destroyed in reverse, which Shutdown() relies on.
  std::unique_ptr<Listeners> listeners;
  std::unique_ptr<CrashRecovery> recovery;       // under --supervise; outlives the runtime
  std::unique_ptr<DeployRoot> deploy_root;       // with --deploy-root
  std::unique_ptr<core::Runtime> owned_runtime;  // null when serving the application's
  core::Runtime* runtime = nullptr;
  // After the runtime: its instances go before the runtime does.
  std::unique_ptr<RemoteInstances> instances;
  std::unique_ptr<OperationWorker> worker;
  // kApplication: sends the replies of the operations the application ran.
  std::unique_ptr<OperationWorker> replies;
  std::unique_ptr<OperationWorker> calls;
  std::unique_ptr<PhaseHub> hub;
  std::unique_ptr<HealthService> health;
  std::unique_ptr<TokenAuthorizer> authorizer;
  std::unique_ptr<PluginHostService> service;
  std::unique_ptr<ReflectionService> reflection;
  std::unique_ptr<PhasePipeline> pipeline;
  std::unique_ptr<BundleWatcher> watcher;  // stopped first: it mutates the runtime
  std::unique_ptr<FleetAgent> fleet;       // stopped next: it mutates the runtime too
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<ExecutorKeepWarm> keep_warm;
  std::vector<std::string> addresses;  // as published; listen_addresses() after Shutdown too
  std::mutex shutdown_mu;
  bool shut_down = false;  // guarded by shutdown_mu

  // Also what a Start() that failed half-way gets: every part may be missing.
  ~Impl() { Shutdown(); }

  void Shutdown() {
    std::lock_guard<std::mutex> lock(shutdown_mu);  // a second caller waits for the first
    if (shut_down) return;
    shut_down = true;
    if (watcher) watcher->Stop();
    if (fleet) fleet->Stop();
    keep_warm.reset();
    // Order: stop new work, let the running operation finish (and fail those still waiting
    // for the application), end streams, stop gRPC.
    if (worker) worker->Shutdown();
    if (replies) replies->Shutdown();
    if (calls) calls->Shutdown();
    if (hub) hub->Shutdown();
    if (health) health->Shutdown();
    if (server) {
      // Our streams are already ended; the deadline only bounds idle client connections,
      // which would otherwise hold Shutdown for its whole length.
      server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
      server->Wait();
    }
    pipeline.reset();   // no operation runs any more
    instances.reset();  // destroys the remote instances left, while their bundles are loaded
    listeners.reset();  // removes the unix sockets
  }
};

// The runtime of a host that owns one, with crash recovery's admission under --supervise.
absl::Status HostServer::CreateRuntime(const HostServerOptions& options, Impl& impl) {
  core::RuntimeOptions runtime_options;
  runtime_options.hot_reload_enabled = options.hot_reload;
  runtime_options.journal_capacity = options.journal_size;
  runtime_options.state_dir = options.state_dir;
  runtime_options.hash_artifacts = options.hash_artifacts;
  runtime_options.signature_policy = options.signature_policy;
  runtime_options.trusted_keys = options.trusted_keys;
  if (!options.supervisor_state.empty()) {
    auto recovery = CrashRecovery::Start(options.supervisor_state, options.supervisor_restart,
                                         options.supervisor_fd);
    if (!recovery.ok()) return recovery.status();
    impl.recovery = *std::move(recovery);
    runtime_options.state_dir = impl.recovery->state().artifacts();
    runtime_options.admit_artifact = [recovery = impl.recovery.get()](
                                         const core::Manifest& manifest, absl::string_view sha) {
      return recovery->Admit(manifest, sha);
    };
  }
  auto runtime = core::Runtime::Create(runtime_options);
  if (!runtime.ok()) return runtime.status();
  impl.owned_runtime = *std::move(runtime);
  impl.runtime = impl.owned_runtime.get();
  return absl::OkStatus();
}

HostServer::HostServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HostServer::~HostServer() { Shutdown(); }

void HostServer::Shutdown() {
  if (impl_) impl_->Shutdown();
}

const std::vector<std::string>& HostServer::listen_addresses() const { return impl_->addresses; }

core::Runtime& HostServer::runtime() const { return *impl_->runtime; }

size_t HostServer::RunPendingOperations() { return impl_->worker->RunQueued(); }

size_t HostServer::pending_operations() const { return impl_->worker->queued(); }

bool HostServer::WaitForPendingOperations(absl::Duration timeout) const {
  return impl_->worker->WaitQueued(timeout);
}

absl::StatusOr<std::unique_ptr<HostServer>> HostServer::Start(HostServerOptions options) {
  return Serve(nullptr, std::move(options));
}

absl::StatusOr<std::unique_ptr<HostServer>> HostServer::Start(core::Runtime& runtime,
                                                              HostServerOptions options) {
  if (absl::Status s = CheckNoRuntimeSettings(options); !s.ok()) return s;
  return Serve(&runtime, std::move(options));
}

absl::StatusOr<std::unique_ptr<HostServer>> HostServer::Serve(core::Runtime* application_runtime,
                                                              HostServerOptions options) {
  // 1. Every option, before anything is created or loaded.
  absl::StatusOr<std::vector<fs::path>> roots = CheckOptions(options);
  if (!roots.ok()) return roots.status();
  // A start that fails after loading the roots into the application's runtime unloads them
  // again (after the server parts are gone), so that it leaves the application as it was.
  struct UndoLoads {
    core::Runtime* runtime = nullptr;
    std::vector<std::string> names;
    ~UndoLoads() {
      if (runtime == nullptr) return;
      for (auto it = names.rbegin(); it != names.rend(); ++it) {
        (void)runtime->UnloadBundle(*it, core::UnloadMode::kCascade);
      }
    }
  } undo_loads;
  auto impl = std::make_unique<Impl>();
  absl::StatusOr<std::unique_ptr<Listeners>> listeners = Listeners::Check(ListenerOptions{
      options.listen, options.tls_cert_pem, options.tls_key_pem, options.tls_client_ca_pem,
      !options.auth_token.empty(), options.insecure_remote});
  if (!listeners.ok()) return listeners.status();
  impl->listeners = *std::move(listeners);
  if (!options.deploy_root.empty()) {
    auto deploy_root = DeployRoot::Open(options.deploy_root,
                                        UploadLimits{.max_bundle_bytes = options.max_bundle_bytes});
    if (!deploy_root.ok()) return deploy_root.status();
    impl->deploy_root = *std::move(deploy_root);
    if (std::find(roots->begin(), roots->end(), impl->deploy_root->dir()) == roots->end()) {
      roots->push_back(impl->deploy_root->dir());
    }
  }
  if (application_runtime != nullptr) {
    impl->runtime = application_runtime;
  } else if (absl::Status s = CreateRuntime(options, *impl); !s.ok()) {
    return s;
  }
  core::Runtime& rt = *impl->runtime;

  // 3. The services, and the one pipeline through which they see every phase.
  impl->instances = std::make_unique<RemoteInstances>(
      rt, RemoteInstancesOptions{.drain_timeout = options.drain_timeout,
                                 .sessionless_idle_timeout = options.instance_idle_timeout});
  const bool pumped = options.operations == OperationThread::kApplication;
  impl->worker = std::make_unique<OperationWorker>(pumped ? 0 : 1);
  if (pumped) impl->replies = std::make_unique<OperationWorker>(1);
  impl->calls = std::make_unique<OperationWorker>(options.call_threads);
  impl->hub = std::make_unique<PhaseHub>(
      rt, PhaseHubOptions{options.max_subscribers, 1024, impl->recovery.get()});
  impl->health = std::make_unique<HealthService>();
  // One authorizer for PluginHost and reflection; health answers everyone.
  impl->authorizer = std::make_unique<TokenAuthorizer>(options.auth_token);
  PluginHostServiceOptions service_options;
  service_options.bundle_roots = *roots;
  service_options.recovery = impl->recovery.get();
  service_options.operations_wait_for_application = pumped;
  service_options.reply_worker = impl->replies.get();
  service_options.deploy_root = impl->deploy_root.get();
  service_options.max_message_bytes = options.max_message_bytes;
  impl->service =
      std::make_unique<PluginHostService>(rt, *impl->hub, *impl->worker, *impl->instances,
                                          *impl->calls, *impl->authorizer, service_options);
  impl->reflection = std::make_unique<ReflectionService>(
      std::vector<std::string>{"polyplug.host.v1.PluginHost", "grpc.health.v1.Health",
                               "grpc.reflection.v1.ServerReflection",
                               "grpc.reflection.v1alpha.ServerReflection"},
      [authorizer = impl->authorizer.get()](grpc::CallbackServerContext* context) {
        return authorizer->Check(context);
      });
  PhasePipeline::Stages stages;
  stages.log = LogPhase;
  stages.health = [health = impl->health.get(), &rt](const core::PhaseEvent& e) {
    UpdateHealth(*health, rt, e);
  };
  if (CrashRecovery* recovery = impl->recovery.get()) {
    stages.recovery = [recovery, &rt](const core::PhaseEvent& e) { recovery->OnPhase(rt, e); };
  }
  stages.instances = [instances = impl->instances.get()](const core::PhaseEvent& e) {
    instances->OnPhase(e);
  };
  stages.streams = [hub = impl->hub.get()](const core::PhaseEvent& e) { hub->Deliver(e); };
  if (!options.fleet.empty()) {
    // Made now, so that the pipeline can tell it about every phase; it joins the fleet
    // once the host listens (step 5).
    FleetAgentOptions fleet;
    fleet.fleet = options.fleet;
    fleet.etcd_endpoints = options.etcd_endpoints;
    fleet.host_id = options.fleet_host_id;
    fleet.address = options.fleet_advertise;
    fleet.lease_ttl = options.fleet_lease_ttl;
    fleet.peer_token = options.auth_token;
    // A fleet's hosts usually share one CA: the one that signs the clients this host
    // accepts (--tls-client-ca) signs its peers too, unless --fleet-peer-ca says otherwise.
    fleet.peer_root_certs_pem =
        options.fleet_peer_ca_pem.empty() ? options.tls_client_ca_pem : options.fleet_peer_ca_pem;
    fleet.peer_cert_pem = options.tls_cert_pem;
    fleet.peer_key_pem = options.tls_key_pem;
    fleet.host_version = POLYPLUG_HOST_VERSION;
    fleet.log = [](const std::string& line) {
      std::fprintf(stderr, "polyplug-host: fleet: %s\n", line.c_str());
    };
    auto agent = FleetAgent::Create(rt, *impl->worker, *impl->deploy_root, std::move(fleet));
    if (!agent.ok()) return agent.status();
    impl->fleet = *std::move(agent);
    stages.fleet = [agent = impl->fleet.get()](const core::PhaseEvent& e) { agent->OnPhase(e); };
  }
  impl->pipeline = std::make_unique<PhasePipeline>(rt.journal(), std::move(stages));

  // 4. The bundles: those that ran before a crash (--supervise), else the roots.
  if (CrashRecovery* recovery = impl->recovery.get()) {
    // The crash this run follows comes first in its journal, then the versions restored.
    for (core::PhaseEvent& event : recovery->CrashEvents()) rt.journal().Append(std::move(event));
  }
  if (std::optional<std::vector<core::BundleSource>> restore =
          impl->recovery ? impl->recovery->RestoreSources() : std::nullopt) {
    std::vector<core::NotLoaded> not_loaded;
    auto loaded = rt.LoadAll(*restore, /*skip_unloadable=*/true, &not_loaded);
    if (!loaded.ok()) {
      std::fprintf(stderr, "polyplug-host: restoring the bundles that ran before failed: %s\n",
                   std::string(loaded.status().message()).c_str());
    }
    // A bundle left out (its provider quarantined, say) is a failure its subscribers must
    // see, not only a log line: an event, and part of every snapshot until it loads.
    std::vector<core::PhaseEvent> left_out;
    for (const core::NotLoaded& bundle : not_loaded) {
      left_out.push_back(rt.journal().Append(NotLoadedEvent(
          bundle.name, bundle.status,
          absl::StrCat("not restored after the host restarted: ", bundle.status.message()))));
    }
    impl->recovery->NoteNotRestored(std::move(left_out));
  } else if (!roots->empty()) {
    // A cycle or a missing provider keeps only the bundles concerned from loading.
    auto loaded = rt.DiscoverAndLoad(*roots, /*skip_unloadable=*/true);
    if (!loaded.ok()) {
      std::fprintf(stderr, "polyplug-host: loading the bundle roots failed: %s\n",
                   std::string(loaded.status().message()).c_str());
    } else if (application_runtime != nullptr) {
      undo_loads.runtime = application_runtime;
      for (const core::BundleInfo& info : *loaded) undo_loads.names.push_back(info.name);
    }
  }
  if (options.watch) {
    BundleWatcherOptions watch;
    watch.roots = *roots;
    watch.settle = options.watch_settle;
    watch.not_ready_grace = std::max(absl::Seconds(1), 10 * options.watch_settle);
    watch.log = [](const std::string& line) {
      std::fprintf(stderr, "polyplug-host: watch: %s\n", line.c_str());
    };
    auto watcher = BundleWatcher::Start(rt, *impl->worker, std::move(watch));
    if (!watcher.ok()) return watcher.status();
    impl->watcher = *std::move(watcher);
  }

  // 5. Listen.
  grpc::ServerBuilder builder;
  if (absl::Status s = impl->listeners->AddTo(builder); !s.ok()) return s;
  ConfigureServerChannel(builder, options.max_message_bytes);
  builder.RegisterService(impl->service.get());
  builder.RegisterService(impl->health.get());
  builder.RegisterService(impl->reflection->v1());
  builder.RegisterService(impl->reflection->v1alpha());
  impl->server = builder.BuildAndStart();
  if (impl->server == nullptr) {
    return MakeError(ErrorReason::kInvalidArgument,
                     absl::StrCat("cannot listen on ", absl::StrJoin(options.listen, ", "),
                                  " (address in use, or a directory that does not exist?)"));
  }
  if (absl::Status s = impl->listeners->Publish(); !s.ok()) return s;
  impl->addresses = impl->listeners->addresses();
  impl->health->SetStatus("", true);
  impl->service->SetListenAddresses(impl->listeners->addresses());
  impl->keep_warm = std::make_unique<ExecutorKeepWarm>(*impl->server);
  if (impl->recovery) impl->recovery->MarkReady(rt, impl->listeners->addresses());
  if (impl->fleet) impl->fleet->Join(impl->listeners->addresses());
  undo_loads.runtime = nullptr;  // started: the bundles stay
  return std::unique_ptr<HostServer>(new HostServer(std::move(impl)));
}

}  // namespace polyplug::host
