// CrashRecord: which bundle's code each thread runs, kept in a file that outlives a crash.
//
// A bundle runs inside the host process, so its SIGSEGV or abort() kills the host. To
// restart without the version at fault (polyplug-host --supervise), the process that dies
// records, in a shared file mapping the kernel keeps after its death: each bundle image it
// mapped (identity and address range), what each thread is doing inside bundle code
// (BundleCodeScope), and the thread and instruction of the fatal signal. The supervisor
// reads the file after the death (ReadCrashRecord) and learns the culprit.
//
// Without Install() everything here is a cheap no-op, so the runtime marks bundle calls
// unconditionally. Thread-safe; the signal handler only stores to the mapping.
#ifndef POLYPLUG_CORE_SRC_CRASH_RECORD_H_
#define POLYPLUG_CORE_SRC_CRASH_RECORD_H_

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace polyplug::core {

// What a thread was doing inside a bundle. Stable: stored in the record file.
enum class BundleActivity : uint8_t {
  kNone = 0,
  kLoad = 1,             // dlopen: the image's static constructors
  kInit = 2,             // polyplug_init
  kCreateInstance = 3,   // a contract's create_instance
  kInvoke = 4,           // a contract's message-style invoke (detail: the method)
  kDestroyInstance = 5,  // a contract's destroy_instance
  kUnload = 6,           // dlclose: the image's static destructors
  kBundleCode = 7,       // the faulting instruction is in the image (e.g. a bundle's own thread)
};

// "polyplug_init", "method \"greet\"", "its static constructors (dlopen)", ...
std::string DescribeActivity(BundleActivity activity, absl::string_view detail);

// "SIGSEGV", "SIGABRT", ..., or "signal N".
std::string SignalName(int signal);

// Installs the record of this process in `file` (created or truncated) and the handlers
// of the fatal signals (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, SIGSYS), which
// note the thread and instruction and then pass the signal on to the handler they replaced
// (by default: the process dies). Once per process.
absl::Status InstallCrashRecord(const std::filesystem::path& file);
bool CrashRecordInstalled();

// A bundle image mapped into the process. Register() is a no-op (an empty token) without
// an installed record, or when the table is full.
class CrashRecordImage {
 public:
  CrashRecordImage() = default;
  CrashRecordImage(CrashRecordImage&& other) noexcept : slot_(other.slot_) { other.slot_ = -1; }
  CrashRecordImage& operator=(CrashRecordImage&& other) noexcept;
  ~CrashRecordImage() { Clear(); }

  // Before dlopen: the identity of the image about to be mapped.
  static CrashRecordImage Register(uint64_t bundle_id, absl::string_view bundle_name,
                                   absl::string_view version, absl::string_view sha256);
  // After dlopen: the addresses of the mapped file `path` (read from the loaded objects).
  void SetRangeOf(const std::filesystem::path& path);
  // After dlclose: the image is gone. Idempotent.
  void Clear();

  int slot() const { return slot_; }

 private:
  int slot_ = -1;
};

// Marks the calling thread as running bundle code for the scope's lifetime. `image` names
// the image when the caller knows it; otherwise `code` (the function called) is looked up
// among the images' ranges after a crash. `detail` (e.g. the method) is kept up to 63 bytes.
// Scopes nest (a bundle calling into another); the innermost one is blamed.
class BundleCodeScope {
 public:
  BundleCodeScope(BundleActivity activity, const CrashRecordImage* image, const void* code,
                  absl::string_view detail = {});
  ~BundleCodeScope();
  BundleCodeScope(const BundleCodeScope&) = delete;
  BundleCodeScope& operator=(const BundleCodeScope&) = delete;

 private:
  void* slot_ = nullptr;
};

// The bundle version a crash is blamed on.
struct CrashCulprit {
  uint64_t bundle_id = 0;
  std::string bundle_name;
  std::string version;
  std::string sha256;
  BundleActivity activity = BundleActivity::kNone;
  std::string detail;
};

// What the record of a dead process says.
struct CrashReport {
  int signal = 0;  // the fatal signal the handler saw; 0 when it did not run
  std::optional<CrashCulprit> culprit;
  // How the culprit was found ("the crashing thread was in ..."), or why none was.
  std::string explanation;
};

// Reads the record a process left in `file`. `death_signal` is the signal that killed it
// (0 when it exited): without a handler note, a thread in bundle code is blamed only when
// the process died of a fatal signal and that thread was the only one in bundle code.
absl::StatusOr<CrashReport> ReadCrashRecord(const std::filesystem::path& file, int death_signal);

}  // namespace polyplug::core

#endif  // POLYPLUG_CORE_SRC_CRASH_RECORD_H_
