// Bundles that cannot be reloaded because their static initialisers register into a
// registry the whole process shares.
//
// Some libraries keep a process-wide registry that their users fill from static
// initialisers, which dlopen runs: protobuf's generated descriptor pool, Abseil's and
// gflags' flag registries, LLVM's command-line options. dlclose takes nothing out of them,
// so the next versioned copy of the bundle registers the same names again, and the library
// aborts or exits the whole host (and an unloaded bundle leaves pointers into unmapped
// memory behind). Such a bundle is refused before dlopen, with what to do instead.
#ifndef POLYPLUG_CORE_SRC_PROCESS_WIDE_REGISTRIES_H_
#define POLYPLUG_CORE_SRC_PROCESS_WIDE_REGISTRIES_H_

#include <filesystem>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace polyplug::core {

// Refuses an artifact that would register into a process-wide registry at static
// initialisation: ARTIFACT_NOT_LOADABLE naming every such registry it imports, why a
// reload of it kills the host and what to do instead. Reads the ELF section headers, the
// dynamic symbol table and its string table of `file` (the bytes to be opened, e.g. the
// staged private copy); errors name `artifact` (the file in the bundle directory) and
// `bundle`. A file without readable section headers (not ELF, truncated, sstrip'ed) or
// without .dynsym is OK here: CheckArtifact and dlopen judge it.
absl::Status CheckProcessWideRegistries(const std::filesystem::path& file,
                                        const std::filesystem::path& artifact,
                                        absl::string_view bundle);

}  // namespace polyplug::core

#endif  // POLYPLUG_CORE_SRC_PROCESS_WIDE_REGISTRIES_H_
