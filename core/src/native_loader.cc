#include "core/src/native_loader.h"

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "core/src/paths.h"
#include "core/src/process_wide_registries.h"
#include "polyplug/core/error.h"
#include "polyplug/core/ids.h"

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

// CheckArtifact of the bytes at `file`, naming `artifact` in errors (a staged copy is
// checked under the name of the artifact it copies).
absl::Status CheckArtifactAt(const fs::path& file, const fs::path& artifact,
                             absl::string_view bundle) {
  std::ifstream in(file, std::ios::binary);
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
  const uint64_t size = fs::file_size(file, ec);
  if (!ec && size < described) {
    return fail(absl::StrCat("is truncated or still being written: its ELF header describes ",
                             described, " bytes, the file has ", size));
  }
  return absl::OkStatus();
}

// Copies `from` to `to` (created 0700, must not exist) and returns the SHA-256 of what
// it copied, as lowercase hex. One pass over the bytes.
absl::StatusOr<std::string> CopyAndHash(const fs::path& from, const fs::path& to) {
  auto error = [&](absl::string_view what) {
    return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
  };
  const int in = open(from.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return error(absl::StrCat("cannot read ", from.string()));
  const int out = open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0700);
  if (out < 0) {
    absl::Status status = error(absl::StrCat("cannot create ", to.string()));
    close(in);
    return status;
  }
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> digest(EVP_MD_CTX_new(),
                                                                 &EVP_MD_CTX_free);
  absl::Status status;
  if (digest == nullptr || EVP_DigestInit_ex(digest.get(), EVP_sha256(), nullptr) != 1) {
    status = absl::InternalError("SHA-256 is not available");
  }
  std::string buffer(64 * 1024, '\0');
  while (status.ok()) {
    const ssize_t got = read(in, buffer.data(), buffer.size());
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      status = error(absl::StrCat("cannot read ", from.string()));
      break;
    }
    if (got == 0) break;
    EVP_DigestUpdate(digest.get(), buffer.data(), static_cast<size_t>(got));
    for (ssize_t written = 0; written < got && status.ok();) {
      const ssize_t n = write(out, buffer.data() + written, static_cast<size_t>(got - written));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) status = error(absl::StrCat("cannot write ", to.string()));
      if (n > 0) written += n;
    }
  }
  close(in);
  if (close(out) != 0 && status.ok()) status = error(absl::StrCat("cannot write ", to.string()));
  if (!status.ok()) return status;
  unsigned char sha[EVP_MAX_MD_SIZE];
  unsigned int sha_size = 0;
  EVP_DigestFinal_ex(digest.get(), sha, &sha_size);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(sha), static_cast<size_t>(sha_size)));
}

void RemoveCopy(const fs::path& copy) {
  std::error_code ec;
  fs::remove(copy, ec);
  fs::remove(copy.parent_path(), ec);  // only succeeds once empty
}

// Whether the dynamic linker still has `file` loaded (after dlclose: it could not unload
// it). Walks the loader's own list rather than /proc/self/maps, which costs the kernel
// far more to print than the whole dlopen.
bool IsStillLoaded(const fs::path& file) {
  struct Search {
    const char* path;
    bool found = false;
  } search{file.c_str()};
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) {
        auto* s = static_cast<Search*>(data);
        s->found = info->dlpi_name != nullptr && std::strcmp(info->dlpi_name, s->path) == 0;
        return s->found ? 1 : 0;
      },
      &search);
  return search.found;
}

}  // namespace

absl::Status NativeLoader::CheckArtifact(const fs::path& artifact, absl::string_view bundle) {
  return CheckArtifactAt(artifact, artifact, bundle);
}

StagedArtifact::StagedArtifact(StagedArtifact&& other) noexcept
    : source_(std::move(other.source_)),
      copy_(std::exchange(other.copy_, {})),
      sha256_(std::move(other.sha256_)) {}

