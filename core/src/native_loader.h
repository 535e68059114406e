// NativeLoader: turns a bundle's shared library into a running, initialised image.
//
// Every load copies the artifact to a private, versioned path before dlopen, so a file
// rebuilt in place is really reloaded (glibc returns the cached image for a path that is
// still open) and the old image can stay mapped until its readers are gone.
#ifndef POLYPLUG_CORE_SRC_NATIVE_LOADER_H_
#define POLYPLUG_CORE_SRC_NATIVE_LOADER_H_

#include <atomic>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/src/crash_record.h"
#include "polyplug/abi.h"
#include "polyplug/core/manifest.h"

namespace polyplug::core {

// A private copy of a bundle's artifact (and, when the loader hashes, the SHA-256 of its
// bytes), made before the reload flow's PREPARING so that the bytes admitted
// (RuntimeOptions::admit_artifact) are the bytes opened. Destroying it removes the copy
// unless NativeLoader::Open took it.
class StagedArtifact {
 public:
  StagedArtifact(StagedArtifact&& other) noexcept;
  StagedArtifact& operator=(StagedArtifact&&) = delete;
  StagedArtifact(const StagedArtifact&) = delete;
  ~StagedArtifact();

  const std::filesystem::path& source() const { return source_; }  // in the bundle dir
  const std::filesystem::path& copy() const { return copy_; }
  const std::string& sha256() const { return sha256_; }  // lowercase hex; empty: not hashed

 private:
  friend class NativeLoader;
  StagedArtifact() = default;

  std::filesystem::path source_;
  std::filesystem::path copy_;
  std::string sha256_;
};

// An opened bundle image. Destroying it closes the library and removes the private copy.
class NativeLibrary {
 public:
  ~NativeLibrary();
  NativeLibrary(const NativeLibrary&) = delete;
  NativeLibrary& operator=(const NativeLibrary&) = delete;

  const std::filesystem::path& private_copy() const { return private_copy_; }
  const std::string& sha256() const { return sha256_; }
  PolyplugInitFn init() const { return init_; }
  // The image's entry in the crash record (empty when none is installed).
  const CrashRecordImage& crash_record_image() const { return crash_record_image_; }

  // Closes the library now and reports whether its image left the process's mappings.
  // Returns a warning text (empty when the image is gone). Idempotent.
  std::string Close();

 private:
  friend class NativeLoader;
  NativeLibrary() = default;

  void* handle_ = nullptr;
  std::filesystem::path private_copy_;
  std::string sha256_;
  PolyplugInitFn init_ = nullptr;
  CrashRecordImage crash_record_image_;
};

class NativeLoader {
 public:
  // Private copies go under `state_dir` (created if missing). With `hash`, every copy's
  // SHA-256 is computed while copying (about 0.6 ms per MB on these machines).
  NativeLoader(std::filesystem::path state_dir, bool hash);

  static constexpr absl::string_view kName = "native";
  bool supports_hot_reload() const { return true; }
  const std::filesystem::path& state_dir() const { return state_dir_; }

  // The artifact path the manifest names, confined to the bundle directory:
  // ARTIFACT_PATH_ESCAPE for `..` or a symlink leading out, ARTIFACT_MISSING when absent.
  static absl::StatusOr<std::filesystem::path> ResolveArtifact(const Manifest& manifest);

  // Cheap checks that turn the commonest bad artifacts into a precise message before
  // dlopen (ARTIFACT_NOT_LOADABLE): empty, not ELF, not a 64-bit shared object, another
  // architecture, or shorter than its ELF header says (truncated, or still being written).
  static absl::Status CheckArtifact(const std::filesystem::path& artifact,
                                    absl::string_view bundle);

  // Copies `artifact` (from ResolveArtifact) to a private, never-reused path, and hashes
  // what it copied if the loader hashes (or `hash`: this time).
  absl::StatusOr<StagedArtifact> Stage(const Manifest& manifest,
                                       const std::filesystem::path& artifact, bool hash = false);

  // Checks the staged copy (CheckArtifact), dlopens it (RTLD_NOW | RTLD_LOCAL) and checks
  // the ABI version and the init symbol. Does not call init. Errors name the artifact in
  // the bundle directory.
  absl::StatusOr<std::unique_ptr<NativeLibrary>> Open(const Manifest& manifest,
                                                      StagedArtifact staged);

 private:
  std::filesystem::path state_dir_;
  const bool hash_;
  std::atomic<uint64_t> next_copy_{1};
};

}  // namespace polyplug::core

#endif  // POLYPLUG_CORE_SRC_NATIVE_LOADER_H_
