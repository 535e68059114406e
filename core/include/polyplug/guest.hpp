// polyplug/guest.hpp: header-only helper for writing a native bundle in C++20.
//
// A bundle built with this header is a few lines:
//
//   #include "polyplug/guest.hpp"
//
//   namespace guest = polyplug::guest;
//
//   void Init(guest::Registrar& registrar) {
//     registrar.Contract<int64_t>("test.counter", {1, 0, 0})  // state: one int64_t per instance
//         .Function(0, [](const guest::NativeCall<int64_t>&) { return int32_t{1}; })
//         .Method("echo", [](int64_t*, std::string_view request) {
//           return std::string(request);
//         });
//   }
//
//   POLYPLUG_BUNDLE(Init);
//
// POLYPLUG_BUNDLE exports polyplug_abi_version and polyplug_init. polyplug_init runs Init,
// then registers every contract Init declared, in declaration order.
//
// Depends only on polyplug/abi.h and the standard library.
//
// Errors and exceptions
//   Exceptions never cross the C boundary. Every entry point this header generates
//   (polyplug_init, create_instance, destroy_instance, invoke and each wrapped native
//   function) catches everything:
//     - guest::Error(code, message) becomes a PolyplugAbiError with that code. Use it for
//       expected failures such as bad arguments or bundle-defined codes >= 256.
//     - any other std::exception becomes POLYPLUG_ABI_PANIC with e.what() as the message.
//     - anything else becomes POLYPLUG_ABI_PANIC, "unknown exception".
//   The message is copied into a per-thread buffer owned by this bundle. It stays valid
//   until this bundle reports its next error on the same thread, which is what abi.h
//   asks for. Messages longer than kMaxErrorMessageBytes are truncated. The buffer is a plain
//   char array, not a thread_local std::string, for a reason: a thread_local with a
//   destructor registers a per-thread exit hook in glibc, and glibc will not unmap a
//   library while any thread still has such a hook pending. Every reload would leave the
//   old image mapped until the thread that once reported an error exits.
//   The RawFunction escape hatch is the one exception: it is registered as given and
//   has no try/catch around it.
//
// Threading
//   The host may call functions, methods, create_instance and destroy_instance from any
//   thread, and may call them on one instance from several threads at once. This header
//   adds no locking. State shared between calls (an instance's state, a global) must be
//   protected by the bundle, e.g. with std::atomic_ref or a mutex inside the state type.
//   polyplug_init runs once per loaded image, on the thread that loads the bundle, and
//   nothing else of the bundle runs until it returns.
//
// Ownership and lifetime
//   - The records Init declares (names, function tables, methods, factories) live in
//     static storage of this library. They are freed when the host closes the library,
//     and the host keeps them in use until then. Registrar and ContractBuilder are only
//     views of those records, and the builders stop working once init has returned.
//   - An instance's state is created by the contract's factory from the args bytes and
//     deleted (plain `delete`) by destroy_instance. That happens exactly once per
//     successfully created instance. A stateless contract (Contract<void>, or a factory
//     returning nullptr) yields data == NULL.
//   - Strings and byte views the host passes in are valid only during the call. Copy
//     what you keep.
//   - Host (see host()) wraps the HostApi table given to polyplug_init. That table
//     outlives the bundle.
//
// Rules across reloads (see docs/WRITING_BUNDLES.md)
//   - Each load or reload dlopens a fresh private copy of the library, so every global
//     and static starts again from its initial value. No static state survives a
//     reload, and none should be expected to.
//   - Whoever created instances of a bundle's contracts destroys them when the PREPARING
//     phase of its reload arrives (or UNLOADING before an unload), while the old code is
//     still mapped. The runtime warns about instances still alive at that point. Nothing
//     outside an instance should point into its state, and nothing should need the state
//     after destroy_instance.
//   - Another bundle's interface pointers and instances are valid only until that
//     provider is reloaded or unloaded, and this bundle is not told when that happens.
//     Either resolve, create, use and destroy within one call (Host::Lookup +
//     Host::Create), or keep only a PolyplugGuestContractHandle (it survives reloads)
//     and resolve it again on each call.
//   - Never hand a pointer to this bundle's code or data (a function pointer, a
//     std::function, a state pointer) to another bundle or the host to keep. After an
//     unload it would point into an unmapped image.
//   - Build with -fno-gnu-unique (polyplug_add_bundle does this). Without it, GCC marks
//     static locals of inline functions and static members of templates STB_GNU_UNIQUE.
//     glibc then marks the library undeletable, so dlclose becomes a no-op and the old
//     image and its statics stay in the process. Hidden visibility does not avoid it,
//     because libstdc++ templates keep default visibility: std::to_string's digit table
//     alone is enough.
#ifndef POLYPLUG_GUEST_HPP_
#define POLYPLUG_GUEST_HPP_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "polyplug/abi.h"
#include "polyplug/identity.hpp"

