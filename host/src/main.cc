// polyplug-host: serves the bundles of its bundle roots over gRPC until SIGINT/SIGTERM.
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <grpc/grpc.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "polyplug/host/host_server.h"
#include "polyplug/host/supervisor.h"

ABSL_FLAG(std::vector<std::string>, listen, {},
          "Address to serve on, unix:PATH or HOST:PORT; repeatable or comma-separated. Default: "
          "unix:$XDG_RUNTIME_DIR/polyplug-host.sock, else unix:/tmp/polyplug-host-<uid>.sock "
          "(created 0600).");
ABSL_FLAG(std::vector<std::string>, bundles, {},
          "Bundle root directory; repeatable. Every bundle one level below is loaded at start "
          "(providers first); load and reload paths must resolve inside a root.");
ABSL_FLAG(std::string, state_dir, "",
          "Directory for private artifact copies (default: a temp dir).");
ABSL_FLAG(bool, no_hot_reload, false, "Refuse Reload (FAILED_PRECONDITION, HOT_RELOAD_DISABLED).");
ABSL_FLAG(bool, hash_artifacts, false,
          "Report the SHA-256 of every artifact loaded (ListBundles, phase events), to compare "
          "with sha256sum of a build. Costs about 0.6 ms per MB of artifact on each load and "
          "reload. Always on under --supervise.");
ABSL_FLAG(int64_t, journal_size, 4096, "Phase events kept for subscribers to resume from.");
ABSL_FLAG(std::string, auth_token_file, "",
          "File holding a bearer token; then every RPC but health needs "
          "'authorization: Bearer <token>'.");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain for TCP listeners (with --tls-key).");
ABSL_FLAG(std::string, tls_key, "", "PEM private key for --tls-cert.");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle: require and verify client certificates (mTLS).");
ABSL_FLAG(bool, insecure_remote, false,
          "Allow a non-loopback TCP listener without TLS or a token. Anyone who reaches it can "
          "load code into this process.");
ABSL_FLAG(int64_t, max_subscribers, 256, "Open SubscribeReloadPhases streams allowed at once.");
ABSL_FLAG(int64_t, max_message_bytes, 4 << 20, "Largest request or response message.");
ABSL_FLAG(int64_t, call_threads, 4,
          "Threads that run bundles' code for remote calls (CreateInstance, Invoke); one "
          "Invoke at a time runs on the gRPC thread that received it instead.");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(10),
          "How long a reload or unload waits for remote calls in flight on the bundle before "
          "it destroys the bundle's instances anyway.");
ABSL_FLAG(std::string, signature_policy, "off",
          "Which bundles load, on every load and reload (docs/SIGNING.md): off; warn (log an "
          "unsigned or unverifiable bundle, load it anyway); required (refuse it: "
          "UNSIGNED_BUNDLE, SIGNATURE_INVALID, UNTRUSTED_SIGNING_KEY).");
ABSL_FLAG(std::vector<std::string>, trusted_key, {},
          "Verifying key files (32 raw bytes or 64 hex digits, as polyplugctl keygen writes "
          "verifying.key), comma-separated or repeated: a bundle.sig must be made by one of "
          "them. None: any valid signature is accepted.");
ABSL_FLAG(std::string, deploy_root, "",
          "Take PushBundle uploads (polyplugctl push) into this directory, which the host owns "
          "(created if missing) and serves as a bundle root: <dir>/<bundle name>.");
ABSL_FLAG(int64_t, max_bundle_bytes, int64_t{256} << 20,
          "The largest bundle PushBundle takes (all its files together).");
ABSL_FLAG(bool, watch, false,
          "Reload a bundle when its files change (a rebuild, a copy, a rename over the "
          "artifact), once the write has settled; load new bundle directories, unload removed "
          "ones. An artifact that stays invalid gives a FAILED event; the old version stays.");
ABSL_FLAG(absl::Duration, watch_settle, absl::Milliseconds(200),
          "--watch: how long a bundle's files must stay unchanged before it is reloaded.");
