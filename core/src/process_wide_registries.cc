#include "core/src/process_wide_registries.h"

#include <elf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "polyplug/core/error.h"

namespace polyplug::core {
namespace {

namespace fs = std::filesystem;

// A process-wide registry: what registering into it from a bundle does, and the remedy.
struct Registry {
  absl::string_view why;
  absl::string_view remedy;
};

constexpr Registry kProtobufDescriptorPool{
    "protobuf's full runtime registers every generated .proto file in the process-wide "
    "descriptor pool when the library is loaded, and a second copy (the next reload) aborts "
    "the host",
    "generate with option optimize_for = LITE_RUNTIME and link protobuf-lite, or keep the "
    "message types in the host"};
constexpr Registry kAbseilFlags{
    "Abseil flags (ABSL_FLAG, ABSL_RETIRED_FLAG) are registered in the process-wide flag "
    "registry when the library is loaded and never removed: a second copy (the next reload) "
    "exits the host, and an unloaded one leaves the registry pointing into unmapped memory",
    "define flags in the host, not in a bundle, and hand their values to the bundle"};
constexpr Registry kGflags{
    "gflags registers every DEFINE_* flag in the process-wide flag registry when the library "
    "is loaded and never removes it: while libgflags stays loaded, a second copy (the next "
    "reload) exits the host, and an unloaded one leaves the registry pointing into unmapped "
    "memory",
    "define flags in the host, not in a bundle, and hand their values to the bundle"};
constexpr Registry kLlvmOptions{
    "LLVM registers every cl::opt in the process-wide command-line option registry when the "
    "library is loaded and never removes it, and a second copy (the next reload) aborts the "
    "host",
    "declare the cl::opt options in the host, not in a bundle"};

// A function only code that registers into `registry` imports. The match is on mangled
// names, whose identifiers are length-prefixed: `prefix` pins a symbol down from its start
// (covering constructor variants C1/C2 and every signature), and `infix`, when not empty,
// must follow somewhere after it, which skips what varies in between: Abseil's inline
// namespace (lts_20220623 upstream, debian3 in Debian 12's build, none at all).
struct Import {
  absl::string_view prefix;
  absl::string_view infix;
  absl::string_view symbol;  // as printed in the error
  const Registry* registry;
};

constexpr Import kImports[] = {
    // Generated .pb.cc files: a static AddDescriptorsRunner (protobuf 3.14 and later;
    // 3.21.12 in Debian 12), AddDescriptors(table) from a static initialiser (3.6 to 3.13),
    // DescriptorPool::InternalAddGeneratedFile (3.5 and earlier). The lite runtime has no
    // descriptor pool, and its generated code imports none of these.
    {"_ZN6google8protobuf8internal20AddDescriptorsRunnerC", "",
     "google::protobuf::internal::AddDescriptorsRunner", &kProtobufDescriptorPool},
    {"_ZN6google8protobuf8internal14AddDescriptorsE", "",
     "google::protobuf::internal::AddDescriptors", &kProtobufDescriptorPool},
    {"_ZN6google8protobuf14DescriptorPool24InternalAddGeneratedFileE", "",
     "google::protobuf::DescriptorPool::InternalAddGeneratedFile", &kProtobufDescriptorPool},
    // ABSL_FLAG's FlagRegistrar (an inline template) and ABSL_RETIRED_FLAG call these.
    // A bundle that only reads the host's flags (ABSL_DECLARE_FLAG) imports neither.
    {"_ZN4absl", "14flags_internal23RegisterCommandLineFlagE",
     "absl::flags_internal::RegisterCommandLineFlag", &kAbseilFlags},
    {"_ZN4absl", "14flags_internal6RetireE", "absl::flags_internal::Retire", &kAbseilFlags},
    // DEFINE_int32 & co.: a static FlagRegisterer. Its namespace is gflags' build option
    // GFLAGS_NAMESPACE: "google" in Debian's build, "gflags" by default upstream.
    {"_ZN6google14FlagRegistererC", "", "google::FlagRegisterer", &kGflags},
    {"_ZN6gflags14FlagRegistererC", "", "gflags::FlagRegisterer", &kGflags},
    // Every cl::opt's constructor (inline) calls Option::addArgument.
    {"_ZN4llvm2cl6Option11addArgumentEv", "", "llvm::cl::Option::addArgument", &kLlvmOptions},
};

bool Matches(const Import& import, absl::string_view name) {
  if (!absl::StartsWith(name, import.prefix)) return false;
  return import.infix.empty() || absl::StrContains(name.substr(import.prefix.size()), import.infix);
}

// Reads exactly `size` bytes at `offset`.
bool ReadAt(int fd, uint64_t offset, void* out, size_t size) {
  char* to = static_cast<char*>(out);
  while (size > 0) {
    const ssize_t got = pread(fd, to, size, static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    to += got;
    offset += static_cast<uint64_t>(got);
    size -= static_cast<size_t>(got);
  }
  return true;
}

// Whether [offset, offset + size) lies within a file of `file_size` bytes.
bool Within(uint64_t offset, uint64_t size, uint64_t file_size) {
  return offset <= file_size && size <= file_size - offset;
}

struct DynamicSymbols {
  std::vector<Elf64_Sym> symbols;
  std::string names;  // the string table .dynsym's sh_link names
};

// The dynamic symbol table of the ELF64 file open at `fd`, reading only the ELF header,
// the section headers and those two sections (the reload path pays for this, and a bundle
// can be large). nullopt when there is none or it cannot be read.
std::optional<DynamicSymbols> ReadDynamicSymbols(int fd) {
  struct stat st {};
  if (fstat(fd, &st) != 0) return std::nullopt;
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  Elf64_Ehdr header{};
  if (!ReadAt(fd, 0, &header, sizeof(header)) ||
      std::memcmp(header.e_ident, ELFMAG, SELFMAG) != 0 || header.e_ident[EI_CLASS] != ELFCLASS64 ||
      header.e_ident[EI_DATA] !=
          (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? ELFDATA2LSB : ELFDATA2MSB) ||
      header.e_shoff == 0 || header.e_shentsize != sizeof(Elf64_Shdr)) {
    return std::nullopt;
  }
  // Past SHN_LORESERVE sections, e_shnum is 0 and section 0's sh_size holds the count.
  uint64_t count = header.e_shnum;
  if (count == 0) {
    Elf64_Shdr first{};
    if (!ReadAt(fd, header.e_shoff, &first, sizeof(first))) return std::nullopt;
    count = first.sh_size;
  }
  if (count == 0 || count > file_size / sizeof(Elf64_Shdr) ||
      !Within(header.e_shoff, count * sizeof(Elf64_Shdr), file_size)) {
    return std::nullopt;
  }
  std::vector<Elf64_Shdr> sections(count);
  if (!ReadAt(fd, header.e_shoff, sections.data(), count * sizeof(Elf64_Shdr))) {
    return std::nullopt;
  }

  for (const Elf64_Shdr& section : sections) {
    if (section.sh_type != SHT_DYNSYM) continue;
    if (section.sh_entsize != sizeof(Elf64_Sym) || section.sh_link >= count) return std::nullopt;
    const Elf64_Shdr& strings = sections[section.sh_link];
    if (strings.sh_type != SHT_STRTAB || !Within(section.sh_offset, section.sh_size, file_size) ||
        !Within(strings.sh_offset, strings.sh_size, file_size)) {
      return std::nullopt;
    }
    DynamicSymbols dynamic;
    dynamic.symbols.resize(section.sh_size / sizeof(Elf64_Sym));
    dynamic.names.resize(strings.sh_size);
    if (!ReadAt(fd, section.sh_offset, dynamic.symbols.data(),
                dynamic.symbols.size() * sizeof(Elf64_Sym)) ||
        !ReadAt(fd, strings.sh_offset, dynamic.names.data(), dynamic.names.size())) {
      return std::nullopt;
    }
    return dynamic;  // an ELF file has at most one .dynsym
  }
  return std::nullopt;
}

}  // namespace

absl::Status CheckProcessWideRegistries(const fs::path& file, const fs::path& artifact,
                                        absl::string_view bundle) {
  const int fd = open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::OkStatus();  // CheckArtifact and dlopen say why
  const std::optional<DynamicSymbols> dynamic = ReadDynamicSymbols(fd);
  close(fd);
  if (!dynamic) return absl::OkStatus();

  std::array<bool, std::size(kImports)> imported{};
  for (const Elf64_Sym& symbol : dynamic->symbols) {
    // Only imports: the registries that outlive a bundle's image are in the shared
    // libraries it calls into, not in code of its own.
    if (symbol.st_shndx != SHN_UNDEF || symbol.st_name == 0 ||
        symbol.st_name >= dynamic->names.size()) {
      continue;
    }
    const char* start = dynamic->names.data() + symbol.st_name;
    const absl::string_view name(start, strnlen(start, dynamic->names.size() - symbol.st_name));
    for (size_t i = 0; i < std::size(kImports); ++i) {
      imported[i] = imported[i] || Matches(kImports[i], name);
    }
  }

  // Every registry found, once, named by its first import in kImports.
  std::vector<const Registry*> named;
  std::string message;
  for (size_t i = 0; i < std::size(kImports); ++i) {
    const Import& import = kImports[i];
    if (!imported[i] || std::find(named.begin(), named.end(), import.registry) != named.end()) {
      continue;
    }
    absl::StrAppend(&message, named.empty() ? "" : "; it also imports ", import.symbol, ": ",
                    import.registry->why, "; ", import.registry->remedy);
    named.push_back(import.registry);
  }
  if (named.empty()) return absl::OkStatus();
  return MakeError(
      ErrorReason::kArtifactNotLoadable,
      absl::StrCat("bundle \"", bundle, "\": artifact ", artifact.string(), " imports ", message));
}

}  // namespace polyplug::core
