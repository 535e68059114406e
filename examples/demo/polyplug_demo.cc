// polyplug-demo: the in-process runtime end to end, printing every phase event.
//
// Stages the example bundles in a scratch bundle root, loads them in dependency order,
// calls greeter and shouter, rebuilds greeter "in place" (copies the v2 build over v1) and
// reloads it (shouter follows by cascade), shows that a broken artifact gives FAILED while
// v2 keeps answering, and unloads everything.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>

#include "polyplug/core/ids.h"
#include "polyplug/core/runtime.h"

namespace fs = std::filesystem;
using polyplug::core::PhaseEvent;
using polyplug::core::Runtime;

namespace {

void Check(const absl::Status& status, const char* what) {
  if (!status.ok()) {
    std::cerr << "polyplug-demo: " << what << ": " << status << "\n";
    std::exit(1);
  }
}

void CopyBundleFiles(const fs::path& from, const fs::path& to) {
  fs::create_directories(to);
  for (const auto& entry : fs::directory_iterator(from)) {
    if (entry.is_regular_file()) {
      fs::copy_file(entry.path(), to / entry.path().filename(),
                    fs::copy_options::overwrite_existing);
    }
  }
}

// Creates an instance of contract@1, invokes `method` and destroys the instance.
std::string Call(Runtime& runtime, const std::string& contract, const std::string& method,
                 const std::string& request) {
  auto handle = runtime.Find(polyplug::core::GuestContractId(contract, 1), 1);
  if (!handle.ok()) return "<" + std::string(handle.status().message()) + ">";
  auto guard = runtime.Pin();
  auto iface = runtime.Resolve(*handle);
  if (!iface.ok()) return "<" + std::string(iface.status().message()) + ">";
  auto instance = runtime.CreateInstance(**iface, {nullptr, 0});
  if (!instance.ok()) return "<" + std::string(instance.status().message()) + ">";
  std::string response;
  PolyplugByteSink sink{&response, [](void* ctx, const uint8_t* data, size_t len) {
                          static_cast<std::string*>(ctx)->append(
                              reinterpret_cast<const char*>(data), len);
                        }};
  PolyplugAbiError error =
      (*iface)->invoke((*iface)->user_data, *instance, {method.data(), method.size()},
                       {reinterpret_cast<const uint8_t*>(request.data()), request.size()}, &sink);
  runtime.DestroyInstance(**iface, *instance);
  if (error.code != POLYPLUG_ABI_OK) {
    return "<error " + std::to_string(error.code) + ": " +
           std::string(error.message.ptr, error.message.len) + ">";
  }
  return response;
}

void Show(Runtime& runtime) {
  std::printf("    greeter.greet(\"developer\") -> %s\n",
              Call(runtime, "example.greeter", "greet", "developer").c_str());
  std::printf("    shouter.shout(\"developer\") -> %s\n",
              Call(runtime, "example.shouter", "shout", "developer").c_str());
}

}  // namespace

int main(int argc, char** argv) {
  fs::path built = argc > 1 ? fs::path(argv[1]) : fs::path(POLYPLUG_EXAMPLE_BUNDLES_DIR);
  char scratch_template[] = "/tmp/polyplug-demo-XXXXXX";
  if (mkdtemp(scratch_template) == nullptr) return 1;
  const fs::path scratch = scratch_template;
  const fs::path root = scratch / "bundles";
  CopyBundleFiles(built / "greeter_v1", root / "greeter");
  CopyBundleFiles(built / "shouter", root / "shouter");

  polyplug::core::RuntimeOptions options;
  options.state_dir = scratch / "state";
  auto created = Runtime::Create(options);
  Check(created.status(), "create runtime");
  Runtime& runtime = **created;
  std::printf("host epoch %llu, bundle root %s\n",
              static_cast<unsigned long long>(runtime.host_epoch()), root.c_str());
  runtime.AddPhaseCallback([](const PolyplugReloadPhase&, const PhaseEvent& e) {
    std::printf(
        "  [seq %llu] %-9s %s %s%s%s\n", static_cast<unsigned long long>(e.seq),
        std::string(polyplug::core::PhaseName(e.phase)).c_str(), e.bundle_name.c_str(),
        e.bundle_version.ToString().c_str(),
        e.reason == polyplug::core::ErrorReason::kUnspecified ? "" : " reason=",
        e.reason == polyplug::core::ErrorReason::kUnspecified
            ? ""
            : (std::string(polyplug::core::ReasonToken(e.reason)) + ": " + e.message).c_str());
  });

  std::printf("\n1. discover and load (providers first)\n");
  Check(runtime.DiscoverAndLoad({root}).status(), "discover");
  Show(runtime);

  std::printf("\n2. rebuild greeter in place (v2 over v1) and reload; shouter cascades\n");
  CopyBundleFiles(built / "greeter_v2", root / "greeter");
  auto outcome = runtime.ReloadBundleByName("greeter");
  Check(outcome.status(), "reload");
  Check(outcome->status, "reload outcome");
  Show(runtime);

  std::printf("\n3. a broken artifact: FAILED, and v2 keeps answering\n");
  std::ofstream(root / "greeter" / "libgreeter.so", std::ios::trunc) << "not a shared object";
  outcome = runtime.ReloadBundleByName("greeter");
  Check(outcome.status(), "reload");
  std::printf("    outcome: %s\n",
              outcome->ok() ? "RELOADED" : std::string(outcome->status.message()).c_str());
  Show(runtime);

  std::printf("\n4. unload greeter with its dependents\n");
  Check(runtime.UnloadBundle("greeter", polyplug::core::UnloadMode::kCascade).status(), "unload");
  Show(runtime);

  created->reset();
  std::error_code ec;
  fs::remove_all(scratch, ec);
  return 0;
}