ABSL_FLAG(absl::Duration, instance_idle_timeout, absl::Minutes(10),
          "Remote instances made outside a session (e.g. with grpcurl) are destroyed after "
          "this long without a call. Instances of a session die with it.");
ABSL_FLAG(bool, supervise, false,
          "Run the server as a child process and restart it when it crashes (a bundle's "
          "SIGSEGV or abort kills the process it runs in). The bundle version the crash is "
          "blamed on is quarantined (FAILED, reason CRASHED, until its artifact changes); the "
          "restarted server loads what ran before at its last healthy versions, on the same "
          "listen addresses. --state-dir then keeps the supervisor's state.");
ABSL_FLAG(int32_t, crash_loop_limit, 5,
          "--supervise: give up after this many crashes in a row that no bundle is blamed for.");
ABSL_FLAG(std::string, fleet, "",
          "Join this fleet (docs/FLEET.md): register in etcd (--etcd), follow the fleet's "
          "desired state, fetch missing bundles from peers into --deploy-root (required) and "
          "acknowledge each rollout. An unreachable etcd is logged and retried; the host "
          "serves its local bundles meanwhile.");
ABSL_FLAG(std::vector<std::string>, etcd, {},
          "--fleet: the etcd cluster's client endpoints, HOST:PORT, comma-separated.");
ABSL_FLAG(std::string, fleet_host_id, "",
          "--fleet: this host's name in the fleet (default: <hostname>-<advertised address>).");
ABSL_FLAG(std::string, fleet_advertise, "",
          "--fleet: the address peers and polyplugctl reach this host at (default: the first "
          "TCP --listen address, else the first).");
ABSL_FLAG(std::string, fleet_peer_ca, "",
          "--fleet: PEM CA certificates peers' TLS certificates must chain to; peers at TCP "
          "addresses are then fetched from over TLS, with --tls-cert/--tls-key as this host's "
          "client certificate (default: --tls-client-ca; neither: plaintext).");
ABSL_FLAG(absl::Duration, fleet_lease_ttl, absl::Seconds(10),
          "--fleet: how long the host stays registered without reaching etcd.");
// Set by --supervise for the server it runs; not for people.
ABSL_FLAG(std::string, supervisor_state, "", "Internal (--supervise): the supervisor's state.");
ABSL_FLAG(int32_t, supervisor_fd, -1, "Internal (--supervise): the readiness pipe.");
ABSL_FLAG(int32_t, supervisor_restart, 0, "Internal (--supervise): restarts so far.");

