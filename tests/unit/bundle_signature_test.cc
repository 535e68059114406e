// Bundle signatures (polyplug/core/bundle_signature.h) against polyplug's format, bit for
// bit: the golden vector of support/golden_bundle.h says where its digest and bundle.sig
// come from. docs/SIGNING.md describes the format.
#include "polyplug/core/bundle_signature.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "polyplug/core/error.h"
#include "support/bundle_fixture.h"
#include "support/golden_bundle.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
using core::ErrorReason;
using core::SignaturePolicy;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::string Unhex(absl::string_view hex) { return absl::HexStringToBytes(hex); }

core::SigningKey RfcKey() {
  const std::string seed = Unhex(kRfcSeedHex);
  auto key = core::SigningKey::FromSeed(
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(seed.data()), seed.size()));
  EXPECT_TRUE(key.ok()) << key.status();
  return *key;
}

class BundleSignatureTest : public ::testing::Test {
 protected:
  // Writes `files` (relative path -> contents) into a fresh bundle directory.
  fs::path WriteBundle(const std::vector<std::pair<std::string, std::string>>& files,
                       absl::string_view name = "bundle") {
    return WriteBundleFiles(temp_ / name, files);
  }
  fs::path SignedBundle(absl::string_view name = "bundle") {
    const fs::path dir = WriteBundle(GoldenFiles(), name);
    auto signed_ = core::SignBundle(dir, RfcKey());
    EXPECT_TRUE(signed_.ok()) << signed_.status();
    return dir;
  }

  TempDir temp_;
};

TEST_F(BundleSignatureTest, GoldenDigestIsPolyplugsCanonicalDigest) {
  const fs::path dir = WriteBundle(GoldenFiles());
  absl::StatusOr<core::BundleDigest> digest = core::DigestBundle(dir);
  ASSERT_THAT(digest.status(), IsOk());
  EXPECT_EQ(core::DigestToHex(digest->digest), kGoldenDigestHex);
  std::vector<std::string> order;
  for (const auto& [path, sha] : digest->file_sha256) order.push_back(path);
  EXPECT_THAT(order,
              ElementsAre("a.b", "a/b", "ab", "lib/data.bin", "manifest.toml", "\xc3\xa9.txt"));
  EXPECT_EQ(digest->file_sha256.at("a/b"),
            "8578a26bad9cf662e6e0cd91540eea63fb2ed5b5b2cebc471364c137b12931e6");
  EXPECT_EQ(digest->file_sha256.at("lib/data.bin"),
            "3d1f57c984978ef98a18378c8166c1cb8ede02c03eeb6aee7e2f121dfeee3e56");
}

TEST_F(BundleSignatureTest, GoldenBundleSigIsPolyplugsFormat) {
  const core::SigningKey key = RfcKey();
  EXPECT_EQ(core::PublicKeyToHex(key.public_key()), kRfcPublicKeyHex);
  const fs::path dir = WriteBundle(GoldenFiles());
  absl::StatusOr<core::BundleSignature> written = core::SignBundle(dir, key);
  ASSERT_THAT(written.status(), IsOk());
  const std::string bytes = ReadFile(dir / "bundle.sig");
  ASSERT_EQ(bytes.size(), core::kBundleSignatureSize);
  EXPECT_EQ(absl::BytesToHexString(bytes), kGoldenBundleSigHex);
  EXPECT_EQ(core::SerializeBundleSignature(*written), bytes);

  // And the golden file, written by hand, verifies.
  fs::remove(dir / "bundle.sig");
  WriteFile(dir / "bundle.sig", Unhex(kGoldenBundleSigHex));
  absl::StatusOr<core::SignatureVerification> verified =
      core::VerifyBundleSignature(dir, SignaturePolicy::kRequired);
  ASSERT_THAT(verified.status(), IsOk());
  EXPECT_TRUE(verified->verified);
  EXPECT_TRUE(verified->trusted);
  EXPECT_EQ(core::PublicKeyToHex(verified->key), kRfcPublicKeyHex);
  EXPECT_EQ(core::DigestToHex(verified->digest.digest), kGoldenDigestHex);
  EXPECT_THAT(verified->warning, IsEmpty());
}

