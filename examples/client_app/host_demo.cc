// polyplug-host-demo: drives a running polyplug-host through libpolyplug_client, the way an
// editor talks to a game's runtime: subscribe to the reload phases, keep a live handle on
// a contract, rebuild a bundle (copy its v2 build over v1) and reload it, then break it
// and reload again (FAILED: v2 stays live).
//
// usage: polyplug-host-demo TARGET BUNDLE_DIR V2_BUILD_DIR
//   TARGET        e.g. unix:/tmp/x/host.sock
//   BUNDLE_DIR    the loaded greeter bundle directory inside the host's bundle root
//   V2_BUILD_DIR  a directory holding the v2 build (manifest.toml + libgreeter.so)
//
// Exit code: 0 when everything happened as described, 1 otherwise, 3 when the host
// cannot be reached.
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>

#include "polyplug/client/host_client.h"

namespace fs = std::filesystem;
namespace client = polyplug::client;
namespace v1 = polyplug::host::v1;

namespace {

std::string Describe(const absl::StatusOr<v1::ContractHandle>& h) {
  if (!h.ok()) return std::string(h.status().message());
  return h->provider_bundle_name() + " " + std::to_string(h->provider_version().major()) + "." +
         std::to_string(h->provider_version().minor()) + "." +
         std::to_string(h->provider_version().patch()) + " (slot " + std::to_string(h->index()) +
         ", generation " + std::to_string(h->generation()) + ")";
}

// Counts terminal phases so that main() can wait for the stream to catch up.
class Terminals {
 public:
  void Add() {
    std::lock_guard<std::mutex> lock(mu_);
    ++count_;
    cv_.notify_all();
  }
  bool WaitFor(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(30), [&] { return count_ >= n; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int count_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: polyplug-host-demo TARGET BUNDLE_DIR V2_BUILD_DIR\n");
    return 2;
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // interleave sensibly with the host log
  const fs::path bundle = argv[2];
  const fs::path v2 = argv[3];
  auto connected = client::HostClient::Connect(argv[1]);
  if (!connected.ok()) {
    std::fprintf(stderr, "polyplug-host-demo: %s\n",
                 std::string(connected.status().message()).c_str());
    return 2;
  }
  client::HostClient& host = **connected;
  client::CallOptions wait;
  wait.wait_for_ready = true;
  wait.timeout = absl::Seconds(30);
  if (auto info = host.GetHostInfo(wait); !info.ok()) {
    std::fprintf(stderr, "polyplug-host-demo: %s\n", std::string(info.status().message()).c_str());
    return 3;
  } else {
    std::printf("connected to polyplug-host %s at %s (epoch %llu)\n", info->version().c_str(),
                argv[1], static_cast<unsigned long long>(info->host_epoch()));
  }

  // What an in-process host would get from on_reload, on the subscription's own thread.
  Terminals terminals;
  std::mutex print_mu;
  auto print = [&](const client::PhaseEvent& e) {
    std::lock_guard<std::mutex> lock(print_mu);
    std::printf("  [seq %llu] %s %s %s%s%s\n", static_cast<unsigned long long>(e.seq),
                std::string(client::PhaseName(e.phase)).c_str(), e.bundle_name.c_str(),
                e.bundle_version.ToString().c_str(), e.message.empty() ? "" : ": ",
                e.message.c_str());
  };
  client::PhaseHandlers handlers;
  handlers.on_preparing = handlers.on_unloading = handlers.on_loaded = print;
  handlers.on_reloaded = handlers.on_failed = [&](const client::PhaseEvent& e) {
    print(e);
    if (e.parent_reload_id == 0) terminals.Add();
  };
  std::mutex synced_mu;
  std::condition_variable synced_cv;
  bool synced = false;
  handlers.on_resynced = [&](const client::Resynced& r) {
    {
      std::lock_guard<std::mutex> lock(print_mu);
      std::printf("subscribed at seq %llu; loaded:", static_cast<unsigned long long>(r.seq));
      for (const client::BundleState& b : r.bundles) {
        std::printf(" %s %s", b.name.c_str(), b.version.ToString().c_str());
      }
      std::printf("\n");
    }
    std::lock_guard<std::mutex> lock(synced_mu);
    synced = true;
    synced_cv.notify_all();
  };
  auto subscription = host.Subscribe(std::move(handlers));
  {
    std::unique_lock<std::mutex> lock(synced_mu);
    if (!synced_cv.wait_for(lock, std::chrono::seconds(30), [&] { return synced; })) return 3;
  }

  // A live handle: refreshed by the library whenever its provider changes.
  auto greeter =
      host.TrackContract("example.greeter@1", 0,
                         [&](const absl::StatusOr<v1::ContractHandle>& before,
                             const absl::StatusOr<v1::ContractHandle>& now) {
                           std::lock_guard<std::mutex> lock(print_mu);
                           std::printf("  handle example.greeter@1 refreshed: %s -> %s\n",
                                       Describe(before).c_str(), Describe(now).c_str());
                         });
  std::printf("tracking example.greeter@1: %s\n", Describe(greeter->Current()).c_str());

  // A remote instance of the greeter that survives its reloads: its answers change with them.
  auto greeting = host.MakeLiveInstance("example.greeter@1");
  auto greet = [&] {
    auto answer = greeting->Invoke("greet", "demo");
    std::lock_guard<std::mutex> lock(print_mu);
    std::printf("  greet(\"demo\") -> %s\n", answer.ok()
                                                 ? answer->response().c_str()
                                                 : std::string(answer.status().message()).c_str());
    return answer.ok() ? answer->response() : std::string();
  };
  const std::string before = greet();

  std::printf("\nrebuild greeter (copy the v2 build over v1) and reload it\n");
  for (const auto& entry : fs::directory_iterator(v2)) {
    fs::copy_file(entry.path(), bundle / entry.path().filename(),
                  fs::copy_options::overwrite_existing);
  }
  auto reloaded = host.Reload("greeter");
  if (!reloaded.ok()) {
    std::fprintf(stderr, "reload: %s\n", std::string(reloaded.status().message()).c_str());
    return 1;
  }
  terminals.WaitFor(1);
  std::printf("Reload greeter: %s (reload %llu, %d events)\n",
              v1::ReloadOutcome_Name(reloaded->outcome()).c_str(),
              static_cast<unsigned long long>(reloaded->reload_id()), reloaded->events_size());
  const std::string after = greet();

  std::printf("\nbreak the artifact (a half-written build) and reload again\n");
  std::ofstream(bundle / "libgreeter.so", std::ios::trunc) << "half-written";
  auto broken = host.Reload("greeter");
  if (!broken.ok()) {
    std::fprintf(stderr, "reload: %s\n", std::string(broken.status().message()).c_str());
    return 1;
  }
  terminals.WaitFor(2);
  std::printf("Reload greeter: %s [%s] %s\n", v1::ReloadOutcome_Name(broken->outcome()).c_str(),
              client::ReasonToken(broken->reason()).c_str(), broken->message().c_str());
  std::printf("example.greeter@1 is still %s\n", Describe(greeter->Current()).c_str());
  const std::string still = greet();
  const bool as_described = before != after && after == still && !after.empty() &&
                            reloaded->outcome() == v1::RELOAD_OUTCOME_RELOADED &&
                            broken->outcome() == v1::RELOAD_OUTCOME_FAILED &&
                            greeter->Current().ok() &&
                            greeter->Current()->provider_version().major() == 2;
  return as_described ? 0 : 1;
}