namespace {

bool ReadFile(const std::string& path, const char* flag, std::string* out) {
  if (path.empty()) return true;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "polyplug-host: --%s %s: cannot read the file\n", flag, path.c_str());
    return false;
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  *out = buffer.str();
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  // Debian builds Abseil without NDEBUG, which leaves absl::Mutex's deadlock detection on:
  // a lock-order graph update on every lock gRPC takes (about 6% of a busy host's CPU).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  absl::SetProgramUsageMessage(
      "serves plugin bundles over gRPC (polyplug.host.v1.PluginHost, grpc.health.v1.Health, "
      "server reflection v1 and v1alpha).\nusage: polyplug-host [--listen ADDR]... "
      "[--bundles DIR]... [flags]\n(flags may be spelled with dashes or underscores)");
  // The documented spelling is --state-dir; absl flags are declared with underscores.
  std::vector<std::string> args(argv, argv + argc);
  for (std::string& arg : args) {
    if (arg == "--") break;
    if (arg.size() > 2 && arg.compare(0, 2, "--") == 0) {
      const size_t end = std::min(arg.find('='), arg.size());
      std::replace(arg.begin() + 2, arg.begin() + static_cast<std::ptrdiff_t>(end), '-', '_');
    }
  }
  // absl keeps only the last occurrence of a list flag; --listen and --bundles accumulate.
  std::vector<std::string> listen, bundles;
  std::vector<std::string> rest;
  for (size_t i = 0; i < args.size(); ++i) {
    std::vector<std::string>* into = nullptr;
    std::string value;
    for (auto [name, list] : {std::pair{"--listen", &listen}, std::pair{"--bundles", &bundles}}) {
      const std::string flag = name;
      if (args[i] == flag && i + 1 < args.size()) {
        into = list;
        value = args[++i];
      } else if (args[i].rfind(flag + "=", 0) == 0) {
        into = list;
        value = args[i].substr(flag.size() + 1);
      }
      if (into != nullptr) break;
    }
    if (into == nullptr) {
      rest.push_back(args[i]);
      continue;
    }
    for (absl::string_view part : absl::StrSplit(value, ',', absl::SkipEmpty())) {
      into->emplace_back(part);
    }
  }
  std::vector<char*> arg_ptrs;
  for (std::string& arg : rest) arg_ptrs.push_back(arg.data());
  absl::ParseCommandLine(static_cast<int>(arg_ptrs.size()), arg_ptrs.data());

  if (absl::GetFlag(FLAGS_supervise)) {
    polyplug::host::SupervisorOptions supervisor;
    for (const std::string& arg : rest) {
      if (arg == "--supervise" || arg.rfind("--supervise=", 0) == 0) continue;
      supervisor.server_args.push_back(arg);
    }
    for (const std::string& root : bundles) supervisor.server_args.push_back("--bundles=" + root);
    supervisor.listen = listen;
    supervisor.state_dir = absl::GetFlag(FLAGS_state_dir);
    supervisor.crash_loop_limit = std::max(1, absl::GetFlag(FLAGS_crash_loop_limit));
    return polyplug::host::RunSupervisor(supervisor);
  }

  // Block the stop signals before any thread starts, then wait for them on this thread.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  // A push past the file size limit is an error to report (EFBIG), not a reason to die.
  signal(SIGXFSZ, SIG_IGN);

  polyplug::host::HostServerOptions options;
  options.listen = listen;
  for (const std::string& root : bundles) options.bundle_roots.push_back(root);
#ifdef POLYPLUG_DEFAULT_BUNDLE_ROOT
  if (options.bundle_roots.empty() && absl::GetFlag(FLAGS_deploy_root).empty()) {
    std::error_code ec;
    if (std::filesystem::is_directory(POLYPLUG_DEFAULT_BUNDLE_ROOT, ec)) {
      options.bundle_roots.push_back(POLYPLUG_DEFAULT_BUNDLE_ROOT);
      std::fprintf(stderr, "polyplug-host: no --bundles given; serving the example bundles in %s\n",
                   POLYPLUG_DEFAULT_BUNDLE_ROOT);
    }
  }