TEST_F(BundleSignatureTest, SortIsByteWiseOnTheWholeRelativePath) {
  // Component-wise ordering would put "a/b" first; byte-wise puts "a.b" first.
  const fs::path dir = WriteBundle({{"ab", "1"}, {"a/b", "2"}, {"a.b", "3"}, {"a-", "4"}});
  absl::StatusOr<core::BundleDigest> digest = core::DigestBundle(dir);
  ASSERT_THAT(digest.status(), IsOk());
  std::vector<std::string> order;
  for (const auto& [path, sha] : digest->file_sha256) order.push_back(path);
  EXPECT_THAT(order, ElementsAre("a-", "a.b", "a/b", "ab"));
}

TEST_F(BundleSignatureTest, SignThenVerifyWithAGeneratedKey) {
  absl::StatusOr<core::SigningKey> key = core::GenerateSigningKey();
  ASSERT_THAT(key.status(), IsOk());
  const fs::path dir = WriteBundle(GoldenFiles());
  ASSERT_THAT(core::SignBundle(dir, *key).status(), IsOk());
  auto verified = core::VerifyBundleSignature(dir, SignaturePolicy::kRequired);
  ASSERT_THAT(verified.status(), IsOk());
  EXPECT_EQ(verified->key, key->public_key());
  // Signing again replaces bundle.sig and ignores the old one: Ed25519 is deterministic.
  const std::string first = ReadFile(dir / "bundle.sig");
  ASSERT_THAT(core::SignBundle(dir, *key).status(), IsOk());
  EXPECT_EQ(ReadFile(dir / "bundle.sig"), first);
  EXPECT_EQ(CountFilesUnder(dir), GoldenFiles().size() + 1) << "no temporary file left";
}

TEST_F(BundleSignatureTest, OffReadsNothing) {
  auto result = core::VerifyBundleSignature(temp_ / "does-not-exist", SignaturePolicy::kOff);
  ASSERT_THAT(result.status(), IsOk());
  EXPECT_FALSE(result->verified);
  EXPECT_THAT(result->warning, IsEmpty());
}

TEST_F(BundleSignatureTest, UnsignedBundle) {
  const fs::path dir = WriteBundle(GoldenFiles());
  auto required = core::VerifyBundleSignature(dir, SignaturePolicy::kRequired);
  EXPECT_THAT(required.status(), HasReason(ErrorReason::kUnsignedBundle));
  EXPECT_THAT(required.status().message(), HasSubstr(dir.string()));
  auto warn = core::VerifyBundleSignature(dir, SignaturePolicy::kWarn);
  ASSERT_THAT(warn.status(), IsOk());
  EXPECT_FALSE(warn->verified);
  EXPECT_THAT(warn->warning, HasSubstr("[UNSIGNED_BUNDLE]"));
  EXPECT_THAT(warn->warning, HasSubstr(dir.string()));
}

// The signature no longer holds: SIGNATURE_INVALID naming the directory.
void ExpectMismatch(const fs::path& dir) {
  auto result = core::VerifyBundleSignature(dir, SignaturePolicy::kRequired);
  EXPECT_THAT(result.status(), HasReason(ErrorReason::kSignatureInvalid));
  EXPECT_THAT(
      result.status().message(),
      HasSubstr("bundle.sig in " + dir.string() + ": signature does not match the bundle's files"));
  auto warn = core::VerifyBundleSignature(dir, SignaturePolicy::kWarn);
  ASSERT_THAT(warn.status(), IsOk());
  EXPECT_FALSE(warn->verified);
  EXPECT_THAT(warn->warning, HasSubstr("[SIGNATURE_INVALID]"));
}

TEST_F(BundleSignatureTest, TamperedFile) {
  const fs::path dir = SignedBundle();
  WriteFile(dir / "a/b", "slash!\n");
  ExpectMismatch(dir);
}

TEST_F(BundleSignatureTest, AddedFile) {
  const fs::path dir = SignedBundle();
  WriteFile(dir / "lib" / "extra.so", "");
  ExpectMismatch(dir);
}

TEST_F(BundleSignatureTest, RemovedFile) {
  const fs::path dir = SignedBundle();
  fs::remove(dir / "ab");
  ExpectMismatch(dir);
}

