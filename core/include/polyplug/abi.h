/* polyplug/abi.h: the C ABI a bundle is compiled against.
 *
 * Modeled on the polyplug runtime's ABI; docs/WRITING_BUNDLES.md says how to write a bundle
 * against it. Every struct is plain C with a fixed 64-bit layout; strings are UTF-8 views
 * that are never NUL-terminated and are valid only for the duration of the call that
 * carries them. A native bundle exports two symbols:
 *
 *   uint32_t polyplug_abi_version(void);           // must return POLYPLUG_ABI_VERSION
 *   PolyplugAbiError polyplug_init(const PolyplugHostApi* host,
 *                                  const PolyplugBundleInitContext* ctx);
 *
 * Inside polyplug_init the bundle calls host->register_guest_contract once per contract
 * it lists in its manifest's `provides`. Exceptions and unwinding must never cross this
 * boundary: a bundle catches them and returns POLYPLUG_ABI_PANIC. */
#ifndef POLYPLUG_ABI_H_
#define POLYPLUG_ABI_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define POLYPLUG_ABI_VERSION 1u

#if defined(_WIN32)
#define POLYPLUG_EXPORT __declspec(dllexport)
#else
#define POLYPLUG_EXPORT __attribute__((visibility("default")))
#endif

/* A borrowed UTF-8 string; {NULL, 0} means "absent". */
typedef struct PolyplugStringView {
  const char* ptr;
  size_t len;
} PolyplugStringView;

/* A borrowed byte range. */
typedef struct PolyplugBytesView {
  const uint8_t* ptr;
  size_t len;
} PolyplugBytesView;

/* Error codes. 0-255 are the runtime's, 100-199 within that are host contracts, >= 256
 * are bundle-defined. Decoding is total: an unknown value is treated as GENERIC. */
typedef uint32_t PolyplugAbiErrorCode;
enum {
  POLYPLUG_ABI_OK = 0,
  POLYPLUG_ABI_GENERIC = 1,
  POLYPLUG_ABI_BUFFER_TOO_SMALL = 2,
  POLYPLUG_ABI_PANIC = 3,
  POLYPLUG_ABI_NOT_FOUND = 4,
  POLYPLUG_ABI_STALE_HANDLE = 5,
  POLYPLUG_ABI_FUNCTION_NOT_AVAILABLE = 6,
  POLYPLUG_ABI_DUPLICATE_PROVIDER = 7,
  POLYPLUG_ABI_INVALID_POINTER = 8,
  POLYPLUG_ABI_REENTRANT_CALL = 9,
  POLYPLUG_ABI_UNIMPLEMENTED = 10,
  POLYPLUG_ABI_INVALID_ARGUMENT = 11,
  POLYPLUG_ABI_HOST_CONTRACT_NOT_FOUND = 100,
  POLYPLUG_ABI_HOST_CONTRACT_VERSION_MISMATCH = 101,
  POLYPLUG_ABI_HOST_CONTRACT_CALL_FAILED = 102,
  POLYPLUG_ABI_FIRST_BUNDLE_DEFINED = 256
};

/* code == POLYPLUG_ABI_OK means success. The message is owned by whoever returned the
 * error and must stay valid until the receiver has copied it: static storage, or storage
 * the returning bundle keeps until its next call on the same thread. */
typedef struct PolyplugAbiError {
  PolyplugAbiErrorCode code;
  PolyplugStringView message;
} PolyplugAbiError;

typedef struct PolyplugVersion {
  uint32_t major;
  uint32_t minor;
  uint32_t patch;
} PolyplugVersion;

/* A registry slot reference. It survives a hot reload of its provider (same index and
 * generation) and goes stale when the provider is unloaded (the generation moves on). */
typedef struct PolyplugGuestContractHandle {
  uint32_t index;
  uint32_t generation;
} PolyplugGuestContractHandle;

#define POLYPLUG_NULL_HANDLE_INDEX 0xFFFFFFFFu

/* One instance of a contract. data is owned by the bundle (NULL = stateless);
 * contract_id is stamped by the host when the instance is created. */
typedef struct PolyplugGuestContractInstance {
  void* data;
  uint64_t contract_id;
} PolyplugGuestContractInstance;

/* Receives the bytes of an invoke response; may be called several times (appends). */
typedef struct PolyplugByteSink {
  void* context;
  void (*write)(void* context, const uint8_t* data, size_t len);
} PolyplugByteSink;

typedef struct PolyplugHostApi PolyplugHostApi;

