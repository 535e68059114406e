// Bundle signatures, bit-compatible with polyplug: the canonical digest of a bundle
// directory, the `bundle.sig` file that signs it with Ed25519, key files, and the check a
// signature policy makes. docs/SIGNING.md describes the formats and when the runtime checks.
//
// Without trusted keys a valid signature proves integrity and self-consistency only (trust
// on first use: the key travels in the file); with them, the key must also be one of them.
#ifndef POLYPLUG_CORE_BUNDLE_SIGNATURE_H_
#define POLYPLUG_CORE_BUNDLE_SIGNATURE_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace polyplug::core {

// What a load or reload requires of a bundle's signature. Values are polyplug's.
enum class SignaturePolicy : int {
  kOff = 0,       // nothing is read or hashed
  kWarn = 1,      // a missing, invalid or untrusted signature is a Warn log line
  kRequired = 2,  // ... is an error: UNSIGNED_BUNDLE, SIGNATURE_INVALID, UNTRUSTED_SIGNING_KEY
};

// "off", "warn" or "required" (case-sensitive); INVALID_ARGUMENT otherwise.
absl::StatusOr<SignaturePolicy> ParseSignaturePolicy(absl::string_view text);
// "off", "warn", "required".
absl::string_view SignaturePolicyName(SignaturePolicy policy);

// The signature file, at the top of the bundle directory; the one file the digest skips.
inline constexpr absl::string_view kBundleSignatureFileName = "bundle.sig";
// magic "PPSIG\0" (6) || version (1) || public key (32) || signature (64).
inline constexpr size_t kBundleSignatureSize = 103;
inline constexpr uint8_t kBundleSignatureVersion = 1;
// The key files `keygen` writes.
inline constexpr absl::string_view kSigningKeyFileName = "signing.key";
inline constexpr absl::string_view kVerifyingKeyFileName = "verifying.key";

using Sha256Digest = std::array<uint8_t, 32>;
using Ed25519PublicKey = std::array<uint8_t, 32>;
using Ed25519Signature = std::array<uint8_t, 64>;

// An Ed25519 signing key: its 32-byte seed (RFC 8032's secret key, ed25519-dalek's
// SigningKey::to_bytes()) and the public key derived from it. The seed is wiped when the
// object is destroyed.
class SigningKey {
 public:
  // Any 32 bytes are a seed; INTERNAL only when OpenSSL cannot derive the public key.
  static absl::StatusOr<SigningKey> FromSeed(absl::Span<const uint8_t> seed);

  SigningKey(const SigningKey&) = default;
  SigningKey& operator=(const SigningKey&) = default;
  ~SigningKey();

  const std::array<uint8_t, 32>& seed() const { return seed_; }
  const Ed25519PublicKey& public_key() const { return public_key_; }

 private:
  SigningKey() = default;

  std::array<uint8_t, 32> seed_{};
  Ed25519PublicKey public_key_{};
};

// A new key from the system's random source (RAND_bytes).
absl::StatusOr<SigningKey> GenerateSigningKey();

// Key files hold 32 raw bytes (signing.key: the seed; verifying.key: the public key), or,
// when read, 64 hex digits optionally followed by a newline (a key pasted into a CI
// secret). INVALID_ARGUMENT names the file and what is wrong with it.
absl::StatusOr<SigningKey> ReadSigningKeyFile(const std::filesystem::path& file);
absl::StatusOr<Ed25519PublicKey> ReadPublicKeyFile(const std::filesystem::path& file);
// A public key given as 64 hex digits (either case); INVALID_ARGUMENT otherwise.
absl::StatusOr<Ed25519PublicKey> PublicKeyFromHex(absl::string_view hex);

// Writes <dir>/signing.key (mode 0600) and <dir>/verifying.key (0644) as 32 raw bytes each,
// creating `dir` (0700) if needed. Refuses, writing nothing, when either file exists.
absl::Status WriteKeyPair(const std::filesystem::path& dir, const SigningKey& key);

// Lowercase hex: 64 digits for a key or a digest.
std::string PublicKeyToHex(const Ed25519PublicKey& key);
std::string DigestToHex(const Sha256Digest& digest);
// Whether `text` is a SHA-256 as DigestToHex (and sha256sum) prints it: 64 lowercase hex
// digits. The form every digest field of the control plane takes.
bool IsSha256Hex(absl::string_view text);