TEST_F(BundleSignatureTest, RenamedFile) {
  const fs::path dir = SignedBundle();
  fs::rename(dir / "ab", dir / "ac");
  ExpectMismatch(dir);
}

TEST_F(BundleSignatureTest, SignatureOfAnotherBundle) {
  const fs::path dir = SignedBundle();
  const fs::path other = WriteBundle({{"manifest.toml", "name = \"other\"\n"}}, "other");
  ASSERT_THAT(core::SignBundle(other, RfcKey()).status(), IsOk());
  fs::copy_file(other / "bundle.sig", dir / "bundle.sig", fs::copy_options::overwrite_existing);
  ExpectMismatch(dir);
}

TEST_F(BundleSignatureTest, ForgedSignatureBytes) {
  const fs::path dir = SignedBundle();
  std::string bytes = ReadFile(dir / "bundle.sig");
  bytes[core::kBundleSignatureSize - 1] ^= 0x01;
  WriteFile(dir / "bundle.sig", bytes);
  ExpectMismatch(dir);
}

struct MalformedCase {
  std::string name;
  std::string bytes;
  std::string message;
};

TEST_F(BundleSignatureTest, MalformedBundleSig) {
  const std::string good = Unhex(kGoldenBundleSigHex);
  std::string bad_magic = good;
  bad_magic[5] = 'X';
  std::string bad_version = good;
  bad_version[6] = 2;
  const std::vector<MalformedCase> cases = {
      {"Empty", "", "0 bytes, not the 103 of a bundle signature"},
      {"Short", good.substr(0, 102), "102 bytes, not the 103"},
      {"Long", good + "\n", "104 bytes, not the 103"},
      {"BadMagic", bad_magic, "bad magic"},
      {"BadVersion", bad_version, "format version 2; this host reads version 1"},
  };
  const fs::path dir = WriteBundle(GoldenFiles());
  for (const MalformedCase& c : cases) {
    SCOPED_TRACE(c.name);
    auto parsed = core::ParseBundleSignature(c.bytes);
    EXPECT_THAT(parsed.status(), HasReason(ErrorReason::kSignatureInvalid));
    EXPECT_THAT(parsed.status().message(), HasSubstr(c.message));
    WriteFile(dir / "bundle.sig", c.bytes);
    auto verified = core::VerifyBundleSignature(dir, SignaturePolicy::kRequired);
    EXPECT_THAT(verified.status(), HasReason(ErrorReason::kSignatureInvalid));
    EXPECT_THAT(verified.status().message(), HasSubstr("bundle.sig in " + dir.string()));
    EXPECT_THAT(verified.status().message(), HasSubstr(c.message));
  }
  auto parsed = core::ParseBundleSignature(good);
  ASSERT_THAT(parsed.status(), IsOk());
  EXPECT_EQ(core::PublicKeyToHex(parsed->key), kRfcPublicKeyHex);
  EXPECT_EQ(core::SerializeBundleSignature(*parsed), good);
}

TEST_F(BundleSignatureTest, SymlinkIsRefusedNamingIt) {
  const fs::path dir = WriteBundle(GoldenFiles());
  fs::create_symlink("ab", dir / "lib" / "link");
  for (auto result : {core::DigestBundle(dir).status(), core::SignBundle(dir, RfcKey()).status()}) {
    EXPECT_THAT(result, HasReason(ErrorReason::kSignatureInvalid));
    EXPECT_THAT(result.message(), HasSubstr("\"lib/link\" is a symlink"));
    EXPECT_THAT(result.message(), HasSubstr(dir.string()));
  }
  EXPECT_FALSE(fs::exists(dir / "bundle.sig"));
  fs::remove(dir / "lib" / "link");
  fs::create_directory_symlink(dir / "lib", dir / "dirlink");
  EXPECT_THAT(core::DigestBundle(dir).status().message(), HasSubstr("\"dirlink\" is a symlink"));
}

TEST_F(BundleSignatureTest, BundleSigAsSymlinkIsInvalid) {
  const fs::path dir = SignedBundle();
  fs::rename(dir / "bundle.sig", temp_ / "real.sig");
  fs::create_symlink(temp_ / "real.sig", dir / "bundle.sig");
  auto result = core::VerifyBundleSignature(dir, SignaturePolicy::kRequired);
  EXPECT_THAT(result.status(), HasReason(ErrorReason::kSignatureInvalid));
  EXPECT_THAT(result.status().message(), HasSubstr("is a symlink"));
}