namespace polyplug::guest {

// ---------------------------------------------------------------------------------------
// Identity hashing (polyplug/identity.hpp), re-exported for bundle code.

using ::polyplug::BundleId;
using ::polyplug::Fnv1a64;
using ::polyplug::GuestContractId;
using ::polyplug::HostContractId;
using ::polyplug::kFnvOffsetBasis;
using ::polyplug::kFnvPrime;

// Golden values from polyplug's identity tests.
static_assert(Fnv1a64("") == kFnvOffsetBasis);
static_assert(BundleId("my-bundle") == 0xfe6226876e3a35b2ULL);
static_assert(BundleId("reload_plugin_v1") == 16808897324254478442ULL);
static_assert(GuestContractId("reload.test", 1) == 4871652249423578378ULL);
static_assert(Fnv1a64("image.decode@1") == 0xa1ba05dd7da18569ULL);

// ---------------------------------------------------------------------------------------
// Errors.

// Throw from init, a factory, a function or a method to fail with a specific code.
// Bundle-defined codes start at POLYPLUG_ABI_FIRST_BUNDLE_DEFINED (256). Code OK is
// reported as POLYPLUG_ABI_GENERIC, because a failure must not read as success.
class Error : public std::runtime_error {
 public:
  Error(PolyplugAbiErrorCode code, const std::string& message)
      : std::runtime_error(message), code_(code) {}

  // Copies an error returned through the ABI (whose message the returner owns).
  static Error FromAbi(const PolyplugAbiError& error) {
    std::string message;
    if (error.message.ptr != nullptr) message.assign(error.message.ptr, error.message.len);
    if (message.empty()) message = "error code " + std::to_string(error.code);
    return Error(error.code, message);
  }

  PolyplugAbiErrorCode code() const noexcept { return code_; }

 private:
  PolyplugAbiErrorCode code_;
};

// Longest error message a bundle reports; longer ones end in "...".
inline constexpr size_t kMaxErrorMessageBytes = 1024;

namespace detail {

inline PolyplugAbiError Ok() noexcept { return PolyplugAbiError{POLYPLUG_ABI_OK, {nullptr, 0}}; }

// The per-thread buffer behind every error message this bundle returns. It is trivially
// destructible so that it registers no thread-exit hook (see "Errors" above).
inline char* ErrorBuffer() noexcept {
  thread_local char buffer[kMaxErrorMessageBytes];
  return buffer;
}

// Builds an error whose message lives in ErrorBuffer(). `message` may itself point into
// the buffer.
inline PolyplugAbiError MakeAbiError(PolyplugAbiErrorCode code, std::string_view message) noexcept {
  if (code == POLYPLUG_ABI_OK) code = POLYPLUG_ABI_GENERIC;
  if (message.empty()) return PolyplugAbiError{code, {nullptr, 0}};
  char* buffer = ErrorBuffer();
  size_t len = message.size();
  if (len > kMaxErrorMessageBytes) {
    constexpr std::string_view kEllipsis = "...";
    len = kMaxErrorMessageBytes;
    std::memmove(buffer, message.data(), len - kEllipsis.size());
    std::memcpy(buffer + len - kEllipsis.size(), kEllipsis.data(), kEllipsis.size());
  } else {
    std::memmove(buffer, message.data(), len);
  }
  return PolyplugAbiError{code, {buffer, len}};
}

// Call only inside a catch block: turns the exception being handled into an ABI error.
inline PolyplugAbiError CurrentExceptionToAbiError() noexcept {
  try {
    throw;
  } catch (const Error& e) {
    return MakeAbiError(e.code(), e.what());
  } catch (const std::exception& e) {
    return MakeAbiError(POLYPLUG_ABI_PANIC, e.what());
  } catch (...) {
    return MakeAbiError(POLYPLUG_ABI_PANIC, "unknown exception");
  }
}

inline std::string_view ToStringView(PolyplugStringView view) {
  if (view.ptr == nullptr) {
    if (view.len != 0) throw Error(POLYPLUG_ABI_INVALID_POINTER, "string view with NULL ptr");
    return {};
  }
  return std::string_view(view.ptr, view.len);
}

inline std::string_view ToStringView(PolyplugBytesView view) {
  if (view.ptr == nullptr) {
    if (view.len != 0) throw Error(POLYPLUG_ABI_INVALID_POINTER, "bytes view with NULL ptr");
    return {};
  }
  return std::string_view(reinterpret_cast<const char*>(view.ptr), view.len);
}

inline PolyplugStringView ToAbi(std::string_view text) noexcept {
  return PolyplugStringView{text.empty() ? nullptr : text.data(), text.size()};
}

inline PolyplugBytesView ToAbiBytes(std::string_view bytes) noexcept {
  return PolyplugBytesView{bytes.empty() ? nullptr : reinterpret_cast<const uint8_t*>(bytes.data()),
                           bytes.size()};
}

// The HostApi given to polyplug_init. It is written once during init, before any
// contract of this image is visible, and only read afterwards.
inline constinit std::atomic<const PolyplugHostApi*> g_host{nullptr};

}  // namespace detail

// ---------------------------------------------------------------------------------------
// Host: calls from the bundle into the runtime.

class Instance;

// A view of the HostApi table. It is cheap to copy, and every member is safe to call
// from any thread. Lookups never block on a reload.
class Host {
 public:
  constexpr Host() = default;
  explicit constexpr Host(const PolyplugHostApi* api) : api_(api) {}

