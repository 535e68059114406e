#include "polyplug/core/native_loader.h"

#include <dlfcn.h>
#include <elf.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "polyplug/core/error.h"
#include "polyplug/core/ids.h"
#include "polyplug/core/paths.h"

namespace polyplug::core {
namespace {

namespace fs = std::filesystem;

#if defined(__x86_64__)
constexpr uint16_t kHostMachine = EM_X86_64;
#elif defined(__aarch64__)
constexpr uint16_t kHostMachine = EM_AARCH64;
#else
constexpr uint16_t kHostMachine = EM_NONE;
#endif

std::string MachineName(uint16_t machine) {
  switch (machine) {
    case EM_X86_64:
      return "x86_64";
    case EM_386:
      return "i386";
    case EM_AARCH64:
      return "aarch64";
    case EM_ARM:
      return "arm";
    case EM_RISCV:
      return "riscv";
    default:
      return absl::StrCat("machine ", machine);
  }
}

}  // namespace

absl::Status NativeLoader::CheckArtifact(const fs::path& artifact, absl::string_view bundle) {
  std::ifstream in(artifact, std::ios::binary);
  Elf64_Ehdr header{};
  in.read(reinterpret_cast<char*>(&header), sizeof(header));
  const std::streamsize got = in.gcount();
  auto fail = [&](absl::string_view why) {
    return MakeError(
        ErrorReason::kArtifactNotLoadable,
        absl::StrCat("bundle \"", bundle, "\": artifact ", artifact.string(), " ", why));
  };
  if (got < static_cast<std::streamsize>(EI_NIDENT) ||
      std::memcmp(header.e_ident, ELFMAG, SELFMAG) != 0) {
    return fail(got == 0 ? "is empty" : "is not an ELF shared object (no ELF magic)");
  }
  if (got < static_cast<std::streamsize>(sizeof(header))) {
    return fail("is truncated (shorter than an ELF header)");
  }
  if (header.e_ident[EI_CLASS] != ELFCLASS64) return fail("is not a 64-bit ELF object");
  if (header.e_type != ET_DYN) return fail("is an ELF file but not a shared object");
  if (kHostMachine != EM_NONE && header.e_machine != kHostMachine) {
    return fail(absl::StrCat("is built for ", MachineName(header.e_machine), ", this host is ",
                             MachineName(kHostMachine)));
  }
  // The linker writes the section header table last: a file that ends before the tables
  // its header describes is still being written, or was cut short.
  const uint64_t described =
      std::max<uint64_t>(header.e_phoff + uint64_t{header.e_phnum} * header.e_phentsize,
                         header.e_shoff + uint64_t{header.e_shnum} * header.e_shentsize);
  std::error_code ec;
  const uint64_t size = fs::file_size(artifact, ec);
  if (!ec && size < described) {
    return fail(absl::StrCat("is truncated or still being written: its ELF header describes ",
                             described, " bytes, the file has ", size));
  }
  return absl::OkStatus();
}

namespace {

bool IsMapped(const fs::path& file) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  const std::string needle = file.string();
  while (std::getline(maps, line)) {
    if (line.size() >= needle.size() && line.find(needle) != std::string::npos) return true;
  }
  return false;
}

}  // namespace

NativeLibrary::~NativeLibrary() { Close(); }

std::string NativeLibrary::Close() {
  if (handle_ == nullptr) return {};
  dlclose(handle_);
  handle_ = nullptr;
  init_ = nullptr;
  std::string warning;
  if (IsMapped(private_copy_)) {
    warning = absl::StrCat(
        "bundle image ", private_copy_.string(),
        " is still mapped after dlclose: it has GNU unique symbols (STB_GNU_UNIQUE, GCC's "
        "default for static locals of inline functions and static members of templates), "
        "which make dlclose a no-op, so its code and static state stay in the process. "
        "Build the bundle with -fno-gnu-unique (polyplug_add_bundle does).");
  }
  std::error_code ec;
  fs::remove(private_copy_, ec);
  fs::remove(private_copy_.parent_path(), ec);  // only succeeds once empty
  return warning;
}

NativeLoader::NativeLoader(fs::path state_dir) : state_dir_(std::move(state_dir)) {}