TEST_F(BundleSignatureTest, FifoAndSocketAreRefusedNamingThem) {
  const fs::path dir = WriteBundle(GoldenFiles());
  ASSERT_EQ(mkfifo((dir / "lib" / "pipe").c_str(), 0600), 0) << std::strerror(errno);
  auto digest = core::DigestBundle(dir);
  EXPECT_THAT(digest.status(), HasReason(ErrorReason::kSignatureInvalid));
  EXPECT_THAT(digest.status().message(), HasSubstr("\"lib/pipe\" is a FIFO"));
  fs::remove(dir / "lib" / "pipe");

  const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  const std::string path = (dir / "sock").string();
  ASSERT_LT(path.size(), sizeof(address.sun_path));
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  digest = core::DigestBundle(dir);
  close(fd);
  EXPECT_THAT(digest.status(), HasReason(ErrorReason::kSignatureInvalid));
  EXPECT_THAT(digest.status().message(), HasSubstr("\"sock\" is a socket"));
}

TEST_F(BundleSignatureTest, EmptyBundleIsRefused) {
  const fs::path dir = WriteBundle({});
  fs::create_directories(dir / "empty" / "subdir");
  auto digest = core::DigestBundle(dir);
  EXPECT_THAT(digest.status(), HasReason(ErrorReason::kSignatureInvalid));
  EXPECT_THAT(digest.status().message(), HasSubstr("no files to sign"));
  // A bundle.sig alone is not a file to sign either.
  WriteFile(dir / "bundle.sig", Unhex(kGoldenBundleSigHex));
  EXPECT_THAT(core::VerifyBundleSignature(dir, SignaturePolicy::kRequired).status(),
              HasReason(ErrorReason::kSignatureInvalid));
}

TEST_F(BundleSignatureTest, NonUtf8NameIsRefused) {
  const fs::path dir = WriteBundle(GoldenFiles());
  WriteFile(dir / std::string("bad\xff"), "x");
  auto digest = core::DigestBundle(dir);
  EXPECT_THAT(digest.status(), HasReason(ErrorReason::kSignatureInvalid));
  EXPECT_THAT(digest.status().message(), HasSubstr("not UTF-8"));
  EXPECT_THAT(digest.status().message(), HasSubstr("bad\\xff"));
}

TEST_F(BundleSignatureTest, OnlyTheTopLevelBundleSigIsLeftOut) {
  // Our reading: the file skipped is the relative path "bundle.sig"; one in a
  // subdirectory is an ordinary file of the bundle.
  const fs::path dir = WriteBundle({{"manifest.toml", "x"}, {"sub/bundle.sig", "y"}});
  auto digest = core::DigestBundle(dir);
  ASSERT_THAT(digest.status(), IsOk());
  EXPECT_TRUE(digest->file_sha256.contains("sub/bundle.sig"));
  WriteFile(dir / "bundle.sig", "anything");
  auto again = core::DigestBundle(dir);
  ASSERT_THAT(again.status(), IsOk());
  EXPECT_EQ(again->digest, digest->digest);
}