/* The native call shape: functions[fn_id](instance, args, out, out_err). args and out
 * point to contract-specific structs agreed between the contract's users. */
typedef void (*PolyplugNativeFunction)(PolyplugGuestContractInstance instance, const void* args,
                                       void* out, PolyplugAbiError* out_err);

typedef uint32_t PolyplugDispatchType;
enum { POLYPLUG_DISPATCH_NATIVE = 0, POLYPLUG_DISPATCH_VIRTUAL_MACHINE = 1 };

/* What a bundle registers for one contract. The host copies the struct at registration;
 * the function pointers and user_data must stay valid until the bundle's library is
 * closed (after unload, or after a hot reload replaced it). */
typedef struct PolyplugGuestContractInterface {
  /* guest_contract_id(name, major): FNV-1a 64 of "guest_contract:<name>@<major>". */
  uint64_t contract_id;
  PolyplugVersion contract_version;
  PolyplugDispatchType dispatch_type; /* only POLYPLUG_DISPATCH_NATIVE is accepted */
  /* Opaque bundle pointer handed back to create/destroy/invoke. */
  void* user_data;
  /* Required. args may be NULL; out->data NULL means a stateless instance. */
  PolyplugAbiError (*create_instance)(void* user_data, const PolyplugHostApi* host,
                                      PolyplugBytesView args, PolyplugGuestContractInstance* out);
  /* Required. Called exactly once per successfully created instance. */
  void (*destroy_instance)(void* user_data, const PolyplugHostApi* host,
                           PolyplugGuestContractInstance instance);
  /* Native dispatch table: every entry below function_count must be non-NULL. */
  uint32_t function_count;
  const PolyplugNativeFunction* functions;
  /* Optional (NULL = the contract cannot be called remotely). Message-style entry for
   * callers in other processes: runs `method` on `instance` with `request` bytes and
   * writes the response bytes to `response`. Must not retain any of its arguments. */
  PolyplugAbiError (*invoke)(void* user_data, PolyplugGuestContractInstance instance,
                             PolyplugStringView method, PolyplugBytesView request,
                             const PolyplugByteSink* response);
  /* Must be zero; room for later fields without a layout change. */
  void* reserved[4];
} PolyplugGuestContractInterface;

/* Names a provider. Strings are copied by the host during registration. */
typedef struct PolyplugPluginDescriptor {
  PolyplugStringView name;          /* the implementation's name, free text */
  PolyplugStringView contract_name; /* bare contract name, e.g. "image.decode" */
  PolyplugVersion version;          /* the contract version this provider implements; must
                                       equal the interface's contract_version */
} PolyplugPluginDescriptor;

/* Passed to polyplug_init; valid only during that call. */
typedef struct PolyplugBundleInitContext {
  uint64_t bundle_id;
  PolyplugStringView bundle_path; /* absolute bundle directory */
  PolyplugStringView bundle_name;
  PolyplugVersion bundle_version;
} PolyplugBundleInitContext;

typedef uint32_t PolyplugLogLevel;
enum {
  POLYPLUG_LOG_ERROR = 1,
  POLYPLUG_LOG_WARN = 2,
  POLYPLUG_LOG_INFO = 3,
  POLYPLUG_LOG_DEBUG = 4,
  POLYPLUG_LOG_TRACE = 5
};

typedef uint32_t PolyplugReloadPhaseType;
enum {
  POLYPLUG_PHASE_PREPARING = 0,
  POLYPLUG_PHASE_RELOADED = 1,
  POLYPLUG_PHASE_FAILED = 2,
  POLYPLUG_PHASE_UNLOADING = 3,
  POLYPLUG_PHASE_LOADED = 4
};

/* One reload phase as an in-process on_reload callback sees it; valid during the call. */
typedef struct PolyplugReloadPhase {
  PolyplugReloadPhaseType phase_type;
  uint64_t bundle_id;
  PolyplugStringView bundle_name;
  PolyplugStringView reason; /* absent unless FAILED */
} PolyplugReloadPhase;

/* The function table the host hands to bundles. Every entry takes the table itself
 * first. Entries may be called from any thread; lookups never block on a reload. */