absl::StatusOr<fs::path> NativeLoader::ResolveArtifact(const Manifest& manifest) {
  const fs::path file(manifest.file);
  auto escape = [&](absl::string_view why) {
    return MakeError(
        ErrorReason::kArtifactPathEscape,
        absl::StrCat(manifest.path.string(), ": field 'file': \"", manifest.file, "\" ", why,
                     "; the artifact must be inside the bundle directory ", manifest.dir.string()));
  };
  if (file.is_absolute()) return escape("is an absolute path");
  const fs::path dir = manifest.dir.lexically_normal();
  const fs::path lexical = (dir / file).lexically_normal();
  if (!IsPathWithin(lexical, dir) || lexical == dir) return escape("leads out with '..'");
  std::error_code ec;
  fs::file_status status = fs::symlink_status(lexical, ec);
  if (!fs::exists(status)) {
    return MakeError(
        ErrorReason::kArtifactMissing,
        absl::StrCat("bundle \"", manifest.name, "\": library not found at ", lexical.string(),
                     " (", manifest.path.string(), ", field 'file')"));
  }
  if (fs::is_symlink(status)) return escape("is a symlink");
  const fs::path real_dir = fs::canonical(dir, ec);
  const fs::path real_file = fs::canonical(lexical, ec);
  if (ec || !IsPathWithin(real_file, real_dir))
    return escape("resolves outside through a symlinked directory");
  if (!fs::is_regular_file(real_file, ec)) {
    return MakeError(ErrorReason::kArtifactNotLoadable,
                     absl::StrCat("bundle \"", manifest.name, "\": artifact ", lexical.string(),
                                  " is not a regular file"));
  }
  return lexical;
}

absl::StatusOr<std::unique_ptr<NativeLibrary>> NativeLoader::Open(const Manifest& manifest) {
  auto artifact = ResolveArtifact(manifest);
  if (!artifact.ok()) return artifact.status();
  if (absl::Status s = CheckArtifact(*artifact, manifest.name); !s.ok()) return s;

  // A private, never-reused path per load: glibc hands back the cached image for a path it
  // already has open, and the old image must stay loadable until its readers are gone.
  std::error_code ec;
  const fs::path copy_dir =
      state_dir_ / absl::StrCat(manifest.name, "-", FormatBundleId(manifest.id));
  fs::create_directories(copy_dir, ec);
  if (ec) {
    return MakeError(ErrorReason::kInternal, absl::StrCat("cannot create state directory ",
                                                          copy_dir.string(), ": ", ec.message()));
  }
  const fs::path copy = copy_dir / absl::StrCat(getpid(), "-", next_copy_.fetch_add(1), "-",
                                                artifact->filename().string());
  fs::copy_file(*artifact, copy, fs::copy_options::overwrite_existing, ec);
  if (ec) {
    return MakeError(ErrorReason::kArtifactNotLoadable,
                     absl::StrCat("bundle \"", manifest.name, "\": cannot copy ",
                                  artifact->string(), " to ", copy.string(), ": ", ec.message()));
  }

  std::unique_ptr<NativeLibrary> library(new NativeLibrary());
  library->private_copy_ = copy;
  library->handle_ = dlopen(copy.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (library->handle_ == nullptr) {
    const char* error = dlerror();
    fs::remove(copy, ec);
    fs::remove(copy_dir, ec);
    return MakeError(ErrorReason::kArtifactNotLoadable,
                     absl::StrCat("bundle \"", manifest.name, "\": cannot load ",
                                  artifact->string(), ": ", error ? error : "dlopen failed"));
  }
  auto version_fn =
      reinterpret_cast<PolyplugAbiVersionFn>(dlsym(library->handle_, "polyplug_abi_version"));
  if (version_fn == nullptr) {
    return MakeError(
        ErrorReason::kAbiMismatch,
        absl::StrCat("bundle \"", manifest.name, "\": ", artifact->string(),
                     " does not export polyplug_abi_version; is it a polyplug bundle?"));
  }
  const uint32_t abi = version_fn();
  if (abi != POLYPLUG_ABI_VERSION) {
    return MakeError(ErrorReason::kAbiMismatch,
                     absl::StrCat("bundle \"", manifest.name, "\": ", artifact->string(),
                                  " was built for ABI version ", abi, ", this host speaks ",
                                  POLYPLUG_ABI_VERSION));
  }
  library->init_ = reinterpret_cast<PolyplugInitFn>(dlsym(library->handle_, "polyplug_init"));
  if (library->init_ == nullptr) {
    return MakeError(ErrorReason::kInitSymbolMissing,
                     absl::StrCat("bundle \"", manifest.name, "\": ", artifact->string(),
                                  " does not export polyplug_init"));
  }
  return library;
}

}  // namespace polyplug::core