StagedArtifact::~StagedArtifact() {
  if (!copy_.empty()) RemoveCopy(copy_);
}

NativeLibrary::~NativeLibrary() { Close(); }

std::string NativeLibrary::Close() {
  if (handle_ == nullptr) return {};
  {
    BundleCodeScope unloading(BundleActivity::kUnload, &crash_record_image_, nullptr);
    dlclose(handle_);
  }
  crash_record_image_.Clear();
  handle_ = nullptr;
  init_ = nullptr;
  std::string warning;
  if (IsStillLoaded(private_copy_)) {
    warning = absl::StrCat(
        "bundle image ", private_copy_.string(),
        " is still mapped after dlclose: it has GNU unique symbols (STB_GNU_UNIQUE, GCC's "
        "default for static locals of inline functions and static members of templates), "
        "which make dlclose a no-op, so its code and static state stay in the process. "
        "Build the bundle with -fno-gnu-unique (polyplug_add_bundle does).");
  }
  RemoveCopy(private_copy_);
  return warning;
}

NativeLoader::NativeLoader(fs::path state_dir, bool hash)
    : state_dir_(std::move(state_dir)), hash_(hash) {}

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

absl::StatusOr<StagedArtifact> NativeLoader::Stage(const Manifest& manifest,
                                                   const fs::path& artifact, bool hash) {
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
  StagedArtifact staged;
  staged.source_ = artifact;
  const fs::path copy = copy_dir / absl::StrCat(getpid(), "-", next_copy_.fetch_add(1), "-",
                                                artifact.filename().string());
  absl::StatusOr<std::string> sha256;
  if (hash_ || hash) {
    sha256 = CopyAndHash(artifact, copy);
  } else {
    // The kernel copies (copy_file_range) without the bytes passing through here.
    fs::copy_file(artifact, copy, ec);
    sha256 = ec ? absl::StatusOr<std::string>(absl::InternalError(ec.message())) : "";
  }
  if (!sha256.ok()) {
    RemoveCopy(copy);
    return MakeError(ErrorReason::kArtifactNotLoadable,
                     absl::StrCat("bundle \"", manifest.name, "\": cannot copy ", artifact.string(),
                                  " to ", copy.string(), ": ", sha256.status().message()));
  }
  staged.copy_ = copy;
  staged.sha256_ = *std::move(sha256);
  return staged;
}

absl::StatusOr<std::unique_ptr<NativeLibrary>> NativeLoader::Open(const Manifest& manifest,
                                                                  StagedArtifact staged) {
  const fs::path* artifact = &staged.source();
  if (absl::Status s = CheckArtifactAt(staged.copy(), *artifact, manifest.name); !s.ok()) return s;
  // Before dlopen, which runs the static initialisers that would fill them.
  if (absl::Status s = CheckProcessWideRegistries(staged.copy(), *artifact, manifest.name);
      !s.ok()) {
    return s;
  }
  const fs::path copy = std::exchange(staged.copy_, {});
  std::unique_ptr<NativeLibrary> library(new NativeLibrary());
  library->private_copy_ = copy;
  library->sha256_ = staged.sha256();
  library->crash_record_image_ = CrashRecordImage::Register(
      manifest.id, manifest.name, manifest.version.ToString(), staged.sha256());
  {
    BundleCodeScope loading(BundleActivity::kLoad, &library->crash_record_image_, nullptr);
    library->handle_ = dlopen(copy.c_str(), RTLD_NOW | RTLD_LOCAL);
  }
  if (library->handle_ == nullptr) {
    const char* error = dlerror();
    library->crash_record_image_.Clear();
    RemoveCopy(copy);
    return MakeError(ErrorReason::kArtifactNotLoadable,
                     absl::StrCat("bundle \"", manifest.name, "\": cannot load ",
                                  artifact->string(), ": ", error ? error : "dlopen failed"));
  }
  library->crash_record_image_.SetRangeOf(copy);
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