struct PolyplugHostApi {
  void* runtime; /* opaque */
  /* Only valid inside polyplug_init: stages a provider for the bundle being initialised.
   * Nothing is visible to lookups until init returns OK and the registrations match the
   * manifest's `provides` exactly. */
  void (*register_guest_contract)(const PolyplugHostApi* self,
                                  const PolyplugPluginDescriptor* descriptor,
                                  const PolyplugGuestContractInterface* interface_,
                                  PolyplugAbiError* out_err);
  /* First provider whose major >= min_major, or a handle with index
   * POLYPLUG_NULL_HANDLE_INDEX. Inside polyplug_init only declared dependencies are
   * visible. */
  PolyplugGuestContractHandle (*find_guest_contract)(const PolyplugHostApi* self,
                                                     uint64_t contract_id, uint32_t min_major);
  /* NULL if the handle is invalid or stale. The pointer stays valid until the provider is
   * reloaded or unloaded; the host destroys instances at PREPARING before that happens.
   * During a reload it stays valid until the reload's cascade has ended, so a dependent
   * that opted in (needs_reinit_on_dep_reload) may keep what its init resolved until its
   * own PREPARING. */
  const PolyplugGuestContractInterface* (*resolve_guest_contract)(
      const PolyplugHostApi* self, PolyplugGuestContractHandle handle);
  /* Counted instance creation/destruction (feeds the live-instance warnings). */
  PolyplugAbiError (*create_guest_instance)(const PolyplugHostApi* self,
                                            const PolyplugGuestContractInterface* iface,
                                            PolyplugBytesView args,
                                            PolyplugGuestContractInstance* out);
  void (*destroy_guest_instance)(const PolyplugHostApi* self,
                                 const PolyplugGuestContractInterface* iface,
                                 PolyplugGuestContractInstance instance);
  /* Unknown levels are treated as ERROR. */
  void (*log)(const PolyplugHostApi* self, PolyplugLogLevel level, PolyplugStringView scope,
              PolyplugStringView message);
  /* Bumped on every registry change (load, reload swap, unload). */
  uint64_t (*registry_revision)(const PolyplugHostApi* self);
  void* reserved[4];
};

/* Signatures of the two symbols a native bundle exports. */
typedef uint32_t (*PolyplugAbiVersionFn)(void);
typedef PolyplugAbiError (*PolyplugInitFn)(const PolyplugHostApi* host,
                                           const PolyplugBundleInitContext* ctx);

/* Identity hashing for bundles written without polyplug/identity.hpp (plain C). Bit-exact
 * with identity.hpp's Fnv1a64, BundleId and GuestContractId: FNV-1a 64 over the bytes.
 * Strings are (pointer, length) like PolyplugStringView; NUL is not special. For a literal,
 * pass sizeof "name" - 1 as the length. */
#define POLYPLUG_FNV1A64_OFFSET_BASIS 0xcbf29ce484222325ull
#define POLYPLUG_FNV1A64_PRIME 0x100000001b3ull

/* FNV-1a 64 of len bytes at `bytes`, starting from `seed` (POLYPLUG_FNV1A64_OFFSET_BASIS
 * for a whole string). Hashing in pieces chains: pass the hash of what came before as the
 * seed. `bytes` may be NULL when len is 0. */
static inline uint64_t polyplug_fnv1a64(const char* bytes, size_t len, uint64_t seed) {
  uint64_t hash = seed;
  size_t i;
  for (i = 0; i < len; ++i) {
    hash ^= (uint64_t)(unsigned char)bytes[i];
    hash *= POLYPLUG_FNV1A64_PRIME;
  }
  return hash;
}

/* A bundle's id: FNV-1a 64 of its name (manifest.toml's `id`, and ctx->bundle_id). */
static inline uint64_t polyplug_bundle_id(const char* name, size_t len) {
  return polyplug_fnv1a64(name, len, POLYPLUG_FNV1A64_OFFSET_BASIS);
}

/* A guest contract's id: FNV-1a 64 of "guest_contract:<name>@<major>", major in decimal
 * without leading zeros. What PolyplugGuestContractInterface.contract_id must hold for
 * descriptor.contract_name `name` and contract_version.major `major`; minor and patch never
 * enter it. */
static inline uint64_t polyplug_guest_contract_id(const char* name, size_t len, uint32_t major) {
  char digits[10] = {0};
  size_t count = 0;
  uint64_t hash = polyplug_fnv1a64("guest_contract:", sizeof "guest_contract:" - 1,
                                   POLYPLUG_FNV1A64_OFFSET_BASIS);
  hash = polyplug_fnv1a64(name, len, hash);
  hash = polyplug_fnv1a64("@", 1, hash);
  do {
    digits[count++] = (char)('0' + major % 10u);
    major /= 10u;
  } while (major != 0u);
  while (count > 0u) {
    --count;
    hash = polyplug_fnv1a64(&digits[count], 1, hash);
  }
  return hash;
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* POLYPLUG_ABI_H_ */
