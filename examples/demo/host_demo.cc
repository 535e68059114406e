// polyplug-host-demo: drives a running polyplug-host over gRPC the way an editor or a CI
// job would: watch the phase stream, rebuild a bundle (copy its v2 build over v1), reload
// it, print what the stream and the Reload response say, then break it and reload again.
//
// usage: polyplug-host-demo TARGET BUNDLE_DIR V2_ARTIFACT
//   TARGET       e.g. unix:/tmp/x/host.sock
//   BUNDLE_DIR   the loaded greeter bundle directory inside the host's bundle root
//   V2_ARTIFACT  a directory holding the v2 build (manifest.toml + libgreeter.so)
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "polyplug/host/v1/host.grpc.pb.h"

namespace fs = std::filesystem;
namespace v1 = polyplug::host::v1;

namespace {

std::string Describe(const v1::ReloadPhaseEvent& e) {
  std::string kind = v1::EventKind_Name(e.kind()).substr(11);
  std::string text = "[seq " + std::to_string(e.seq()) + "] " + kind;
  if (e.kind() == v1::EVENT_KIND_PHASE || e.kind() == v1::EVENT_KIND_SNAPSHOT) {
    text += " " + v1::Phase_Name(e.phase()).substr(6) + " " + e.bundle_name() + " " +
            std::to_string(e.bundle_version().major()) + "." +
            std::to_string(e.bundle_version().minor()) + "." +
            std::to_string(e.bundle_version().patch());
  }
  if (e.reason() != v1::FAILURE_REASON_UNSPECIFIED) {
    text += " " + v1::FailureReason_Name(e.reason()).substr(15) + ": " + e.message();
  }
  return text;
}

void PrintReload(const char* what, const grpc::Status& status, const v1::ReloadResponse& r) {
  if (!status.ok()) {
    std::printf("%s: gRPC error %d: %s\n", what, status.error_code(),
                status.error_message().c_str());
    return;
  }
  std::printf("%s: %s%s%s (reload %llu, %d events, registry revision %llu)\n", what,
              v1::ReloadOutcome_Name(r.outcome()).c_str(), r.message().empty() ? "" : ": ",
              r.message().c_str(), static_cast<unsigned long long>(r.reload_id()), r.events_size(),
              static_cast<unsigned long long>(r.registry_revision()));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: polyplug-host-demo TARGET BUNDLE_DIR V2_BUILD_DIR\n");
    return 2;
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // interleave sensibly with the host log
  auto channel = grpc::CreateChannel(argv[1], grpc::InsecureChannelCredentials());
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(30))) {
    std::fprintf(stderr, "polyplug-host-demo: cannot reach %s\n", argv[1]);
    return 3;
  }
  auto stub = v1::PluginHost::NewStub(channel);
  const fs::path bundle = argv[2];
  const fs::path v2 = argv[3];

  // The watcher: a snapshot of what is loaded, then live phases until two reloads ended.
  grpc::ClientContext watch_context;
  v1::SubscribeReloadPhasesRequest watch;
  watch.set_include_snapshot(true);
  // Reload 1: greeter and its dependent shouter, 4 phases. Reload 2 fails: 2 phases.
  watch.set_max_events(6);
  auto stream = stub->SubscribeReloadPhases(&watch_context, watch);
  v1::ReloadPhaseEvent event;
  std::printf("watching the phase stream:\n");
  while (stream->Read(&event)) {
    std::printf("  %s\n", Describe(event).c_str());
    if (event.kind() == v1::EVENT_KIND_SNAPSHOT_END) break;
  }
  std::thread reader([&] {
    v1::ReloadPhaseEvent e;
    while (stream->Read(&e)) std::printf("  %s\n", Describe(e).c_str());
  });

  std::printf("\nrebuild greeter (copy the v2 build over v1) and Reload{name: \"greeter\"}\n");
  for (const auto& entry : fs::directory_iterator(v2)) {
    fs::copy_file(entry.path(), bundle / entry.path().filename(),
                  fs::copy_options::overwrite_existing);
  }
  v1::ReloadRequest request;
  request.set_name("greeter");
  v1::ReloadResponse response;
  {
    grpc::ClientContext context;
    PrintReload("Reload", stub->Reload(&context, request, &response), response);
  }

  std::printf("\nbreak the artifact and reload again: FAILED, v2 stays live\n");
  std::ofstream(bundle / "libgreeter.so", std::ios::trunc) << "half-written";
  {
    grpc::ClientContext context;
    response.Clear();
    PrintReload("Reload", stub->Reload(&context, request, &response), response);
  }
  {
    grpc::ClientContext context;
    v1::FindContractRequest find;
    find.set_name("example.greeter@1");
    v1::ContractHandle handle;
    grpc::Status status = stub->FindContract(&context, find, &handle);
    std::printf("FindContract example.greeter@1: %s\n",
                status.ok() ? (handle.provider_bundle_name() + " v" +
                               std::to_string(handle.provider_version().major()) + ", slot " +
                               std::to_string(handle.index()) + " generation " +
                               std::to_string(handle.generation()))
                                  .c_str()
                            : status.error_message().c_str());
  }
  reader.join();
  grpc::Status end = stream->Finish();
  std::printf("phase stream ended: %s\n", end.ok() ? "OK" : end.error_message().c_str());
  return 0;
}
