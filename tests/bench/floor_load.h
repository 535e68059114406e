// The floor of a reload, shared by both benchmarks: copy + dlopen + polyplug_init +
// dlclose of a bundle's library in this process, with a host API that accepts every
// registration. The work a reload cannot avoid.
#ifndef POLYPLUG_TESTS_BENCH_FLOOR_LOAD_H_
#define POLYPLUG_TESTS_BENCH_FLOOR_LOAD_H_

#include <dlfcn.h>

#include <filesystem>
#include <string>

#include "polyplug/abi.h"

namespace polyplug::bench {

// Loads a copy of `library` at `copy` (which must not exist), runs its polyplug_init and
// unloads it; removes the copy. Returns "" or what went wrong.
inline std::string LoadInitUnload(const std::filesystem::path& library,
                                  const std::filesystem::path& copy) {
  static const PolyplugHostApi api = [] {
    PolyplugHostApi a{};
    a.register_guest_contract = [](const PolyplugHostApi*, const PolyplugPluginDescriptor*,
                                   const PolyplugGuestContractInterface*,
                                   PolyplugAbiError* out_err) {
      if (out_err != nullptr) *out_err = {POLYPLUG_ABI_OK, {nullptr, 0}};
    };
    a.find_guest_contract = [](const PolyplugHostApi*, uint64_t, uint32_t) {
      return PolyplugGuestContractHandle{POLYPLUG_NULL_HANDLE_INDEX, 0};
    };
    a.resolve_guest_contract = [](const PolyplugHostApi*, PolyplugGuestContractHandle) {
      return static_cast<const PolyplugGuestContractInterface*>(nullptr);
    };
    a.log = [](const PolyplugHostApi*, PolyplugLogLevel, PolyplugStringView, PolyplugStringView) {};
    a.registry_revision = [](const PolyplugHostApi*) { return uint64_t{0}; };
    return a;
  }();
  std::error_code ec;
  std::filesystem::copy_file(library, copy, ec);
  if (ec) return "copy: " + ec.message();
  void* handle = dlopen(copy.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) return std::string("dlopen: ") + dlerror();
  auto init = reinterpret_cast<PolyplugInitFn>(dlsym(handle, "polyplug_init"));
  const std::string name = "counter";
  const PolyplugBundleInitContext context{1, {nullptr, 0}, {name.data(), name.size()}, {1, 0, 0}};
  const bool initialised = init != nullptr && init(&api, &context).code == POLYPLUG_ABI_OK;
  dlclose(handle);
  std::filesystem::remove(copy, ec);
  return initialised ? "" : "polyplug_init failed";
}

}  // namespace polyplug::bench

#endif  // POLYPLUG_TESTS_BENCH_FLOOR_LOAD_H_
