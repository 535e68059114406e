/* hello_c: a complete bundle in plain C, without guest.hpp (docs/WRITING_BUNDLES.md,
 * section 4). It provides example.hello_c@1: no native functions, and two methods through
 * `invoke`, the entry other processes reach ("greet" and "dir"). install_package_test.sh
 * builds it with the documented gcc command line against the installed headers, writes
 * its manifest with the installed polyplug-mkmanifest and loads it into a real host. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "polyplug/abi.h"

POLYPLUG_EXPORT uint32_t polyplug_abi_version(void);
POLYPLUG_EXPORT PolyplugAbiError polyplug_init(const PolyplugHostApi* host,
                                               const PolyplugBundleInitContext* ctx);

static const char kContract[] = "example.hello_c";

/* The bundle directory as a C string. ctx->bundle_path is not NUL-terminated and is valid
 * only during polyplug_init, so init copies it. Statics start afresh on every reload. */
static char bundle_dir[4096];

static PolyplugAbiError Ok(void) {
  PolyplugAbiError ok = {POLYPLUG_ABI_OK, {NULL, 0}};
  return ok;
}

/* Messages are static strings: they outlive every caller. */
static PolyplugAbiError Fail(PolyplugAbiErrorCode code, const char* message) {
  PolyplugAbiError err = {code, {message, strlen(message)}};
  return err;
}

static PolyplugAbiError CreateInstance(void* user_data, const PolyplugHostApi* host,
                                       PolyplugBytesView args, PolyplugGuestContractInstance* out) {
  (void)user_data;
  (void)host;
  (void)args;
  out->data = NULL; /* stateless */
  return Ok();
}

static void DestroyInstance(void* user_data, const PolyplugHostApi* host,
                            PolyplugGuestContractInstance instance) {
  (void)user_data;
  (void)host;
  (void)instance;
}

static void Write(const PolyplugByteSink* sink, const void* data, size_t len) {
  sink->write(sink->context, (const uint8_t*)data, len);
}

/* method is a PolyplugStringView: compare its len bytes, never strcmp it. */
static int MethodIs(PolyplugStringView method, const char* name) {
  const size_t len = strlen(name);
  return method.len == len && memcmp(method.ptr, name, len) == 0;
}

static PolyplugAbiError Invoke(void* user_data, PolyplugGuestContractInstance instance,
                               PolyplugStringView method, PolyplugBytesView request,
                               const PolyplugByteSink* response) {
  (void)user_data;
  (void)instance;
  if (MethodIs(method, "greet")) {
    Write(response, "Hello, ", 7);
    if (request.len == 0) {
      Write(response, "world", 5);
    } else {
      Write(response, request.ptr, request.len);
    }
    Write(response, "! (hello_c)", 11);
    return Ok();
  }
  if (MethodIs(method, "dir")) {
    Write(response, bundle_dir, strlen(bundle_dir));
    return Ok();
  }
  return Fail(POLYPLUG_ABI_FUNCTION_NOT_AVAILABLE, "hello_c: no such method");
}

POLYPLUG_EXPORT uint32_t polyplug_abi_version(void) { return POLYPLUG_ABI_VERSION; }

POLYPLUG_EXPORT PolyplugAbiError polyplug_init(const PolyplugHostApi* host,
                                               const PolyplugBundleInitContext* ctx) {
  if (ctx->bundle_path.len >= sizeof bundle_dir) {
    return Fail(POLYPLUG_ABI_INVALID_ARGUMENT, "hello_c: bundle path too long");
  }
  memcpy(bundle_dir, ctx->bundle_path.ptr, ctx->bundle_path.len);
  bundle_dir[ctx->bundle_path.len] = '\0';

  /* Both structs may live on the stack: the host copies them during the call. */
  PolyplugPluginDescriptor descriptor;
  memset(&descriptor, 0, sizeof descriptor);
  descriptor.name = ctx->bundle_name;
  descriptor.contract_name.ptr = kContract;
  descriptor.contract_name.len = sizeof kContract - 1;
  descriptor.version.major = 1;

  PolyplugGuestContractInterface iface;
  memset(&iface, 0, sizeof iface); /* reserved[] must be zero */
  iface.contract_id = polyplug_guest_contract_id(kContract, sizeof kContract - 1, 1);
  iface.contract_version = descriptor.version; /* must equal descriptor.version */
  iface.dispatch_type = POLYPLUG_DISPATCH_NATIVE;
  iface.create_instance = CreateInstance;
  iface.destroy_instance = DestroyInstance;
  iface.function_count = 0;
  iface.functions = NULL;
  iface.invoke = Invoke;

  PolyplugAbiError err = Ok();
  host->register_guest_contract(host, &descriptor, &iface, &err);
  return err; /* a refusal fails the load with its reason */
}
