// The golden vector of polyplug's bundle signatures, shared by the core's tests and
// polyplugctl's: a small bundle, RFC 8032's first Ed25519 key (section 7.1, TEST 1), and the
// bundle digest and bundle.sig computed outside this project from the format's definition
// (the digest with Python's hashlib and, again, with printf and sha256sum; the signature
// with Python's `cryptography` and, again, with `openssl pkeyutl -sign -rawin`).
// docs/SIGNING.md describes the format.
#ifndef POLYPLUG_TESTS_SUPPORT_GOLDEN_BUNDLE_H_
#define POLYPLUG_TESTS_SUPPORT_GOLDEN_BUNDLE_H_

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "support/bundle_fixture.h"

namespace polyplug::test {

inline constexpr char kRfcSeedHex[] =
    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
inline constexpr char kRfcPublicKeyHex[] =
    "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

// The golden bundle's files. "a.b", "a/b" and "ab" pin the byte-wise sort of full paths
// ('.' 0x2E < '/' 0x2F < 'b'); "é.txt" (0xC3 0xA9) sorts after every ASCII name.
inline const std::vector<std::pair<std::string, std::string>>& GoldenFiles() {
  static const auto* files = new std::vector<std::pair<std::string, std::string>>{
      {"manifest.toml", "name = \"golden\"\n"},
      {"lib/data.bin", std::string("\x00\x01\x02\xff", 4)},
      {"a.b", "dot\n"},
      {"a/b", "slash\n"},
      {"ab", "plain\n"},
      {"\xc3\xa9.txt", "caf\xc3\xa9\n"},
  };
  return *files;
}

inline constexpr char kGoldenDigestHex[] =
    "92488e47ea5456b669c9f9b16affbfce342d5d7faa9fb214f711128aa0f0b03e";
// "PPSIG\0" || 0x01 || the RFC public key || Ed25519(RFC secret key, golden digest).
inline constexpr char kGoldenBundleSigHex[] =
    "50505349470001"
    "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    "b95c8d251e5ff34997de75e012d99dacec1ed240322462b8d49529bf96b14592"
    "23af186046f2d621ff088d41174c25e91fc8eb47f4d820570ceadb746033810d";

// Writes `files` (relative path, contents) into `dir`, creating what is missing.
inline std::filesystem::path WriteBundleFiles(
    const std::filesystem::path& dir,
    const std::vector<std::pair<std::string, std::string>>& files) {
  std::filesystem::create_directories(dir);
  for (const auto& [path, contents] : files) {
    std::filesystem::create_directories((dir / path).parent_path());
    WriteFile(dir / path, contents);
  }
  return dir;
}

}  // namespace polyplug::test

#endif  // POLYPLUG_TESTS_SUPPORT_GOLDEN_BUNDLE_H_