  const PolyplugHostApi* api() const noexcept { return api_; }
  explicit operator bool() const noexcept { return api_ != nullptr; }

  // A handle with index POLYPLUG_NULL_HANDLE_INDEX when there is no provider with a
  // major >= min_major. Inside polyplug_init the same happens for contracts the
  // manifest does not declare as dependencies.
  PolyplugGuestContractHandle Find(uint64_t contract_id, uint32_t min_major) const noexcept {
    if (api_ == nullptr || api_->find_guest_contract == nullptr) return NullHandle();
    return api_->find_guest_contract(api_, contract_id, min_major);
  }
  PolyplugGuestContractHandle Find(std::string_view contract_name, uint32_t major) const noexcept {
    return Find(GuestContractId(contract_name, major), major);
  }

  static constexpr PolyplugGuestContractHandle NullHandle() noexcept {
    return PolyplugGuestContractHandle{POLYPLUG_NULL_HANDLE_INDEX, 0};
  }
  static constexpr bool IsNull(PolyplugGuestContractHandle handle) noexcept {
    return handle.index == POLYPLUG_NULL_HANDLE_INDEX;
  }

  // NULL when the handle is null, invalid or stale. The pointer stays valid until the
  // provider is reloaded or unloaded. Do not keep it beyond the current call.
  const PolyplugGuestContractInterface* Resolve(PolyplugGuestContractHandle handle) const noexcept {
    if (api_ == nullptr || api_->resolve_guest_contract == nullptr || IsNull(handle)) {
      return nullptr;
    }
    return api_->resolve_guest_contract(api_, handle);
  }

  // Find + Resolve; NULL when absent.
  const PolyplugGuestContractInterface* Lookup(std::string_view contract_name,
                                               uint32_t major) const noexcept {
    return Resolve(Find(contract_name, major));
  }

  // Counted creation through the host. Throws Error with the provider's code and
  // message. The caller must DestroyInstance exactly once; prefer Create().
  PolyplugGuestContractInstance CreateInstance(const PolyplugGuestContractInterface& iface,
                                               std::string_view args = {}) const {
    if (api_ == nullptr || api_->create_guest_instance == nullptr) {
      throw Error(POLYPLUG_ABI_INVALID_POINTER, "host has no create_guest_instance");
    }
    PolyplugGuestContractInstance instance{nullptr, 0};
    const PolyplugAbiError err =
        api_->create_guest_instance(api_, &iface, detail::ToAbiBytes(args), &instance);
    if (err.code != POLYPLUG_ABI_OK) throw Error::FromAbi(err);
    return instance;
  }

  void DestroyInstance(const PolyplugGuestContractInterface& iface,
                       PolyplugGuestContractInstance instance) const noexcept {
    if (api_ != nullptr && api_->destroy_guest_instance != nullptr) {
      api_->destroy_guest_instance(api_, &iface, instance);
    }
  }

  // RAII form of CreateInstance. The Instance must not outlive the current call (see
  // "Rules across reloads").
  Instance Create(const PolyplugGuestContractInterface& iface, std::string_view args = {}) const;

  // Runs `method` through the provider's message-style invoke entry and returns the
  // response bytes. Throws Error with the provider's code, or
  // POLYPLUG_ABI_FUNCTION_NOT_AVAILABLE when the contract has no invoke entry.
  std::string Invoke(const PolyplugGuestContractInterface& iface,
                     PolyplugGuestContractInstance instance, std::string_view method,
                     std::string_view request) const {
    if (iface.invoke == nullptr) {
      throw Error(POLYPLUG_ABI_FUNCTION_NOT_AVAILABLE,
                  "contract " + std::to_string(iface.contract_id) + " has no invoke entry");
    }
    ResponseCollector collector;
    const PolyplugByteSink sink{&collector, &ResponseCollector::Write};
    const PolyplugAbiError err = iface.invoke(iface.user_data, instance, detail::ToAbi(method),
                                              detail::ToAbiBytes(request), &sink);
    if (err.code != POLYPLUG_ABI_OK) throw Error::FromAbi(err);
    if (collector.failed) throw std::bad_alloc();
    return std::move(collector.bytes);
  }

