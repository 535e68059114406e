// Bundle signatures: the canonical digest, bundle.sig, key files and the policy check
// (polyplug/core/bundle_signature.h). Ed25519 and SHA-256 come from OpenSSL 3's EVP API;
// every OpenSSL object and file descriptor is owned by a unique_ptr or an Fd.
#include "polyplug/core/bundle_signature.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/src/utf8.h"
#include "polyplug/core/error.h"

namespace polyplug::core {
namespace {

namespace fs = std::filesystem;

// The digest's domain separation tag: the 19 characters and a NUL byte.
constexpr char kDigestTag[] = "polyplug-bundle-sig";
constexpr size_t kDigestTagSize = sizeof(kDigestTag);  // 20, the NUL included
constexpr uint8_t kDigestAlgorithmSha256 = 0x01;
constexpr char kSignatureMagic[] = "PPSIG";
constexpr size_t kSignatureMagicSize = sizeof(kSignatureMagic);  // 6, the NUL included
// A key file is 32 raw bytes or 64 hex digits and a newline: anything longer is refused
// before it is read.
constexpr size_t kMaxKeyFileSize = 128;

struct EvpPkeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
struct EvpMdCtxFree {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
struct DirClose {
  void operator()(DIR* dir) const { closedir(dir); }
};
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, EvpPkeyFree>;
using EvpMdCtxPtr = std::unique_ptr<EVP_MD_CTX, EvpMdCtxFree>;
using DirPtr = std::unique_ptr<DIR, DirClose>;

// A file descriptor, closed when it goes out of scope.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  int get() const { return fd_; }
  bool ok() const { return fd_ >= 0; }
  // Gives the descriptor up (to fdopendir, or to a close whose result matters).
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

std::string ErrnoText() { return std::strerror(errno); }

std::string Hex(const uint8_t* bytes, size_t size) {
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(bytes), size));
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// `hex` (exactly 2 * out.size() hex digits, either case) into `out`.
bool DecodeHex(absl::string_view hex, absl::Span<uint8_t> out) {
  if (hex.size() != 2 * out.size()) return false;
  for (size_t i = 0; i < out.size(); ++i) {
    const int high = HexDigit(hex[2 * i]);
    const int low = HexDigit(hex[2 * i + 1]);
    if (high < 0 || low < 0) return false;
    out[i] = static_cast<uint8_t>(high << 4 | low);
  }
  return true;
}

// An error of the walk of the bundle directory `dir`, naming it.
absl::Status WalkError(ErrorReason reason, const fs::path& dir, absl::string_view what) {
  return MakeError(reason, absl::StrCat("bundle directory ", dir.string(), ": ", what));
}

absl::Status DigestError(const fs::path& dir, absl::string_view what) {
  return WalkError(ErrorReason::kSignatureInvalid, dir, what);
}

// "\"lib/x.so\"": control characters escaped, and every byte >= 0x80 too when the name is
// not UTF-8.
std::string Quoted(absl::string_view relative) {
  return absl::StrCat(
      "\"",
      IsWellFormedUtf8(relative) ? absl::Utf8SafeCHexEscape(relative) : absl::CHexEscape(relative),
      "\"");
}

// SHA-256 of everything `fd` reads from its current position on.
absl::StatusOr<Sha256Digest> Sha256OfFd(int fd) {
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  if (ctx == nullptr || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    return MakeError(ErrorReason::kInternal, "SHA-256 is not available from OpenSSL");
  }
  std::vector<char> buffer(64 * 1024);
  for (;;) {
    const ssize_t got = read(fd, buffer.data(), buffer.size());
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return absl::InternalError(ErrnoText());  // the caller names the file
    if (got == 0) break;
    EVP_DigestUpdate(ctx.get(), buffer.data(), static_cast<size_t>(got));
  }
  Sha256Digest digest{};
  unsigned int size = 0;
  EVP_DigestFinal_ex(ctx.get(), digest.data(), &size);
  return digest;
}

// Called for each regular file of a walk: `name` in the directory `dir_fd`, `relative` to
// the bundle directory, `st` its lstat. An error stops the walk.
using FileVisitor = std::function<absl::Status(int dir_fd, const std::string& name,
                                               const std::string& relative, const struct stat& st)>;

// How a walk judges a bundle directory. Both walks (DigestBundle, ListBundleFiles) refuse
// the same entries, so that what is signed and what is sent are the same files.
struct WalkRules {
  ErrorReason reason;   // of every error
  bool skip_signature;  // leaves the top-level bundle.sig out, unexamined
};

// Visits every regular file below the directory `dir_fd` (whose path relative to the
// bundle is `prefix`, empty at the top), directory by directory in readdir order. Entries
// are examined relative to their directory without following symlinks, so a directory
// swapped for a symlink meanwhile is refused rather than followed. A symlink, FIFO, socket
// or device, or a name that is not UTF-8, is an error naming it.
absl::Status WalkDirectory(int dir_fd, const std::string& prefix, const fs::path& root,
                           const WalkRules& rules, const FileVisitor& visit) {
  const int listing_fd = dup(dir_fd);
  if (listing_fd < 0) {
    return WalkError(rules.reason, root, absl::StrCat("cannot list: ", ErrnoText()));
  }
  DirPtr listing(fdopendir(listing_fd));
  if (listing == nullptr) {
    const std::string error = ErrnoText();
    close(listing_fd);
    return WalkError(
        rules.reason, root,
        absl::StrCat("cannot list ", prefix.empty() ? "it" : Quoted(prefix), ": ", error));
  }
  std::vector<std::string> names;
  errno = 0;
  while (const dirent* entry = readdir(listing.get())) {
    const absl::string_view name = entry->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
  }
  if (errno != 0) {
    const std::string error = ErrnoText();
    return WalkError(
        rules.reason, root,
        absl::StrCat("cannot list ", prefix.empty() ? "it" : Quoted(prefix), ": ", error));
  }
  listing.reset();  // one descriptor per level while the walk goes deeper
  for (const std::string& name : names) {
    const std::string relative = prefix.empty() ? name : absl::StrCat(prefix, "/", name);
    if (rules.skip_signature && relative == kBundleSignatureFileName) continue;
    if (!IsWellFormedUtf8(relative)) {
      return WalkError(rules.reason, root,
                       absl::StrCat(Quoted(relative),
                                    " has a name that is not UTF-8, which cannot be signed or "
                                    "sent"));
    }
    struct stat st;
    if (fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      return WalkError(rules.reason, root,
                       absl::StrCat("cannot stat ", Quoted(relative), ": ", ErrnoText()));
    }
    if (S_ISLNK(st.st_mode)) {
      return WalkError(rules.reason, root,
                       absl::StrCat(Quoted(relative),
                                    " is a symlink; a bundle holds only regular files and "
                                    "directories"));
    }
    if (S_ISDIR(st.st_mode)) {
      Fd sub(openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!sub.ok()) {
        return WalkError(rules.reason, root,
                         absl::StrCat("cannot open ", Quoted(relative), ": ", ErrnoText()));
      }
      if (absl::Status s = WalkDirectory(sub.get(), relative, root, rules, visit); !s.ok()) {
        return s;
      }
      continue;
    }
    if (!S_ISREG(st.st_mode)) {
      const char* kind = S_ISFIFO(st.st_mode)   ? "a FIFO"
                         : S_ISSOCK(st.st_mode) ? "a socket"
                         : S_ISCHR(st.st_mode)  ? "a character device"
                         : S_ISBLK(st.st_mode)  ? "a block device"
                                                : "not a regular file";
      return WalkError(rules.reason, root,
                       absl::StrCat(Quoted(relative), " is ", kind,
                                    "; a bundle holds only regular files and directories"));
    }
    if (absl::Status s = visit(dir_fd, name, relative, st); !s.ok()) return s;
  }
  return absl::OkStatus();
}

// DigestBundle's visitor: hashes each file into `files`.
absl::Status HashInto(const fs::path& root, int dir_fd, const std::string& name,
                      const std::string& relative, std::map<std::string, Sha256Digest>& files) {
  // O_NONBLOCK: should the file have become a FIFO since the stat, opening it does not
  // wait for a writer; the fstat below then refuses it.
  Fd file(openat(dir_fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (!file.ok()) {
    return DigestError(root, absl::StrCat("cannot read ", Quoted(relative), ": ", ErrnoText()));
  }
  struct stat st;
  if (fstat(file.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return DigestError(
        root, absl::StrCat(Quoted(relative), " stopped being a regular file while it was read"));
  }
  absl::StatusOr<Sha256Digest> sha = Sha256OfFd(file.get());
  if (!sha.ok()) {
    return DigestError(
        root, absl::StrCat("cannot read ", Quoted(relative), ": ", sha.status().message()));
  }
  files[relative] = *sha;
  return absl::OkStatus();
}

absl::StatusOr<SigningKey> KeyFromSeed(const uint8_t* seed) {
  return SigningKey::FromSeed(absl::MakeConstSpan(seed, 32));
}

absl::StatusOr<Ed25519Signature> Ed25519Sign(const SigningKey& key, const Sha256Digest& message) {
  EvpPkeyPtr pkey(EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, key.seed().data(),
                                               key.seed().size()));
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  Ed25519Signature signature{};
  size_t size = signature.size();
  // Ed25519 hashes internally: no message digest is named (NULL md).
  if (pkey == nullptr || ctx == nullptr ||
      EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, pkey.get()) != 1 ||
      EVP_DigestSign(ctx.get(), signature.data(), &size, message.data(), message.size()) != 1 ||
      size != signature.size()) {
    return MakeError(ErrorReason::kInternal, "Ed25519 signing failed in OpenSSL");
  }
  return signature;
}

bool Ed25519Verify(const Ed25519PublicKey& key, const Ed25519Signature& signature,
                   const Sha256Digest& message) {
  EvpPkeyPtr pkey(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, key.data(), key.size()));
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  return pkey != nullptr && ctx != nullptr &&
         EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, pkey.get()) == 1 &&
         EVP_DigestVerify(ctx.get(), signature.data(), signature.size(), message.data(),
                          message.size()) == 1;
}

// The contents of a key file, or INVALID_ARGUMENT naming it. `bytes` is wiped after use by
// the caller (it may hold a secret).
absl::Status ReadKeyBytes(const fs::path& file, std::array<char, kMaxKeyFileSize>& bytes,
                          size_t& size) {
  auto error = [&](absl::string_view what) {
    return MakeError(ErrorReason::kInvalidArgument,
                     absl::StrCat("key file ", file.string(), ": ", what));
  };
  Fd fd(open(file.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (!fd.ok()) return error(absl::StrCat("cannot read: ", ErrnoText()));
  struct stat st;
  if (fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return error("is not a regular file");
  if (static_cast<size_t>(st.st_size) > bytes.size()) {
    return error(
        absl::StrCat(st.st_size, " bytes; a key file holds 32 raw bytes or 64 hex digits"));
  }
  size = 0;
  for (;;) {
    const ssize_t got = read(fd.get(), bytes.data() + size, bytes.size() - size);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return error(absl::StrCat("cannot read: ", ErrnoText()));
    if (got == 0) break;
    size += static_cast<size_t>(got);
    if (size == bytes.size()) return error("too long for a key file");
  }
  return absl::OkStatus();
}

// 32 raw bytes, or 64 hex digits with an optional trailing newline, into `key`.
absl::Status DecodeKeyFile(const fs::path& file, absl::string_view contents,
                           std::array<uint8_t, 32>& key) {
  if (contents.size() == key.size()) {
    std::memcpy(key.data(), contents.data(), key.size());
    return absl::OkStatus();
  }
  absl::string_view text = contents;
  if (absl::EndsWith(text, "\r\n")) {
    text.remove_suffix(2);
  } else if (absl::EndsWith(text, "\n")) {
    text.remove_suffix(1);
  }
  if (DecodeHex(text, absl::MakeSpan(key))) return absl::OkStatus();
  return MakeError(ErrorReason::kInvalidArgument,
                   absl::StrCat("key file ", file.string(), ": ", contents.size(),
                                " bytes that are neither 32 raw bytes nor 64 hex digits "
                                "(optionally followed by a newline)"));
}

// Creates `path` with `mode` (it must not exist) and writes `bytes` to it, synced.
absl::Status WriteNewFile(const fs::path& path, absl::string_view bytes, mode_t mode) {
  Fd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode));
  if (!fd.ok()) {
    return MakeError(ErrorReason::kInvalidArgument,
                     absl::StrCat("cannot create ", path.string(), ": ", ErrnoText()));
  }
  for (size_t written = 0; written < bytes.size();) {
    const ssize_t n = write(fd.get(), bytes.data() + written, bytes.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      return MakeError(ErrorReason::kInvalidArgument,
                       absl::StrCat("cannot write ", path.string(), ": ", ErrnoText()));
    }
    written += static_cast<size_t>(n);
  }
  if (fsync(fd.get()) != 0 || close(fd.release()) != 0) {
    return MakeError(ErrorReason::kInvalidArgument,
                     absl::StrCat("cannot write ", path.string(), ": ", ErrnoText()));
  }
  return absl::OkStatus();
}

absl::StatusOr<BundleSignature> ParseSignatureBytes(absl::string_view bytes,
                                                    absl::string_view where) {
  auto error = [&](absl::string_view what) {
    return MakeError(ErrorReason::kSignatureInvalid, absl::StrCat(where, ": ", what));
  };
  if (bytes.size() != kBundleSignatureSize) {
    return error(absl::StrCat(bytes.size(), " bytes, not the ", kBundleSignatureSize,
                              " of a bundle signature (magic, version, key, signature)"));
  }
  if (bytes.substr(0, kSignatureMagicSize) !=
      absl::string_view(kSignatureMagic, kSignatureMagicSize)) {
    return error("bad magic: the file does not start with \"PPSIG\\0\"");
  }
  const auto version = static_cast<uint8_t>(bytes[kSignatureMagicSize]);
  if (version != kBundleSignatureVersion) {
    return error(absl::StrCat("format version ", version, "; this host reads version ",
                              kBundleSignatureVersion));
  }
  BundleSignature parsed;
  const char* key = bytes.data() + kSignatureMagicSize + 1;
  std::memcpy(parsed.key.data(), key, parsed.key.size());
  std::memcpy(parsed.signature.data(), key + parsed.key.size(), parsed.signature.size());
  return parsed;
}

// Reads <dir>/bundle.sig: std::nullopt when there is none, its parse otherwise.
absl::StatusOr<std::optional<BundleSignature>> ReadSignatureFile(const fs::path& dir) {
  const fs::path file = dir / std::string(kBundleSignatureFileName);
  const std::string where = absl::StrCat(kBundleSignatureFileName, " in ", dir.string());
  auto error = [&](absl::string_view what) {
    return MakeError(ErrorReason::kSignatureInvalid, absl::StrCat(where, ": ", what));
  };
  Fd fd(open(file.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (!fd.ok()) {
    if (errno == ENOENT) return std::optional<BundleSignature>();
    if (errno == ELOOP) return error("is a symlink; it must be a regular file");
    return error(absl::StrCat("cannot read: ", ErrnoText()));
  }
  struct stat st;
  if (fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return error("is not a regular file");
  if (static_cast<size_t>(st.st_size) != kBundleSignatureSize) {
    return error(absl::StrCat(st.st_size, " bytes, not the ", kBundleSignatureSize,
                              " of a bundle signature (magic, version, key, signature)"));
  }
  std::string bytes(kBundleSignatureSize + 1, '\0');  // one more: a file that grew shows
  size_t size = 0;
  for (;;) {
    const ssize_t got = read(fd.get(), bytes.data() + size, bytes.size() - size);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return error(absl::StrCat("cannot read: ", ErrnoText()));
    if (got == 0) break;
    size += static_cast<size_t>(got);
    if (size == bytes.size()) break;
  }
  bytes.resize(size);
  absl::StatusOr<BundleSignature> parsed = ParseSignatureBytes(bytes, where);
  if (!parsed.ok()) return parsed.status();
  return std::optional<BundleSignature>(*parsed);
}

}  // namespace

absl::StatusOr<SignaturePolicy> ParseSignaturePolicy(absl::string_view text) {
  for (SignaturePolicy policy :
       {SignaturePolicy::kOff, SignaturePolicy::kWarn, SignaturePolicy::kRequired}) {
    if (text == SignaturePolicyName(policy)) return policy;
  }
  return MakeError(ErrorReason::kInvalidArgument,
                   absl::StrCat("signature policy \"", absl::CHexEscape(text),
                                "\" is none of off, warn, required"));
}

absl::string_view SignaturePolicyName(SignaturePolicy policy) {
  switch (policy) {
    case SignaturePolicy::kOff:
      return "off";
    case SignaturePolicy::kWarn:
      return "warn";
    case SignaturePolicy::kRequired:
      return "required";
  }
  return "unknown";
}

absl::StatusOr<SigningKey> SigningKey::FromSeed(absl::Span<const uint8_t> seed) {
  if (seed.size() != 32) {
    return MakeError(ErrorReason::kInvalidArgument,
                     absl::StrCat("an Ed25519 seed is 32 bytes, not ", seed.size()));
  }
  EvpPkeyPtr pkey(
      EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, seed.data(), seed.size()));
  SigningKey key;
  size_t size = key.public_key_.size();
  if (pkey == nullptr ||
      EVP_PKEY_get_raw_public_key(pkey.get(), key.public_key_.data(), &size) != 1 ||
      size != key.public_key_.size()) {
    return MakeError(ErrorReason::kInternal, "OpenSSL cannot derive an Ed25519 public key");
  }
  std::copy(seed.begin(), seed.end(), key.seed_.begin());
  return key;
}

SigningKey::~SigningKey() { OPENSSL_cleanse(seed_.data(), seed_.size()); }

absl::StatusOr<SigningKey> GenerateSigningKey() {
  std::array<uint8_t, 32> seed{};
  if (RAND_bytes(seed.data(), static_cast<int>(seed.size())) != 1) {
    return MakeError(ErrorReason::kInternal, "the system's random source gave no key (RAND_bytes)");
  }
  absl::StatusOr<SigningKey> key = KeyFromSeed(seed.data());
  OPENSSL_cleanse(seed.data(), seed.size());
  return key;
}

absl::StatusOr<SigningKey> ReadSigningKeyFile(const fs::path& file) {
  std::array<char, kMaxKeyFileSize> bytes{};
  std::array<uint8_t, 32> seed{};
  size_t size = 0;
  absl::Status status = ReadKeyBytes(file, bytes, size);
  if (status.ok()) status = DecodeKeyFile(file, absl::string_view(bytes.data(), size), seed);
  absl::StatusOr<SigningKey> key =
      status.ok() ? KeyFromSeed(seed.data()) : absl::StatusOr<SigningKey>(status);
  OPENSSL_cleanse(bytes.data(), bytes.size());
  OPENSSL_cleanse(seed.data(), seed.size());
  return key;
}

absl::StatusOr<Ed25519PublicKey> ReadPublicKeyFile(const fs::path& file) {
  std::array<char, kMaxKeyFileSize> bytes{};
  size_t size = 0;
  if (absl::Status s = ReadKeyBytes(file, bytes, size); !s.ok()) return s;
  Ed25519PublicKey key{};
  if (absl::Status s = DecodeKeyFile(file, absl::string_view(bytes.data(), size), key); !s.ok())
    return s;
  return key;
}

absl::StatusOr<Ed25519PublicKey> PublicKeyFromHex(absl::string_view hex) {
  Ed25519PublicKey key{};
  if (!DecodeHex(hex, absl::MakeSpan(key))) {
    return MakeError(ErrorReason::kInvalidArgument,
                     absl::StrCat("\"", absl::CHexEscape(hex),
                                  "\" is not an Ed25519 public key (64 hex digits)"));
  }
  return key;
}

absl::Status WriteKeyPair(const fs::path& dir, const SigningKey& key) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    if (!dir.parent_path().empty()) fs::create_directories(dir.parent_path(), ec);
    if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
      return MakeError(ErrorReason::kInvalidArgument,
                       absl::StrCat("cannot create directory ", dir.string(), ": ", ErrnoText()));
    }
  } else if (!fs::is_directory(dir, ec)) {
    return MakeError(ErrorReason::kInvalidArgument,
                     absl::StrCat(dir.string(), " exists and is not a directory"));
  }
  const fs::path secret = dir / std::string(kSigningKeyFileName);
  const fs::path verifying = dir / std::string(kVerifyingKeyFileName);
  for (const fs::path& file : {secret, verifying}) {
    if (fs::exists(fs::symlink_status(file, ec))) {
      return MakeError(ErrorReason::kInvalidArgument,
                       absl::StrCat(file.string(),
                                    " already exists; refusing to overwrite a key (move it away "
                                    "or write the new pair elsewhere)"));
    }
  }
  const absl::string_view seed(reinterpret_cast<const char*>(key.seed().data()), key.seed().size());
  if (absl::Status s = WriteNewFile(secret, seed, 0600); !s.ok()) return s;
  const absl::string_view public_key(reinterpret_cast<const char*>(key.public_key().data()),
                                     key.public_key().size());
  if (absl::Status s = WriteNewFile(verifying, public_key, 0644); !s.ok()) {
    fs::remove(secret, ec);  // no half pair left behind
    return s;
  }
  return absl::OkStatus();
}

