// Path confinement: the one check that keeps loaded code inside the directories allowed.
#ifndef POLYPLUG_CORE_SRC_PATHS_H_
#define POLYPLUG_CORE_SRC_PATHS_H_

#include <algorithm>
#include <filesystem>

namespace polyplug::core {

// Whether `path` equals `dir` or lies below it, component by component (so "/a/bc" is not
// within "/a/b"). Both must already be normalised or canonical; this does no I/O.
inline bool IsPathWithin(const std::filesystem::path& path, const std::filesystem::path& dir) {
  auto [dir_end, path_it] = std::mismatch(dir.begin(), dir.end(), path.begin(), path.end());
  (void)path_it;
  return dir_end == dir.end();
}

}  // namespace polyplug::core

#endif  // POLYPLUG_CORE_SRC_PATHS_H_