  // Calls functions[fn_id] natively. args and out are the contract's structs. Throws
  // Error with the code the function set.
  void Call(const PolyplugGuestContractInterface& iface, PolyplugGuestContractInstance instance,
            uint32_t fn_id, const void* args, void* out) const {
    if (fn_id >= iface.function_count || iface.functions == nullptr ||
        iface.functions[fn_id] == nullptr) {
      throw Error(POLYPLUG_ABI_FUNCTION_NOT_AVAILABLE,
                  "contract " + std::to_string(iface.contract_id) + " has no function " +
                      std::to_string(fn_id));
    }
    PolyplugAbiError err = detail::Ok();
    iface.functions[fn_id](instance, args, out, &err);
    if (err.code != POLYPLUG_ABI_OK) throw Error::FromAbi(err);
  }

  // Unknown levels are treated as ERROR by the host.
  void Log(PolyplugLogLevel level, std::string_view scope,
           std::string_view message) const noexcept {
    if (api_ != nullptr && api_->log != nullptr) {
      api_->log(api_, level, detail::ToAbi(scope), detail::ToAbi(message));
    }
  }

  // Bumped on every registry change (load, reload swap, unload). Compare it with a
  // remembered value to know when a handle must be resolved again.
  uint64_t RegistryRevision() const noexcept {
    if (api_ == nullptr || api_->registry_revision == nullptr) return 0;
    return api_->registry_revision(api_);
  }

 private:
  // The sink handed to another bundle's invoke. It must not throw into the caller.
  struct ResponseCollector {
    std::string bytes;
    bool failed = false;

    static void Write(void* context, const uint8_t* data, size_t len) noexcept {
      auto* self = static_cast<ResponseCollector*>(context);
      if (self->failed || len == 0) return;
      if (data == nullptr) {
        self->failed = true;
        return;
      }
      try {
        self->bytes.append(reinterpret_cast<const char*>(data), len);
      } catch (...) {
        self->failed = true;
      }
    }
  };

  const PolyplugHostApi* api_ = nullptr;
};

// The host this image was initialised with. Before polyplug_init it is a null Host and
// every call on it does nothing or fails.
inline Host host() noexcept { return Host(detail::g_host.load(std::memory_order_acquire)); }

// One instance of another contract, created through the host and destroyed (through the
// host) when this object is destroyed. It is move-only. Keep it within one call: the
// provider's instances are destroyed when it reloads, and this bundle is not told.
class Instance {
 public:
  Instance() = default;
  Instance(Host host, const PolyplugGuestContractInterface* iface,
           PolyplugGuestContractInstance instance) noexcept
      : host_(host), iface_(iface), instance_(instance) {}
  ~Instance() { Reset(); }

  Instance(Instance&& other) noexcept
      : host_(other.host_),
        iface_(std::exchange(other.iface_, nullptr)),
        instance_(other.instance_) {}
  Instance& operator=(Instance&& other) noexcept {
    if (this != &other) {
      Reset();
      host_ = other.host_;
      iface_ = std::exchange(other.iface_, nullptr);
      instance_ = other.instance_;
    }
    return *this;
  }
  Instance(const Instance&) = delete;
  Instance& operator=(const Instance&) = delete;

  explicit operator bool() const noexcept { return iface_ != nullptr; }
  const PolyplugGuestContractInterface* iface() const noexcept { return iface_; }
  const PolyplugGuestContractInstance& get() const noexcept { return instance_; }

  std::string Invoke(std::string_view method, std::string_view request = {}) const {
    return host_.Invoke(Checked(), instance_, method, request);
  }
  void Call(uint32_t fn_id, const void* args, void* out) const {
    host_.Call(Checked(), instance_, fn_id, args, out);
  }
  // Calls a function whose out is a single trivially copyable T.
  template <class T>
  T Call(uint32_t fn_id, const void* args = nullptr) const {
    static_assert(std::is_trivially_copyable_v<T>);
    T out{};
    Call(fn_id, args, &out);
    return out;
  }

  void Reset() noexcept {
    if (iface_ != nullptr) host_.DestroyInstance(*iface_, instance_);
    iface_ = nullptr;
  }

 private:
  const PolyplugGuestContractInterface& Checked() const {
    if (iface_ == nullptr) throw Error(POLYPLUG_ABI_INVALID_ARGUMENT, "empty Instance");
    return *iface_;
  }

  Host host_;
  const PolyplugGuestContractInterface* iface_ = nullptr;
  PolyplugGuestContractInstance instance_{nullptr, 0};
};

inline Instance Host::Create(const PolyplugGuestContractInterface& iface,
                             std::string_view args) const {
  return Instance(*this, &iface, CreateInstance(iface, args));
}

// ---------------------------------------------------------------------------------------
// Native functions.

// What a wrapped native function sees: the instance, and the contract-specific args
// and out pointers. State is the contract's state type (void for a stateless contract).
template <class State>
class NativeCall {
 public:
  NativeCall(PolyplugGuestContractInstance instance, const void* args, void* out) noexcept
      : instance_(instance), args_(args), out_(out) {}