// The canonical digest of a bundle directory, and the SHA-256 of each file it covers.
struct BundleDigest {
  // SHA-256 of: "polyplug-bundle-sig\0" || 0x01 || file count (u64 LE) || for each file,
  // sorted byte-wise by relative path: path || 0x00 || SHA-256(contents).
  Sha256Digest digest{};
  // '/'-separated path relative to the bundle directory -> SHA-256 of the file's bytes
  // (lowercase hex), for every regular file anywhere below it except the top-level
  // bundle.sig: what lets a caller check that the bytes it loads are the bytes signed.
  std::map<std::string, std::string> file_sha256;
};

// Hashes every regular file below `dir`, recursively. SIGNATURE_INVALID names the file
// when one is a symlink, a FIFO, socket or device, cannot be read, or has a name that is
// not UTF-8, and says so when there is no file to sign.
absl::StatusOr<BundleDigest> DigestBundle(const std::filesystem::path& dir);

// A regular file of a bundle directory, as PushBundle and FetchBundle send it.
struct BundleFileEntry {
  std::string path;         // '/'-separated, relative to the bundle directory
  uint64_t size = 0;        // bytes, when listed
  bool executable = false;  // its owner may execute it (a push places it with mode 0755)
};

// Every regular file below `dir`, recursively, the top-level bundle.sig included, sorted
// byte-wise by path: the files of a bundle as a push or a fetch sends them, in the order
// it sends them. Judges entries as DigestBundle does (the files sent are the files
// signed): INVALID_ARGUMENT names an entry that is a symlink, FIFO, socket or device,
// cannot be examined or has a name that is not UTF-8, and says so when `dir` is not a
// directory. Reads no file's bytes. An empty directory is an empty list.
absl::StatusOr<std::vector<BundleFileEntry>> ListBundleFiles(const std::filesystem::path& dir);

// The SHA-256 of the regular file `file`, read to its end (a symlink is refused).
// INVALID_ARGUMENT names the file when it cannot be read.
absl::StatusOr<Sha256Digest> Sha256OfFile(const std::filesystem::path& file);

// The canonical digest of files already hashed: '/'-separated relative path -> SHA-256 of
// the file's bytes, bundle.sig left out by the caller. What DigestBundle computes once it
// hashed the files; PushBundle computes it over the files as they arrive.
Sha256Digest CanonicalBundleDigest(const std::map<std::string, Sha256Digest>& files);

// The contents of a bundle.sig.
struct BundleSignature {
  Ed25519PublicKey key{};
  Ed25519Signature signature{};  // over the 32 bytes of the canonical digest
};

// The 103 bytes of a bundle.sig. SIGNATURE_INVALID says which part is wrong: the size, the
// magic or the version.
absl::StatusOr<BundleSignature> ParseBundleSignature(absl::string_view bytes);
std::string SerializeBundleSignature(const BundleSignature& signature);

// Signs the bundle in `dir` (its digest, without any bundle.sig already there) and writes
// <dir>/bundle.sig atomically (a temporary file renamed over it). Returns what it wrote.
absl::StatusOr<BundleSignature> SignBundle(const std::filesystem::path& dir, const SigningKey& key);

// What VerifyBundleSignature found.
struct SignatureVerification {
  // bundle.sig is well-formed and its signature holds over the files: `key` signed
  // `digest`, whose file_sha256 are the bytes signed. Set even when the key is untrusted.
  bool verified = false;
  // `verified` and, when trusted keys were given, `key` is one of them.
  bool trusted = false;
  Ed25519PublicKey key{};
  BundleDigest digest;
  // kWarn only: what was wrong ("[UNSIGNED_BUNDLE] ..."), which kRequired would have
  // refused. Empty when nothing was.
  std::string warning;
};

// Checks the signature of the bundle in `dir` as `policy` requires. kOff returns at once,
// reading nothing. kRequired fails with UNSIGNED_BUNDLE (no bundle.sig), SIGNATURE_INVALID
// (malformed, or not over these files) or UNTRUSTED_SIGNING_KEY (valid, but its key is not
// among a non-empty `trusted_keys`), each message naming `dir`; kWarn returns those
// problems as `warning` instead.
absl::StatusOr<SignatureVerification> VerifyBundleSignature(
    const std::filesystem::path& dir, SignaturePolicy policy,
    absl::Span<const Ed25519PublicKey> trusted_keys = {});

}  // namespace polyplug::core

#endif  // POLYPLUG_CORE_BUNDLE_SIGNATURE_H_
