// libFuzzer target: arbitrary bytes as a polyplug.host.v1.PluginHost request, handled by the
// real service. The first byte picks the RPC, the rest is the serialized request message.
//
// One HostServer per process (started on the first input) serves a scratch bundle root
// holding copies of the test bundles counter_v1 ("counter") and stateless, on a unix socket
// in a private temp dir under $TMPDIR; each input is one call through a stub on that socket
// with a short deadline. Crashes and sanitizer reports (in the host: the server runs in
// this process) are findings; error statuses are not.
#include <stdlib.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "polyplug/host/host_server.h"
#include "polyplug/host/v1/host.grpc.pb.h"

namespace {

namespace fs = std::filesystem;
namespace v1 = ::polyplug::host::v1;

enum Rpc : uint8_t {
  kReload,
  kLoadBundle,
  kUnloadBundle,
  kFindContract,
  kListBundles,
  kListContracts,
  kGetHostInfo,
  kSubscribeReloadPhases,
  kOpenSession,
  kCreateInstance,
  kInvoke,
  kDestroyInstance,
  kEcho,
  kRpcCount,
};

struct Fuzzed {
  fs::path dir;                   // the private temp dir
  std::vector<fs::path> bundles;  // the bundle directories in the root
  std::unique_ptr<polyplug::host::HostServer> server;
  std::unique_ptr<v1::PluginHost::Stub> stub;
};

// Set once, by the first input; never destroyed (see StartHost).
Fuzzed* g_host = nullptr;

void Die(const std::string& what) {
  std::fprintf(stderr, "request_fuzzer: %s\n", what.c_str());
  std::abort();
}

Fuzzed* StartHost() {
  auto* f = new Fuzzed;
  g_host = f;
  const char* tmp = getenv("TMPDIR");
  std::string templ = absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp",
                                   "/polyplug-request-fuzzer-XXXXXX");
  if (mkdtemp(templ.data()) == nullptr) Die("mkdtemp failed for " + templ);
  f->dir = templ;
  const fs::path root = f->dir / "root";
  fs::create_directories(root);
  fs::create_directories(f->dir / "state");
  std::error_code ec;
  for (const auto& [name, from] :
       {std::pair<const char*, const char*>{"counter", POLYPLUG_FUZZ_COUNTER_BUNDLE},
        {"stateless", POLYPLUG_FUZZ_STATELESS_BUNDLE}}) {
    fs::copy(from, root / name, fs::copy_options::recursive, ec);
    if (ec) Die(absl::StrCat("copying ", from, ": ", ec.message()));
    f->bundles.push_back(root / name);
  }
  polyplug::host::HostServerOptions options;
  const std::string address = absl::StrCat("unix:", (f->dir / "h.sock").string());
  options.listen = {address};
  options.bundle_roots = {root};
  options.state_dir = f->dir / "state";
  options.call_threads = 2;
  options.drain_timeout = absl::Milliseconds(500);
  options.instance_idle_timeout = absl::Seconds(1);
  options.max_subscribers = 8;
  auto server = polyplug::host::HostServer::Start(options);
  if (!server.ok()) Die(absl::StrCat("HostServer::Start: ", server.status().ToString()));
  f->server = *std::move(server);
  f->stub =
      v1::PluginHost::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  // Leaves the server running at exit (destroying it races the gRPC threads still running);
  // only the temp dir goes.
  std::atexit([] {
    std::error_code ignored;
    fs::remove_all(g_host->dir, ignored);
  });
  return f;
}

Fuzzed* Host() {
  static Fuzzed* const host = StartHost();
  return host;
}

void SetDeadline(grpc::ClientContext& context, std::chrono::milliseconds after) {
  context.set_deadline(std::chrono::system_clock::now() + after);
}

constexpr std::chrono::milliseconds kCallDeadline(2000);
constexpr std::chrono::milliseconds kStreamDeadline(50);

// One unary call of `request` parsed from the input; false when the bytes do not parse.
template <typename Request, typename Response, typename Call>
bool Unary(const uint8_t* data, size_t size, Call call) {
  Request request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return false;
  grpc::ClientContext context;
  SetDeadline(context, kCallDeadline);
  Response response;
  (void)call(&context, request, &response);
  return true;
}