  const PolyplugGuestContractInstance& instance() const noexcept { return instance_; }
  // The instance's state, or nullptr for a stateless instance.
  State* state() const noexcept { return static_cast<State*>(instance_.data); }
  // The state, or Error(POLYPLUG_ABI_INVALID_ARGUMENT) when the instance is stateless.
  template <class S = State>
  requires(!std::is_void_v<S>) S& RequireState() const {
    if (instance_.data == nullptr) {
      throw Error(POLYPLUG_ABI_INVALID_ARGUMENT, "this function needs a stateful instance");
    }
    return *state();
  }

  const void* raw_args() const noexcept { return args_; }
  void* raw_out() const noexcept { return out_; }

  // args as a T, or Error(POLYPLUG_ABI_INVALID_ARGUMENT) when args is NULL.
  template <class T>
  const T& Args() const {
    if (args_ == nullptr) throw Error(POLYPLUG_ABI_INVALID_ARGUMENT, "args is NULL");
    return *static_cast<const T*>(args_);
  }

  // Copies value to *out, or throws Error(POLYPLUG_ABI_INVALID_ARGUMENT) when out is NULL.
  template <class T>
  void Write(const T& value) const {
    static_assert(std::is_trivially_copyable_v<T>, "out must be a trivially copyable type");
    if (out_ == nullptr) throw Error(POLYPLUG_ABI_INVALID_ARGUMENT, "out is NULL");
    std::memcpy(out_, &value, sizeof(T));
  }