// What a push or a fetch sends: every regular file, bundle.sig included, in the byte order
// of their paths, each with its size and executable bit; the entries DigestBundle refuses
// are refused too.
TEST_F(BundleSignatureTest, ListBundleFilesListsWhatAPushSends) {
  const fs::path dir = SignedBundle();
  WriteFile(dir / "a" / "z", "");  // an empty file
  fs::permissions(dir / "a.b", fs::perms::owner_exec, fs::perm_options::add);
  auto files = core::ListBundleFiles(dir);
  ASSERT_THAT(files.status(), IsOk());
  std::vector<std::string> paths;
  for (const core::BundleFileEntry& f : *files) {
    paths.push_back(f.path);
    EXPECT_EQ(f.size, fs::file_size(dir / f.path)) << f.path;
    EXPECT_EQ(f.executable, f.path == "a.b") << f.path;
  }
  std::vector<std::string> expected = {"a/z", "bundle.sig"};
  for (const auto& [path, contents] : GoldenFiles()) expected.push_back(path);
  std::sort(expected.begin(), expected.end());  // byte-wise, as the digest sorts them
  EXPECT_EQ(paths, expected);
  // The files signed are those listed but bundle.sig, each with the SHA-256 Sha256OfFile says.
  auto digest = core::DigestBundle(dir);
  ASSERT_THAT(digest.status(), IsOk());
  EXPECT_EQ(digest->file_sha256.size(), paths.size() - 1);
  for (const auto& [path, sha] : digest->file_sha256) {
    auto file_sha = core::Sha256OfFile(dir / path);
    ASSERT_THAT(file_sha.status(), IsOk());
    EXPECT_EQ(core::DigestToHex(*file_sha), sha) << path;
  }

  fs::create_symlink("a.b", dir / "link");
  EXPECT_THAT(core::ListBundleFiles(dir).status(), HasReason(ErrorReason::kInvalidArgument));
  EXPECT_THAT(core::ListBundleFiles(dir).status().message(), HasSubstr("\"link\" is a symlink"));
  EXPECT_THAT(core::Sha256OfFile(dir / "link").status(), HasReason(ErrorReason::kInvalidArgument));
  EXPECT_THAT(core::ListBundleFiles(dir / "a.b").status().message(),
              HasSubstr("cannot open it as a directory"));
}

TEST(Sha256HexTest, IsSha256HexTakesWhatDigestToHexPrints) {
  EXPECT_TRUE(core::IsSha256Hex(core::DigestToHex(core::Sha256Digest{})));
  EXPECT_TRUE(core::IsSha256Hex(std::string(32, 'a') + std::string(32, '9')));
  EXPECT_FALSE(core::IsSha256Hex(""));
  EXPECT_FALSE(core::IsSha256Hex(std::string(63, 'a')));
  EXPECT_FALSE(core::IsSha256Hex(std::string(65, 'a')));
  EXPECT_FALSE(core::IsSha256Hex(std::string(63, 'a') + "A"));
  EXPECT_FALSE(core::IsSha256Hex(std::string(63, 'a') + "g"));
}

TEST_F(BundleSignatureTest, PinnedKeys) {
  const fs::path dir = SignedBundle();
  absl::StatusOr<core::SigningKey> other = core::GenerateSigningKey();
  ASSERT_THAT(other.status(), IsOk());
  const core::Ed25519PublicKey rfc = RfcKey().public_key();

  auto trusted =
      core::VerifyBundleSignature(dir, SignaturePolicy::kRequired, {other->public_key(), rfc});
  ASSERT_THAT(trusted.status(), IsOk());
  EXPECT_TRUE(trusted->verified);
  EXPECT_TRUE(trusted->trusted);

  const std::vector<core::Ed25519PublicKey> only_other = {other->public_key()};
  auto untrusted = core::VerifyBundleSignature(dir, SignaturePolicy::kRequired, only_other);
  EXPECT_THAT(untrusted.status(), HasReason(ErrorReason::kUntrustedSigningKey));
  EXPECT_THAT(untrusted.status().message(), HasSubstr(kRfcPublicKeyHex));
  EXPECT_THAT(untrusted.status().message(), HasSubstr(dir.string()));

  auto warn = core::VerifyBundleSignature(dir, SignaturePolicy::kWarn, only_other);
  ASSERT_THAT(warn.status(), IsOk());
  EXPECT_TRUE(warn->verified);
  EXPECT_FALSE(warn->trusted);
  EXPECT_THAT(warn->warning, HasSubstr("[UNTRUSTED_SIGNING_KEY]"));
  EXPECT_THAT(warn->warning, HasSubstr(kRfcPublicKeyHex));
}