std::string PublicKeyToHex(const Ed25519PublicKey& key) { return Hex(key.data(), key.size()); }

std::string DigestToHex(const Sha256Digest& digest) { return Hex(digest.data(), digest.size()); }

bool IsSha256Hex(absl::string_view text) {
  return text.size() == 2 * sizeof(Sha256Digest) &&
         std::all_of(text.begin(), text.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

absl::StatusOr<BundleDigest> DigestBundle(const fs::path& dir) {
  Fd root(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root.ok()) {
    return DigestError(dir, absl::StrCat("cannot open it as a directory: ", ErrnoText()));
  }
  std::map<std::string, Sha256Digest> files;
  const WalkRules rules{.reason = ErrorReason::kSignatureInvalid, .skip_signature = true};
  if (absl::Status s = WalkDirectory(
          root.get(), "", dir, rules,
          [&](int dir_fd, const std::string& name, const std::string& relative,
              const struct stat&) { return HashInto(dir, dir_fd, name, relative, files); });
      !s.ok()) {
    return s;
  }
  if (files.empty()) return DigestError(dir, "no files to sign (an empty bundle)");
  BundleDigest result;
  result.digest = CanonicalBundleDigest(files);
  for (const auto& [path, sha] : files) result.file_sha256.emplace(path, DigestToHex(sha));
  return result;
}

absl::StatusOr<std::vector<BundleFileEntry>> ListBundleFiles(const fs::path& dir) {
  Fd root(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root.ok()) {
    return WalkError(ErrorReason::kInvalidArgument, dir,
                     absl::StrCat("cannot open it as a directory: ", ErrnoText()));
  }
  std::vector<BundleFileEntry> files;
  const WalkRules rules{.reason = ErrorReason::kInvalidArgument, .skip_signature = false};
  if (absl::Status s = WalkDirectory(
          root.get(), "", dir, rules,
          [&](int, const std::string&, const std::string& relative, const struct stat& st) {
            files.push_back(BundleFileEntry{.path = relative,
                                            .size = static_cast<uint64_t>(st.st_size),
                                            .executable = (st.st_mode & S_IXUSR) != 0});
            return absl::OkStatus();
          });
      !s.ok()) {
    return s;
  }
  // std::string compares byte-wise (as unsigned char): the digest's order.
  std::sort(files.begin(), files.end(),
            [](const BundleFileEntry& a, const BundleFileEntry& b) { return a.path < b.path; });
  return files;
}

absl::StatusOr<Sha256Digest> Sha256OfFile(const fs::path& file) {
  Fd fd(open(file.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  struct stat st;
  if (!fd.ok() || fstat(fd.get(), &st) != 0) {
    return MakeError(ErrorReason::kInvalidArgument,
                     absl::StrCat("cannot read ", file.string(), ": ", ErrnoText()));
  }
  if (!S_ISREG(st.st_mode)) {
    return MakeError(ErrorReason::kInvalidArgument,
                     absl::StrCat("cannot hash ", file.string(), ": not a regular file"));
  }
  absl::StatusOr<Sha256Digest> sha = Sha256OfFd(fd.get());
  if (!sha.ok()) {
    return MakeError(ErrorReason::kInvalidArgument,
                     absl::StrCat("cannot read ", file.string(), ": ", sha.status().message()));
  }
  return sha;
}

Sha256Digest CanonicalBundleDigest(const std::map<std::string, Sha256Digest>& files) {
  // std::map orders std::string keys byte-wise (char_traits<char> compares as unsigned
  // char): the sort the digest is defined with.
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  Sha256Digest digest{};
  if (ctx == nullptr || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) return digest;
  EVP_DigestUpdate(ctx.get(), kDigestTag, kDigestTagSize);
  EVP_DigestUpdate(ctx.get(), &kDigestAlgorithmSha256, 1);
  uint8_t count[8];
  const uint64_t file_count = files.size();
  for (size_t i = 0; i < sizeof(count); ++i) count[i] = static_cast<uint8_t>(file_count >> (8 * i));
  EVP_DigestUpdate(ctx.get(), count, sizeof(count));
  for (const auto& [path, sha] : files) {
    const uint8_t separator = 0;
    EVP_DigestUpdate(ctx.get(), path.data(), path.size());
    EVP_DigestUpdate(ctx.get(), &separator, 1);
    EVP_DigestUpdate(ctx.get(), sha.data(), sha.size());
  }
  unsigned int size = 0;
  EVP_DigestFinal_ex(ctx.get(), digest.data(), &size);
  return digest;
}

absl::StatusOr<BundleSignature> ParseBundleSignature(absl::string_view bytes) {
  return ParseSignatureBytes(bytes, kBundleSignatureFileName);
}

std::string SerializeBundleSignature(const BundleSignature& signature) {
  std::string bytes(kSignatureMagic, kSignatureMagicSize);
  bytes.push_back(static_cast<char>(kBundleSignatureVersion));
  bytes.append(reinterpret_cast<const char*>(signature.key.data()), signature.key.size());
  bytes.append(reinterpret_cast<const char*>(signature.signature.data()),
               signature.signature.size());
  return bytes;
}

absl::StatusOr<BundleSignature> SignBundle(const fs::path& dir, const SigningKey& key) {
  absl::StatusOr<BundleDigest> digest = DigestBundle(dir);
  if (!digest.ok()) return digest.status();
  absl::StatusOr<Ed25519Signature> signature = Ed25519Sign(key, digest->digest);
  if (!signature.ok()) return signature.status();
  const BundleSignature written{key.public_key(), *signature};
  // A temporary file renamed over bundle.sig: a reader sees the old file or the new one,
  // never half of one.
  const fs::path file = dir / std::string(kBundleSignatureFileName);
  const fs::path temp = dir / absl::StrCat(".", kBundleSignatureFileName, ".", getpid(), ".tmp");
  std::error_code ec;
  fs::remove(temp, ec);
  if (absl::Status s = WriteNewFile(temp, SerializeBundleSignature(written), 0644); !s.ok()) {
    fs::remove(temp, ec);
    return s;
  }
  if (rename(temp.c_str(), file.c_str()) != 0) {
    const std::string error = ErrnoText();
    fs::remove(temp, ec);
    return MakeError(ErrorReason::kInvalidArgument,
                     absl::StrCat("cannot write ", file.string(), ": ", error));
  }
  return written;
}

absl::StatusOr<SignatureVerification> VerifyBundleSignature(
    const fs::path& dir, SignaturePolicy policy, absl::Span<const Ed25519PublicKey> trusted_keys) {
  SignatureVerification result;
  if (policy == SignaturePolicy::kOff) return result;
  // kRequired refuses with the problem; kWarn passes it on as the warning.
  auto problem = [&](absl::Status status) -> absl::StatusOr<SignatureVerification> {
    if (policy == SignaturePolicy::kRequired) return status;
    result.warning = absl::StrCat("[", ReasonToken(ReasonOf(status)), "] ", status.message());
    return result;
  };

  absl::StatusOr<std::optional<BundleSignature>> signature = ReadSignatureFile(dir);
  if (!signature.ok()) return problem(signature.status());
  if (!signature->has_value()) {
    return problem(MakeError(ErrorReason::kUnsignedBundle,
                             absl::StrCat("bundle in ", dir.string(), " is not signed: it has no ",
                                          kBundleSignatureFileName)));
  }
  absl::StatusOr<BundleDigest> digest = DigestBundle(dir);
  if (!digest.ok()) return problem(digest.status());
  result.key = (*signature)->key;
  result.digest = *std::move(digest);
  if (!Ed25519Verify(result.key, (*signature)->signature, result.digest.digest)) {
    return problem(MakeError(
        ErrorReason::kSignatureInvalid,
        absl::StrCat(kBundleSignatureFileName, " in ", dir.string(),
                     ": signature does not match the bundle's files (changed, added or removed "
                     "after signing), or was not made by the key it names (",
                     PublicKeyToHex(result.key), ")")));
  }
  result.verified = true;
  if (!trusted_keys.empty() &&
      std::find(trusted_keys.begin(), trusted_keys.end(), result.key) == trusted_keys.end()) {
    return problem(MakeError(
        ErrorReason::kUntrustedSigningKey,
        absl::StrCat(kBundleSignatureFileName, " in ", dir.string(), ": valid, but signed by key ",
                     PublicKeyToHex(result.key), ", which is not one of the ", trusted_keys.size(),
                     " trusted key(s)")));
  }
  result.trusted = true;
  return result;
}

}  // namespace polyplug::core
