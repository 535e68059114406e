// Well-formed UTF-8, the one check every name and path the project accepts goes through.
#ifndef POLYPLUG_CORE_SRC_UTF8_H_
#define POLYPLUG_CORE_SRC_UTF8_H_

#include "absl/strings/string_view.h"

namespace polyplug::core {

// Whether `text` is well-formed UTF-8 as Rust's str accepts it (RFC 3629): no overlong
// forms, surrogates or code points past U+10FFFF. polyplug's names and paths are Rust
// strings, so anything else could not round-trip through it.
bool IsWellFormedUtf8(absl::string_view text);

}  // namespace polyplug::core

#endif  // POLYPLUG_CORE_SRC_UTF8_H_
