#include "core/src/utf8.h"

#include <cstddef>
#include <cstdint>

namespace polyplug::core {

bool IsWellFormedUtf8(absl::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<unsigned char>(text[i]);
    if (lead < 0x80) {
      ++i;
      continue;
    }
    size_t continuation = 0;
    uint32_t code_point = 0;
    if (lead >= 0xC2 && lead <= 0xDF) {
      continuation = 1;
      code_point = lead & 0x1F;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      continuation = 2;
      code_point = lead & 0x0F;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      continuation = 3;
      code_point = lead & 0x07;
    } else {
      return false;
    }
    if (text.size() - i <= continuation) return false;
    for (size_t k = 1; k <= continuation; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xC0) != 0x80) return false;
      code_point = code_point << 6 | (next & 0x3F);
    }
    if ((continuation == 2 &&
         (code_point < 0x800 || (code_point >= 0xD800 && code_point <= 0xDFFF))) ||
        (continuation == 3 && (code_point < 0x10000 || code_point > 0x10FFFF))) {
      return false;
    }
    i += continuation + 1;
  }
  return true;
}

}  // namespace polyplug::core