#endif
  options.state_dir = absl::GetFlag(FLAGS_state_dir);
  options.hot_reload = !absl::GetFlag(FLAGS_no_hot_reload);
  options.hash_artifacts = absl::GetFlag(FLAGS_hash_artifacts);
  options.journal_size =
      static_cast<size_t>(std::max<int64_t>(1, absl::GetFlag(FLAGS_journal_size)));
  options.insecure_remote = absl::GetFlag(FLAGS_insecure_remote);
  options.max_subscribers =
      static_cast<size_t>(std::max<int64_t>(1, absl::GetFlag(FLAGS_max_subscribers)));
  options.max_message_bytes =
      static_cast<int>(std::clamp<int64_t>(absl::GetFlag(FLAGS_max_message_bytes), 1024, 1 << 30));
  options.call_threads =
      static_cast<size_t>(std::clamp<int64_t>(absl::GetFlag(FLAGS_call_threads), 1, 256));
  options.drain_timeout = std::max(absl::ZeroDuration(), absl::GetFlag(FLAGS_drain_timeout));
  options.deploy_root = absl::GetFlag(FLAGS_deploy_root);
  options.max_bundle_bytes =
      static_cast<uint64_t>(std::max<int64_t>(0, absl::GetFlag(FLAGS_max_bundle_bytes)));
  options.watch = absl::GetFlag(FLAGS_watch);
  options.watch_settle = std::max(absl::Milliseconds(10), absl::GetFlag(FLAGS_watch_settle));
  options.instance_idle_timeout =
      std::max(absl::Milliseconds(1), absl::GetFlag(FLAGS_instance_idle_timeout));
  options.fleet = absl::GetFlag(FLAGS_fleet);
  options.etcd_endpoints = absl::GetFlag(FLAGS_etcd);
  options.fleet_host_id = absl::GetFlag(FLAGS_fleet_host_id);
  options.fleet_advertise = absl::GetFlag(FLAGS_fleet_advertise);
  options.fleet_lease_ttl = absl::GetFlag(FLAGS_fleet_lease_ttl);
  options.supervisor_state = absl::GetFlag(FLAGS_supervisor_state);
  options.supervisor_fd = absl::GetFlag(FLAGS_supervisor_fd);
  options.supervisor_restart =
      static_cast<uint32_t>(std::max(0, absl::GetFlag(FLAGS_supervisor_restart)));
  if (!ReadFile(absl::GetFlag(FLAGS_auth_token_file), "auth-token-file", &options.auth_token) ||
      !ReadFile(absl::GetFlag(FLAGS_tls_cert), "tls-cert", &options.tls_cert_pem) ||
      !ReadFile(absl::GetFlag(FLAGS_tls_key), "tls-key", &options.tls_key_pem) ||
      !ReadFile(absl::GetFlag(FLAGS_tls_client_ca), "tls-client-ca", &options.tls_client_ca_pem) ||
      !ReadFile(absl::GetFlag(FLAGS_fleet_peer_ca), "fleet-peer-ca", &options.fleet_peer_ca_pem)) {
    return 2;
  }
  options.auth_token = std::string(absl::StripAsciiWhitespace(options.auth_token));
  if (!absl::GetFlag(FLAGS_auth_token_file).empty() && options.auth_token.empty()) {
    std::fprintf(stderr, "polyplug-host: --auth-token-file %s is empty\n",
                 absl::GetFlag(FLAGS_auth_token_file).c_str());
    return 2;
  }

  auto policy = polyplug::core::ParseSignaturePolicy(absl::GetFlag(FLAGS_signature_policy));
  if (!policy.ok()) {
    std::fprintf(stderr, "polyplug-host: --signature-policy: %s\n",
                 std::string(policy.status().message()).c_str());
    return 2;
  }
  options.signature_policy = *policy;
  for (const std::string& file : absl::GetFlag(FLAGS_trusted_key)) {
    auto key = polyplug::core::ReadPublicKeyFile(file);
    if (!key.ok()) {
      std::fprintf(stderr, "polyplug-host: --trusted-key %s: %s\n", file.c_str(),
                   std::string(key.status().message()).c_str());
      return 2;
    }
    options.trusted_keys.push_back(*key);
  }
  if (!options.trusted_keys.empty() &&
      options.signature_policy == polyplug::core::SignaturePolicy::kOff) {
    std::fprintf(stderr,
                 "polyplug-host: --trusted-key needs --signature-policy warn or required (with "
                 "off, no signature is checked)\n");
    return 2;
  }

  // Keeps gRPC initialised until the process exits: gRPC 1.51's last shutdown waits for its
  // background threads, one of which sleeps up to 10 s after a large write met a full
  // socket buffer (a FetchBundle or a big response), so the host lingered after SIGTERM.
  // Not before --supervise's branch: the supervisor forks, and gRPC's threads must not.
  grpc_init();
  auto server = polyplug::host::HostServer::Start(options);
  if (!server.ok()) {
    std::fprintf(stderr, "polyplug-host: %s\n", std::string(server.status().message()).c_str());
    return 2;
  }
  for (const std::string& address : (*server)->listen_addresses()) {
    std::fprintf(stderr, "polyplug-host: serving on %s\n", address.c_str());
  }
  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  std::fprintf(stderr, "polyplug-host: %s received, shutting down\n",
               signal_number == SIGINT ? "SIGINT" : "SIGTERM");
  (*server)->Shutdown();
  return 0;
}