 private:
  PolyplugGuestContractInstance instance_;
  const void* args_;
  void* out_;
};

namespace detail {

// Runs Body (a stateless callable) as a native function with everything caught. A
// non-void result is written to *out, and then out == NULL fails before Body runs.
template <class State, class Body>
void RunNative(PolyplugGuestContractInstance instance, const void* args, void* out,
               PolyplugAbiError* out_err, const Body& body) noexcept {
  PolyplugAbiError result = Ok();
  try {
    const NativeCall<State> call(instance, args, out);
    using Result = std::invoke_result_t<const Body&, const NativeCall<State>&>;
    if constexpr (std::is_void_v<Result>) {
      body(call);
    } else {
      // Checked first so that a call that cannot deliver its result has no effect.
      if (out == nullptr) throw Error(POLYPLUG_ABI_INVALID_ARGUMENT, "out is NULL");
      call.Write(body(call));
    }
  } catch (...) {
    result = CurrentExceptionToAbiError();
  }
  if (out_err != nullptr) *out_err = result;
}

// A native function table needs plain function pointers with no user data, so each
// wrapped callable gets its own instantiation. This is why Function() takes only
// captureless lambdas.
template <class State, class Lambda>
void LambdaThunk(PolyplugGuestContractInstance instance, const void* args, void* out,
                 PolyplugAbiError* out_err) noexcept {
  RunNative<State>(instance, args, out, out_err, Lambda{});
}

template <class State, auto Fn>
void FunctionThunk(PolyplugGuestContractInstance instance, const void* args, void* out,
                   PolyplugAbiError* out_err) noexcept {
  RunNative<State>(instance, args, out, out_err,
                   [](const NativeCall<State>& call) { return Fn(call); });
}

// ---------------------------------------------------------------------------------------
// Contract records: what Init declares, kept in static storage until the library closes.

using MethodFn = std::function<std::string(void* state, std::string_view request)>;

struct ContractRecord {
  std::string name;  // bare contract name, e.g. "image.decode"
  PolyplugVersion version{};
  uint64_t contract_id = 0;
  std::string label;        // "name@major", for messages
  std::string plugin_name;  // the descriptor's implementation name
  std::vector<PolyplugNativeFunction> functions;
  // Type-erased by ContractBuilder<State>. An empty `create` makes every instance
  // stateless. `needs_factory` is set for a State that cannot be built by default.
  std::function<void*(std::string_view args)> create;
  void (*destroy)(void* state) = nullptr;
  bool needs_factory = false;
  std::map<std::string, MethodFn, std::less<>> methods;
  // Registered by address: the host copies it, but user_data and the function table
  // must stay where they are until the library is closed.
  PolyplugGuestContractInterface iface{};
  bool registered = false;
};

// Every record this image declared. A function-local static, so it is built on first use
// and destroyed when the library is closed.
inline std::vector<std::unique_ptr<ContractRecord>>& Records() {
  static std::vector<std::unique_ptr<ContractRecord>> records;
  return records;
}

inline PolyplugAbiError CreateThunk(void* user_data, const PolyplugHostApi* /*host*/,
                                    PolyplugBytesView args,
                                    PolyplugGuestContractInstance* out) noexcept {
  if (out == nullptr) {
    return MakeAbiError(POLYPLUG_ABI_INVALID_POINTER, "create_instance: out is NULL");
  }
  const auto* record = static_cast<const ContractRecord*>(user_data);
  out->data = nullptr;
  if (record == nullptr) {
    return MakeAbiError(POLYPLUG_ABI_INVALID_POINTER, "create_instance: user_data is NULL");
  }
  out->contract_id = record->contract_id;
  try {
    if (record->create) out->data = record->create(ToStringView(args));
    return Ok();
  } catch (...) {
    return CurrentExceptionToAbiError();
  }
}

inline void DestroyThunk(void* user_data, const PolyplugHostApi* host,
                         PolyplugGuestContractInstance instance) noexcept {
  const auto* record = static_cast<const ContractRecord*>(user_data);
  if (record == nullptr || instance.data == nullptr || record->destroy == nullptr) return;
  try {
    record->destroy(instance.data);
  } catch (...) {
    // destroy_instance has no error channel; the log is the only way to report this.
    const PolyplugAbiError err = CurrentExceptionToAbiError();
    Host(host).Log(
        POLYPLUG_LOG_ERROR, record->label,
        std::string_view(err.message.ptr == nullptr ? "" : err.message.ptr, err.message.len));
  }
}

inline PolyplugAbiError InvokeThunk(void* user_data, PolyplugGuestContractInstance instance,
                                    PolyplugStringView method, PolyplugBytesView request,
                                    const PolyplugByteSink* response) noexcept {
  const auto* record = static_cast<const ContractRecord*>(user_data);
  if (record == nullptr) {
    return MakeAbiError(POLYPLUG_ABI_INVALID_POINTER, "invoke: user_data is NULL");
  }
  if (response == nullptr || response->write == nullptr) {
    return MakeAbiError(POLYPLUG_ABI_INVALID_POINTER, "invoke: response sink is NULL");
  }
  try {
    const std::string_view name = ToStringView(method);
    if (instance.contract_id != 0 && instance.contract_id != record->contract_id) {
      throw Error(POLYPLUG_ABI_INVALID_ARGUMENT,
                  record->label + ": invoke got an instance of another contract");
    }
    const auto it = record->methods.find(name);
    if (it == record->methods.end()) {
      throw Error(POLYPLUG_ABI_FUNCTION_NOT_AVAILABLE,
                  record->label + ": unknown method \"" + std::string(name) + "\"");
    }
    const std::string bytes = it->second(instance.data, ToStringView(request));
    if (!bytes.empty()) {
      response->write(response->context, reinterpret_cast<const uint8_t*>(bytes.data()),
                      bytes.size());
    }
    return Ok();
  } catch (...) {
    return CurrentExceptionToAbiError();
  }
}

inline void RegisterRecord(const PolyplugHostApi* host, ContractRecord& record) {
  if (record.registered) return;
  if (record.needs_factory) {
    throw Error(POLYPLUG_ABI_INVALID_ARGUMENT,
                record.label +
                    ": the state type is not default-constructible and not "
                    "constructible from std::string_view; call Factory()");
  }
  for (size_t i = 0; i < record.functions.size(); ++i) {
    if (record.functions[i] == nullptr) {
      throw Error(POLYPLUG_ABI_INVALID_ARGUMENT, record.label + ": function " + std::to_string(i) +
                                                     " is missing; the table must have no gaps");
    }
  }
  if (host == nullptr || host->register_guest_contract == nullptr) {
    throw Error(POLYPLUG_ABI_INVALID_POINTER, "host has no register_guest_contract");
  }
  PolyplugGuestContractInterface& iface = record.iface;
  iface = PolyplugGuestContractInterface{};  // also zeroes `reserved`
  iface.contract_id = record.contract_id;
  iface.contract_version = record.version;
  iface.dispatch_type = POLYPLUG_DISPATCH_NATIVE;
  iface.user_data = &record;
  iface.create_instance = &CreateThunk;
  iface.destroy_instance = &DestroyThunk;
  iface.function_count = static_cast<uint32_t>(record.functions.size());
  iface.functions = record.functions.empty() ? nullptr : record.functions.data();
  // No methods: the contract cannot be invoked message-style at all.
  iface.invoke = record.methods.empty() ? nullptr : &InvokeThunk;

  const PolyplugPluginDescriptor descriptor{ToAbi(record.plugin_name), ToAbi(record.name),
                                            record.version};
  PolyplugAbiError err = Ok();
  host->register_guest_contract(host, &descriptor, &iface, &err);
  if (err.code != POLYPLUG_ABI_OK) throw Error::FromAbi(err);
  record.registered = true;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------
// Declaring contracts.

// Declares one contract. Returned by Registrar::Contract and used only inside Init;
// every member returns *this for chaining. State is the per-instance state type, or
// void for a stateless contract. Declaring anything after the contract was registered
// throws Error.
template <class State>
class ContractBuilder {
 public:
  ContractBuilder(const PolyplugHostApi* host, detail::ContractRecord* record) noexcept
      : host_(host), record_(record) {}

  uint64_t contract_id() const noexcept { return record_->contract_id; }

  // The descriptor's implementation name (free text). Defaults to the bundle name.
  ContractBuilder& PluginName(std::string_view name) {
    Mutable().plugin_name = std::string(name);
    return *this;
  }

  // Builds an instance's state from the create_instance args bytes. `factory` is called
  // as factory(std::string_view args) and returns std::unique_ptr<State>; nullptr
  // makes that instance stateless. The default factory uses State(std::string_view)
  // when that exists, otherwise State().
  template <class F>
  ContractBuilder& Factory(F factory) requires(!std::is_void_v<State>) {
    static_assert(std::is_invocable_r_v<std::unique_ptr<State>, const F&, std::string_view>,
                  "Factory: expected std::unique_ptr<State>(std::string_view args) const");
    detail::ContractRecord& record = Mutable();
    record.create = [factory = std::move(factory)](std::string_view args) -> void* {
      std::unique_ptr<State> state = factory(args);
      return state.release();
    };
    record.needs_factory = false;
    return *this;
  }

  // functions[index] = `body`, called as body(const NativeCall<State>&). `body` must be
  // a captureless lambda, because the ABI's function table has no user data. A non-void
  // result is written to *out (it must be trivially copyable); such a function fails
  // with INVALID_ARGUMENT without running when out is NULL. Throwing guest::Error
  // sets that code, and any other exception sets POLYPLUG_ABI_PANIC.
  template <class F>
  ContractBuilder& Function(uint32_t index, F /*body*/) {
    static_assert(std::is_empty_v<F> && std::is_default_constructible_v<F>,
                  "Function(index, f): f must be a captureless lambda; use Function<&fn>(index) "
                  "for a named function");
    static_assert(std::is_invocable_v<const F&, const NativeCall<State>&>,
                  "Function: expected a callable taking const NativeCall<State>&");
    return SetFunction(index, &detail::LambdaThunk<State, F>);
  }

  // Same, for a named function: Function<&MyFunction>(index).
  template <auto Fn>
  ContractBuilder& Function(uint32_t index) {
    static_assert(std::is_invocable_v<decltype(Fn), const NativeCall<State>&>,
                  "Function<Fn>: expected a function taking const NativeCall<State>&");
    return SetFunction(index, &detail::FunctionThunk<State, Fn>);
  }

  // functions[index] = `fn` as is, with no exception handling around it. The function
  // itself must not let an exception escape.
  ContractBuilder& RawFunction(uint32_t index, PolyplugNativeFunction fn) {
    if (fn == nullptr) {
      throw Error(POLYPLUG_ABI_INVALID_ARGUMENT, record_->label + ": RawFunction got NULL");
    }
    return SetFunction(index, fn);
  }

  // A method of the message-style invoke entry. Called as method(State* state,
  // std::string_view request), or method(std::string_view request), and returns the
  // response bytes, e.g. std::string. The bytes are opaque to polyplug: text, JSON or
  // protobuf all work. state is nullptr for a stateless instance. An unknown method
  // fails with POLYPLUG_ABI_FUNCTION_NOT_AVAILABLE. The callable may capture and lives
  // as long as the library. It is called through const and possibly from several
  // threads at once, so it must not mutate its captures unsynchronised.
  template <class F>
  ContractBuilder& Method(std::string_view name, F method) {
    constexpr bool kTakesState = std::is_invocable_v<const F&, State*, std::string_view>;
    static_assert(kTakesState || std::is_invocable_v<const F&, std::string_view>,
                  "Method: expected std::string(State*, std::string_view request) or "
                  "std::string(std::string_view request)");
    detail::ContractRecord& record = Mutable();
    if (record.methods.find(name) != record.methods.end()) {
      throw Error(POLYPLUG_ABI_INVALID_ARGUMENT,
                  record.label + ": method \"" + std::string(name) + "\" declared twice");
    }
    record.methods.emplace(std::string(name),
                           [method = std::move(method)](void* state, std::string_view request) {
                             if constexpr (kTakesState) {
                               return std::string(method(static_cast<State*>(state), request));
                             } else {
                               (void)state;
                               return std::string(method(request));
                             }
                           });
    return *this;
  }

  // Registers the contract now instead of after Init returns. Throws Error with the
  // host's code if the host refuses it.
  ContractBuilder& Register() {
    detail::RegisterRecord(host_, *record_);
    return *this;
  }

 private:
  detail::ContractRecord& Mutable() {
    if (record_->registered) {
      throw Error(POLYPLUG_ABI_INVALID_ARGUMENT, record_->label + ": already registered");
    }
    return *record_;
  }

  ContractBuilder& SetFunction(uint32_t index, PolyplugNativeFunction fn) {
    detail::ContractRecord& record = Mutable();
    if (index >= record.functions.size()) record.functions.resize(size_t{index} + 1, nullptr);
    if (record.functions[index] != nullptr) {
      throw Error(POLYPLUG_ABI_INVALID_ARGUMENT,
                  record.label + ": function " + std::to_string(index) + " declared twice");
    }
    record.functions[index] = fn;
    return *this;
  }

  const PolyplugHostApi* host_;
  detail::ContractRecord* record_;
};

// Handed to the bundle's init function. It is valid only during polyplug_init.
class Registrar {
 public:
  Registrar(const PolyplugHostApi* host, const PolyplugBundleInitContext& context) noexcept
      : host_(host), context_(context) {}
  Registrar(const Registrar&) = delete;
  Registrar& operator=(const Registrar&) = delete;

  // What the host says about the bundle being loaded. The views are valid only during
  // init; copy them to keep them.
  uint64_t bundle_id() const noexcept { return context_.bundle_id; }
  std::string_view bundle_name() const { return detail::ToStringView(context_.bundle_name); }
  std::string_view bundle_path() const { return detail::ToStringView(context_.bundle_path); }
  PolyplugVersion bundle_version() const noexcept { return context_.bundle_version; }
  const PolyplugBundleInitContext& context() const noexcept { return context_; }

  // The host, e.g. to look up a declared dependency. During init, contracts the
  // manifest does not declare as dependencies are reported as absent.
  Host host() const noexcept { return Host(host_); }

  // Declares contract `name` (bare, e.g. "image.decode") at `version`; its id is
  // GuestContractId(name, version.major). The manifest's `provides` must list exactly
  // the contracts a bundle registers, e.g. "image.decode@1". Contracts are registered
  // after Init returns, in declaration order, unless ContractBuilder::Register() was
  // called earlier.
  template <class State = void>
  ContractBuilder<State> Contract(std::string_view name, PolyplugVersion version) {
    static_assert(std::is_void_v<State> || std::is_object_v<State>,
                  "State must be void or an object type");
    if (name.empty()) throw Error(POLYPLUG_ABI_INVALID_ARGUMENT, "contract name is empty");
    auto record = std::make_unique<detail::ContractRecord>();
    record->name = std::string(name);
    record->version = version;
    record->contract_id = GuestContractId(name, version.major);
    record->label = record->name + "@" + std::to_string(version.major);
    record->plugin_name = bundle_name().empty() ? record->name : std::string(bundle_name());
    if constexpr (!std::is_void_v<State>) {
      record->destroy = [](void* state) { delete static_cast<State*>(state); };
      if constexpr (std::is_constructible_v<State, std::string_view>) {
        record->create = [](std::string_view args) -> void* { return new State(args); };
      } else if constexpr (std::is_default_constructible_v<State>) {
        record->create = [](std::string_view) -> void* { return new State(); };
      } else {
        record->needs_factory = true;
      }
    }
    std::vector<std::unique_ptr<detail::ContractRecord>>& records = detail::Records();
    records.push_back(std::move(record));
    declared_.push_back(records.back().get());
    return ContractBuilder<State>(host_, records.back().get());
  }

  // Registers every declared contract not registered yet. polyplug_init calls this
  // after Init returns.
  void RegisterAll() {
    for (detail::ContractRecord* record : declared_) detail::RegisterRecord(host_, *record);
  }

 private:
  const PolyplugHostApi* host_;
  const PolyplugBundleInitContext& context_;
  std::vector<detail::ContractRecord*> declared_;
};

using InitFunction = void (*)(Registrar& registrar);

namespace detail {

// The body of the exported polyplug_init.
inline PolyplugAbiError RunInit(const PolyplugHostApi* host, const PolyplugBundleInitContext* ctx,
                                InitFunction init) noexcept {
  if (host == nullptr || ctx == nullptr) {
    return MakeAbiError(POLYPLUG_ABI_INVALID_POINTER, "polyplug_init: host or ctx is NULL");
  }
  g_host.store(host, std::memory_order_release);
  try {
    Registrar registrar(host, *ctx);
    init(registrar);
    registrar.RegisterAll();
    return Ok();
  } catch (...) {
    return CurrentExceptionToAbiError();
  }
}

}  // namespace detail
}  // namespace polyplug::guest

// Exports the two symbols of a native bundle. Use it once per bundle, at global or
// namespace scope, as POLYPLUG_BUNDLE(Init); where Init is a function
// void(polyplug::guest::Registrar&) (or a captureless lambda).
#define POLYPLUG_BUNDLE(init_fn)                                                                  \
  extern "C" POLYPLUG_EXPORT uint32_t polyplug_abi_version(void) { return POLYPLUG_ABI_VERSION; } \
  extern "C" POLYPLUG_EXPORT PolyplugAbiError polyplug_init(                                      \
      const PolyplugHostApi* host, const PolyplugBundleInitContext* ctx) {                        \
    return ::polyplug::guest::detail::RunInit(host, ctx, (init_fn));                              \
  }                                                                                               \
  static_assert(true, "use as POLYPLUG_BUNDLE(init_fn);")

#endif  // POLYPLUG_GUEST_HPP_
