// The HostApi table a runtime hands to bundles (polyplug/abi.h): registration inside the
// init window, lookups, counted instances, the log and the registry revision; and the
// live-instance accounting behind it (docs/SEMANTICS.md §8). Entries may be called from
// any thread; none takes the operation lock.
#include "absl/strings/str_cat.h"
#include "core/src/crash_record.h"
#include "core/src/runtime_impl.h"
#include "core/src/utf8.h"
#include "polyplug/core/error.h"
#include "polyplug/core/ids.h"

namespace polyplug::core {
namespace {

PolyplugAbiError AbiError(PolyplugAbiErrorCode code, absl::string_view static_message) {
  return {code, {static_message.data(), static_message.size()}};
}

absl::string_view ViewOf(PolyplugStringView view) {
  return view.ptr == nullptr ? absl::string_view() : absl::string_view(view.ptr, view.len);
}

std::string VersionText(const PolyplugVersion& v) {
  return absl::StrCat(v.major, ".", v.minor, ".", v.patch);
}

}  // namespace

// ---- The init window ----------------------------------------------------------------------

std::vector<Runtime::Impl::InitFrame*>& Runtime::Impl::InitStack() {
  thread_local std::vector<InitFrame*> stack;
  return stack;
}

Runtime::Impl* Runtime::Impl::From(const PolyplugHostApi* api) {
  return api == nullptr ? nullptr : static_cast<Impl*>(api->runtime);
}

Runtime::Impl::InitFrame* Runtime::Impl::CurrentFrame() {
  auto& stack = InitStack();
  for (auto it = stack.rbegin(); it != stack.rend(); ++it) {
    if ((*it)->impl == this) return *it;
  }
  return nullptr;
}

// ---- HostApi entries ------------------------------------------------------------------------

void Runtime::Impl::ApiRegister(const PolyplugHostApi* self,
                                const PolyplugPluginDescriptor* descriptor,
                                const PolyplugGuestContractInterface* iface,
                                PolyplugAbiError* out_err) {
  PolyplugAbiError ignored;
  if (out_err == nullptr) out_err = &ignored;
  *out_err = AbiError(POLYPLUG_ABI_OK, "");
  Impl* impl = From(self);
  if (impl == nullptr || descriptor == nullptr || iface == nullptr) {
    *out_err = AbiError(POLYPLUG_ABI_INVALID_POINTER, "register_guest_contract: null pointer");
    return;
  }
  InitFrame* frame = impl->CurrentFrame();
  if (frame == nullptr) {
    *out_err = AbiError(POLYPLUG_ABI_GENERIC,
                        "register_guest_contract is only valid inside polyplug_init");
    return;
  }
  // The bundle gets a static text in *out_err; the load's error carries the detail.
  auto reject = [&](PolyplugAbiErrorCode code, absl::string_view static_text, ErrorReason reason,
                    std::string detail) {
    *out_err = AbiError(code, static_text);
    if (frame->error.ok()) {
      frame->error = MakeError(reason, absl::StrCat("bundle \"", frame->bundle_name,
                                                    "\": register_guest_contract: ", detail));
    }
  };
  const absl::string_view contract = ViewOf(descriptor->contract_name);
  const absl::string_view plugin = ViewOf(descriptor->name);
  if (contract.empty() || !IsWellFormedUtf8(contract) || !IsWellFormedUtf8(plugin)) {
    reject(POLYPLUG_ABI_INVALID_ARGUMENT, "contract name is empty or not valid UTF-8",
           ErrorReason::kInvalidArgument, "the contract name is empty or not valid UTF-8");
    return;
  }
  const PolyplugVersion v = descriptor->version;
  const PolyplugVersion iv = iface->contract_version;
  // The version is given twice; neither may silently win over the other.
  if (v.major != iv.major || v.minor != iv.minor || v.patch != iv.patch) {
    reject(POLYPLUG_ABI_INVALID_ARGUMENT, "descriptor and interface versions differ",
           ErrorReason::kInvalidArgument,
           absl::StrCat("contract \"", contract, "\": the descriptor says version ", VersionText(v),
                        " but the interface's contract_version is ", VersionText(iv),
                        "; give the same version in both"));
    return;
  }
  if (iface->dispatch_type != POLYPLUG_DISPATCH_NATIVE) {
    reject(POLYPLUG_ABI_INVALID_ARGUMENT, "unsupported dispatch type",
           ErrorReason::kInvalidArgument,
           absl::StrCat("contract \"", contract, "\" uses dispatch type ", iface->dispatch_type,
                        "; only native (0) is supported"));
    return;
  }
  if (iface->create_instance == nullptr || iface->destroy_instance == nullptr ||
      (iface->function_count > 0 && iface->functions == nullptr)) {
    reject(POLYPLUG_ABI_INVALID_POINTER, "null create/destroy/functions",
           ErrorReason::kInvalidArgument,
           absl::StrCat("contract \"", contract,
                        "\" has a null create_instance, destroy_instance "
                        "or function table"));
    return;
  }
  for (uint32_t i = 0; i < iface->function_count; ++i) {
    if (iface->functions[i] == nullptr) {
      reject(POLYPLUG_ABI_INVALID_POINTER, "null entry in function table",
             ErrorReason::kInvalidArgument,
             absl::StrCat("contract \"", contract, "\" has a null function at index ", i));
      return;
    }
  }
  const uint64_t expected_id = GuestContractId(contract, v.major);
  if (iface->contract_id != expected_id) {
    reject(POLYPLUG_ABI_INVALID_ARGUMENT, "contract id does not match name and major",
           ErrorReason::kInvalidArgument,
           absl::StrCat("contract \"", contract, "@", v.major, "\" carries id ",
                        FormatContractId(iface->contract_id), ", expected ",
                        FormatContractId(expected_id)));
    return;
  }
  for (const Registration& existing : frame->staged) {
    if (existing.iface.contract_id == iface->contract_id) {
      reject(POLYPLUG_ABI_DUPLICATE_PROVIDER, "contract registered twice",
             ErrorReason::kDuplicateProvider,
             absl::StrCat("contract \"", contract, "@", v.major, "\" registered twice"));
      return;
    }
  }
  Registration reg;
  reg.plugin_name = std::string(plugin);
  reg.contract_name = std::string(contract);
  reg.version = {v.major, v.minor, v.patch};
  reg.iface = *iface;
  frame->staged.push_back(std::move(reg));
}

PolyplugGuestContractHandle Runtime::Impl::ApiFind(const PolyplugHostApi* self,
                                                   uint64_t contract_id, uint32_t min_major) {
  const PolyplugGuestContractHandle null_handle{POLYPLUG_NULL_HANDLE_INDEX, 0};
  Impl* impl = From(self);
  if (impl == nullptr) return null_handle;
  // Inside an init window only declared dependencies are visible (docs/SEMANTICS.md §3).
  if (InitFrame* frame = impl->CurrentFrame();
      frame != nullptr && !frame->declared.contains(contract_id)) {
    return null_handle;
  }
  auto handle = impl->runtime_->registry_.Find(contract_id, min_major);
  return handle.ok() ? handle->ToAbi() : null_handle;
}

const PolyplugGuestContractInterface* Runtime::Impl::ApiResolve(
    const PolyplugHostApi* self, PolyplugGuestContractHandle handle) {
  Impl* impl = From(self);
  if (impl == nullptr) return nullptr;
  auto iface = impl->runtime_->registry_.Resolve({handle.index, handle.generation});
  return iface.ok() ? *iface : nullptr;
}

PolyplugAbiError Runtime::Impl::ApiCreateInstance(const PolyplugHostApi* self,
                                                  const PolyplugGuestContractInterface* iface,
                                                  PolyplugBytesView args,
                                                  PolyplugGuestContractInstance* out) {
  Impl* impl = From(self);
  if (impl == nullptr || iface == nullptr || out == nullptr) {
    return AbiError(POLYPLUG_ABI_INVALID_POINTER, "create_guest_instance: null pointer");
  }
  auto instance = impl->CreateInstance(*iface, args);
  if (!instance.ok()) return AbiError(POLYPLUG_ABI_GENERIC, "create_instance failed");
  *out = *instance;
  return AbiError(POLYPLUG_ABI_OK, "");
}

void Runtime::Impl::ApiDestroyInstance(const PolyplugHostApi* self,
                                       const PolyplugGuestContractInterface* iface,
                                       PolyplugGuestContractInstance instance) {
  Impl* impl = From(self);
  if (impl == nullptr || iface == nullptr) return;
  impl->DestroyInstance(*iface, instance);
}

void Runtime::Impl::ApiLog(const PolyplugHostApi* self, PolyplugLogLevel level,
                           PolyplugStringView scope, PolyplugStringView message) {
  Impl* impl = From(self);
  if (impl == nullptr) return;
  const LogLevel l = level >= POLYPLUG_LOG_ERROR && level <= POLYPLUG_LOG_TRACE
                         ? static_cast<LogLevel>(level)
                         : LogLevel::kError;
  impl->runtime_->Log(l, absl::StrCat("bundle:", ViewOf(scope)), ViewOf(message));
}

uint64_t Runtime::Impl::ApiRevision(const PolyplugHostApi* self) {
  Impl* impl = From(self);
  return impl == nullptr ? 0 : impl->runtime_->registry_.revision();
}

// ---- Instances and calls --------------------------------------------------------------------

absl::StatusOr<PolyplugGuestContractInstance> Runtime::Impl::CreateInstance(
    const PolyplugGuestContractInterface& iface, PolyplugBytesView args) {
  PolyplugGuestContractInstance instance{nullptr, iface.contract_id};
  if (iface.create_instance == nullptr) {
    return MakeError(ErrorReason::kInvalidArgument, "the contract has no create_instance");
  }
  PolyplugAbiError error;
  {
    BundleCodeScope creating(BundleActivity::kCreateInstance, nullptr,
                             reinterpret_cast<const void*>(iface.create_instance));
    error = iface.create_instance(iface.user_data, &api_, args, &instance);
  }
  if (error.code != POLYPLUG_ABI_OK) {
    return MakeError(ErrorReason::kCallFailed, absl::StrCat("create_instance of contract ",
                                                            FormatContractId(iface.contract_id),
                                                            " failed: ", DescribeAbiError(error)));
  }
  instance.contract_id = iface.contract_id;
  if (instance.data != nullptr) {
    std::lock_guard<std::mutex> lock(instances_mu_);
    ++instance_counts_[iface.contract_id];
  }
  return instance;
}

void Runtime::Impl::DestroyInstance(const PolyplugGuestContractInterface& iface,
                                    PolyplugGuestContractInstance instance) {
  if (iface.destroy_instance != nullptr) {
    BundleCodeScope destroying(BundleActivity::kDestroyInstance, nullptr,
                               reinterpret_cast<const void*>(iface.destroy_instance));
    iface.destroy_instance(iface.user_data, &api_, instance);
  }
  if (instance.data == nullptr) return;
  std::lock_guard<std::mutex> lock(instances_mu_);
  auto it = instance_counts_.find(instance.contract_id);
  if (it != instance_counts_.end() && --it->second == 0) instance_counts_.erase(it);
}

absl::StatusOr<std::string> Runtime::Impl::Invoke(const PolyplugGuestContractInterface& iface,
                                                  PolyplugGuestContractInstance instance,
                                                  absl::string_view callee,
                                                  absl::string_view method,
                                                  absl::string_view request) {
  const std::string label = callee.empty()
                                ? absl::StrCat("contract ", FormatContractId(iface.contract_id))
                                : std::string(callee);
  if (iface.invoke == nullptr) {
    return MakeError(ErrorReason::kNotInvocable,
                     absl::StrCat(label,
                                  " has no message-style invoke entry, so it cannot be called "
                                  "remotely (a bundle exposes methods by name with guest.hpp's "
                                  "Contract<...>().Method(name, fn))"));
  }
  std::string response;
  const PolyplugByteSink sink{&response, [](void* context, const uint8_t* data, size_t len) {
                                static_cast<std::string*>(context)->append(
                                    reinterpret_cast<const char*>(data), len);
                              }};
  PolyplugAbiError error;
  {
    // Marked for the crash record: a bundle that dies in here is blamed (--supervise).
    BundleCodeScope calling(BundleActivity::kInvoke, nullptr,
                            reinterpret_cast<const void*>(iface.invoke), method);
    error = iface.invoke(
        iface.user_data, instance, PolyplugStringView{method.data(), method.size()},
        PolyplugBytesView{reinterpret_cast<const uint8_t*>(request.data()), request.size()}, &sink);
  }
  if (error.code == POLYPLUG_ABI_OK) return response;
  if (error.code == POLYPLUG_ABI_FUNCTION_NOT_AVAILABLE) {
    return MakeError(ErrorReason::kMethodNotFound, absl::StrCat(label, " has no method \"", method,
                                                                "\": ", DescribeAbiError(error)));
  }
  return MakeError(ErrorReason::kCallFailed, absl::StrCat("method \"", method, "\" of ", label,
                                                          " failed: ", DescribeAbiError(error)));
}

uint64_t Runtime::Impl::LiveInstancesOf(uint64_t bundle_id) {
  uint64_t total = 0;
  const std::vector<ContractEntry> entries = runtime_->registry_.ListBundle(bundle_id);
  std::lock_guard<std::mutex> lock(instances_mu_);
  for (const ContractEntry& e : entries) {
    if (auto it = instance_counts_.find(e.contract_id); it != instance_counts_.end())
      total += it->second;
  }
  return total;
}

void Runtime::Impl::ForgetInstances(const std::vector<uint64_t>& contract_ids) {
  std::lock_guard<std::mutex> lock(instances_mu_);
  for (uint64_t id : contract_ids) instance_counts_.erase(id);
}

}  // namespace polyplug::core