TEST_F(BundleSignatureTest, KeyPairFiles) {
  absl::StatusOr<core::SigningKey> key = core::GenerateSigningKey();
  ASSERT_THAT(key.status(), IsOk());
  const fs::path keys = temp_ / "keys" / "ci";
  ASSERT_THAT(core::WriteKeyPair(keys, *key), IsOk());
  struct stat st;
  ASSERT_EQ(stat((keys / "signing.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_size, 32);
  ASSERT_EQ(stat((keys / "verifying.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 32);
  EXPECT_EQ(ReadFile(keys / "verifying.key"),
            std::string(reinterpret_cast<const char*>(key->public_key().data()), 32));

  auto secret = core::ReadSigningKeyFile(keys / "signing.key");
  ASSERT_THAT(secret.status(), IsOk());
  EXPECT_EQ(secret->seed(), key->seed());
  EXPECT_EQ(secret->public_key(), key->public_key());
  auto public_key = core::ReadPublicKeyFile(keys / "verifying.key");
  ASSERT_THAT(public_key.status(), IsOk());
  EXPECT_EQ(*public_key, key->public_key());

  // Never overwritten: the existing pair stays as it was.
  const std::string before = ReadFile(keys / "signing.key");
  absl::StatusOr<core::SigningKey> second = core::GenerateSigningKey();
  ASSERT_THAT(second.status(), IsOk());
  absl::Status again = core::WriteKeyPair(keys, *second);
  EXPECT_THAT(again, HasReason(ErrorReason::kInvalidArgument));
  EXPECT_THAT(again.message(), HasSubstr("already exists"));
  EXPECT_EQ(ReadFile(keys / "signing.key"), before);
}

TEST_F(BundleSignatureTest, HexKeyFiles) {
  WriteFile(temp_ / "seed.hex", std::string(kRfcSeedHex) + "\n");
  auto key = core::ReadSigningKeyFile(temp_ / "seed.hex");
  ASSERT_THAT(key.status(), IsOk());
  EXPECT_EQ(core::PublicKeyToHex(key->public_key()), kRfcPublicKeyHex);

  std::string upper = kRfcPublicKeyHex;
  for (char& c : upper) c = static_cast<char>(std::toupper(c));
  WriteFile(temp_ / "pub.hex", upper);  // no newline, upper case
  auto public_key = core::ReadPublicKeyFile(temp_ / "pub.hex");
  ASSERT_THAT(public_key.status(), IsOk());
  EXPECT_EQ(core::PublicKeyToHex(*public_key), kRfcPublicKeyHex);
  EXPECT_THAT(core::PublicKeyFromHex(kRfcPublicKeyHex).status(), IsOk());

  for (const std::string& bad :
       {std::string(31, 'x'), std::string(kRfcSeedHex) + "\n\n", std::string(kRfcSeedHex).substr(2),
        std::string(64, 'g'), std::string(33, '\0')}) {
    WriteFile(temp_ / "bad.key", bad);
    auto read = core::ReadPublicKeyFile(temp_ / "bad.key");
    EXPECT_THAT(read.status(), HasReason(ErrorReason::kInvalidArgument)) << bad.size();
    EXPECT_THAT(read.status().message(), HasSubstr((temp_ / "bad.key").string()));
    EXPECT_THAT(core::ReadSigningKeyFile(temp_ / "bad.key").status(),
                HasReason(ErrorReason::kInvalidArgument));
  }
  EXPECT_THAT(core::ReadPublicKeyFile(temp_ / "missing.key").status(),
              HasReason(ErrorReason::kInvalidArgument));
  EXPECT_THAT(core::PublicKeyFromHex("abc").status(), HasReason(ErrorReason::kInvalidArgument));
}

TEST(SignaturePolicyTest, ParseAndName) {
  for (SignaturePolicy policy :
       {SignaturePolicy::kOff, SignaturePolicy::kWarn, SignaturePolicy::kRequired}) {
    auto parsed = core::ParseSignaturePolicy(core::SignaturePolicyName(policy));
    ASSERT_THAT(parsed.status(), IsOk());
    EXPECT_EQ(*parsed, policy);
  }
  EXPECT_EQ(static_cast<int>(SignaturePolicy::kOff), 0);
  EXPECT_EQ(static_cast<int>(SignaturePolicy::kWarn), 1);
  EXPECT_EQ(static_cast<int>(SignaturePolicy::kRequired), 2);
  EXPECT_EQ(core::SignaturePolicyName(SignaturePolicy::kRequired), "required");
  EXPECT_THAT(core::ParseSignaturePolicy("Required").status(),
              HasReason(ErrorReason::kInvalidArgument));
  EXPECT_THAT(core::ParseSignaturePolicy("").status(), HasReason(ErrorReason::kInvalidArgument));
}

}  // namespace
}  // namespace polyplug::test