// Puts back the bundles an Unload (or a failed Reload) may have taken away, so that later
// inputs still find something to call.
void RestoreBundles() {
  for (const fs::path& bundle : Host()->bundles) {
    v1::LoadBundleRequest request;
    request.set_path(bundle.string());
    grpc::ClientContext context;
    SetDeadline(context, kCallDeadline);
    v1::LoadBundleResponse response;
    (void)Host()->stub->LoadBundle(&context, request, &response);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > 4096) return -1;
  v1::PluginHost::Stub& stub = *Host()->stub;
  const uint8_t rpc = data[0] % kRpcCount;
  ++data;
  --size;
  bool parsed = false;
  switch (rpc) {
    case kReload:
      parsed = Unary<v1::ReloadRequest, v1::ReloadResponse>(
          data, size, [&](auto* c, const auto& q, auto* r) { return stub.Reload(c, q, r); });
      if (parsed) RestoreBundles();
      break;
    case kLoadBundle:
      parsed = Unary<v1::LoadBundleRequest, v1::LoadBundleResponse>(
          data, size, [&](auto* c, const auto& q, auto* r) { return stub.LoadBundle(c, q, r); });
      break;
    case kUnloadBundle:
      parsed = Unary<v1::UnloadBundleRequest, v1::UnloadBundleResponse>(
          data, size, [&](auto* c, const auto& q, auto* r) { return stub.UnloadBundle(c, q, r); });
      if (parsed) RestoreBundles();
      break;
    case kFindContract:
      parsed = Unary<v1::FindContractRequest, v1::ContractHandle>(
          data, size, [&](auto* c, const auto& q, auto* r) { return stub.FindContract(c, q, r); });
      break;
    case kListBundles:
      parsed = Unary<v1::ListBundlesRequest, v1::ListBundlesResponse>(
          data, size, [&](auto* c, const auto& q, auto* r) { return stub.ListBundles(c, q, r); });
      break;
    case kListContracts:
      parsed = Unary<v1::ListContractsRequest, v1::ListContractsResponse>(
          data, size, [&](auto* c, const auto& q, auto* r) { return stub.ListContracts(c, q, r); });
      break;
    case kGetHostInfo:
      parsed = Unary<v1::GetHostInfoRequest, v1::HostInfo>(
          data, size, [&](auto* c, const auto& q, auto* r) { return stub.GetHostInfo(c, q, r); });
      break;
    case kSubscribeReloadPhases: {
      v1::SubscribeReloadPhasesRequest request;
      if (!request.ParseFromArray(data, static_cast<int>(size))) break;
      parsed = true;
      grpc::ClientContext context;
      SetDeadline(context, kStreamDeadline);
      auto reader = stub.SubscribeReloadPhases(&context, request);
      v1::ReloadPhaseEvent event;
      for (int i = 0; i < 64 && reader->Read(&event); ++i) {
      }
      context.TryCancel();
      (void)reader->Finish();
      break;
    }
    case kOpenSession: {
      v1::OpenSessionRequest request;
      if (!request.ParseFromArray(data, static_cast<int>(size))) break;
      parsed = true;
      grpc::ClientContext context;
      SetDeadline(context, kCallDeadline);
      auto reader = stub.OpenSession(&context, request);
      v1::SessionEvent event;
      (void)reader->Read(&event);
      context.TryCancel();
      (void)reader->Finish();
      break;
    }
    case kCreateInstance:
      parsed = Unary<v1::CreateInstanceRequest, v1::InstanceRef>(
          data, size,
          [&](auto* c, const auto& q, auto* r) { return stub.CreateInstance(c, q, r); });
      break;
    case kInvoke: {
      v1::InvokeRequest request;
      if (!request.ParseFromArray(data, static_cast<int>(size))) break;
      // counter's "sleep" and "block" wait on purpose (and "block" opens files the request
      // names); they are test fixtures, not host code.
      if (request.method() == "sleep" || request.method() == "block") return -1;
      parsed = Unary<v1::InvokeRequest, v1::InvokeResponse>(
          data, size, [&](auto* c, const auto& q, auto* r) { return stub.Invoke(c, q, r); });
      break;
    }
    case kDestroyInstance:
      parsed = Unary<v1::DestroyInstanceRequest, v1::DestroyInstanceResponse>(
          data, size,
          [&](auto* c, const auto& q, auto* r) { return stub.DestroyInstance(c, q, r); });
      break;
    case kEcho:
      parsed = Unary<v1::EchoRequest, v1::EchoResponse>(
          data, size, [&](auto* c, const auto& q, auto* r) { return stub.Echo(c, q, r); });
      break;
    default:
      break;
  }
  return parsed ? 0 : -1;
}
