// polyplugctl keygen, sign, verify and digest, run as built: none needs a host, exit codes
// are 0 success, 1 the check or operation failed (with the reason token on stderr), 2 a
// usage error, and sign writes the bundle.sig of polyplug's format bit for bit (the golden
// vector of support/golden_bundle.h).
#include <sys/stat.h>
#include <sys/wait.h>

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "polyplug/core/bundle_signature.h"
#include "support/bundle_fixture.h"
#include "support/child_process.h"
#include "support/golden_bundle.h"

namespace polyplug::test {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;

struct Result {
  int exit_code = -1;
  std::string out;
  std::string err;
};

std::string Shown(const Result& r) {
  return absl::StrCat("exit ", r.exit_code, "\n--- stdout\n", r.out, "--- stderr\n", r.err);
}

class PolyplugctlSigningTest : public ::testing::Test {
 protected:
  // Runs polyplugctl `args` in the test's directory, pointed at a host that does not
  // exist: none of these commands may try to reach it.
  Result Ctl(std::vector<std::string> args) {
    args.insert(args.begin(), {POLYPLUGCTL_BINARY, "--host", "unix:no-such-host.sock"});
    SpawnOptions spawn;
    spawn.argv = args;
    spawn.cwd = dir_.path();
    spawn.out = Redirect::Truncate(io_ / "stdout");
    spawn.err = Redirect::Truncate(io_ / "stderr");
    absl::StatusOr<pid_t> pid = Spawn(spawn);
    EXPECT_TRUE(pid.ok()) << pid.status();
    if (!pid.ok()) return {};
    int status = 0;
    EXPECT_EQ(waitpid(*pid, &status, 0), *pid);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ReadFile(io_ / "stdout"),
            ReadFile(io_ / "stderr")};
  }

  fs::path path(absl::string_view name) const { return dir_ / name; }

  // The golden bundle (support/golden_bundle.h), in <dir>/golden.
  fs::path GoldenBundle() { return WriteBundleFiles(path("golden"), GoldenFiles()); }

  TempDir dir_;
  TempDir io_;
};

TEST_F(PolyplugctlSigningTest, KeygenSignVerifyAndDigest) {
  Result keygen = Ctl({"keygen", "--out", "keys"});
  ASSERT_EQ(keygen.exit_code, 0) << Shown(keygen);
  struct stat st;
  ASSERT_EQ(stat(path("keys/signing.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_size, 32);
  const std::string public_hex = absl::BytesToHexString(ReadFile(path("keys/verifying.key")));
  ASSERT_EQ(public_hex.size(), 64u);
  EXPECT_THAT(keygen.out, HasSubstr("public key " + public_hex));

  const fs::path bundle = CopyTestBundle("counter_v1", dir_.path());
  Result sign = Ctl({"sign", "counter_v1", "--key", "keys/signing.key"});
  ASSERT_EQ(sign.exit_code, 0) << Shown(sign);
  EXPECT_EQ(fs::file_size(bundle / "bundle.sig"), core::kBundleSignatureSize);
  absl::StatusOr<core::BundleDigest> digest = core::DigestBundle(bundle);
  ASSERT_THAT(digest.status(), IsOk());
  const std::string digest_hex = core::DigestToHex(digest->digest);
  EXPECT_THAT(sign.out, HasSubstr(public_hex));
  EXPECT_THAT(sign.out, HasSubstr(digest_hex));

  Result printed = Ctl({"digest", "counter_v1"});
  ASSERT_EQ(printed.exit_code, 0) << Shown(printed);
  EXPECT_EQ(printed.out, digest_hex + "\n");

  Result verify = Ctl({"verify", "counter_v1"});
  ASSERT_EQ(verify.exit_code, 0) << Shown(verify);
  EXPECT_THAT(verify.out, HasSubstr("key     " + public_hex));
  EXPECT_THAT(verify.out, HasSubstr("digest  " + digest_hex));
  EXPECT_THAT(verify.err, IsEmpty());

  Result pinned =
      Ctl({"verify", "--bundle-dir", "counter_v1", "--trusted-key", "keys/verifying.key"});
  ASSERT_EQ(pinned.exit_code, 0) << Shown(pinned);
  EXPECT_THAT(pinned.out, HasSubstr("by a trusted key"));

  Result json = Ctl({"verify", "counter_v1", "--json"});
  ASSERT_EQ(json.exit_code, 0) << Shown(json);
  // polyplugctl's --json envelope: {"type": ..., "object": {...}}.
  EXPECT_THAT(json.out, StartsWith("{\"type\":\"polyplugctl.Verification\",\"object\":{"));
  EXPECT_THAT(json.out, HasSubstr(absl::StrCat("\"public_key\":\"", public_hex, "\"")));
  EXPECT_THAT(json.out, HasSubstr(absl::StrCat("\"digest\":\"", digest_hex, "\"")));
}

TEST_F(PolyplugctlSigningTest, SignWritesThePolyplugFormatBitForBit) {
  GoldenBundle();
  WriteFile(path("seed.hex"), std::string(kRfcSeedHex) + "\n");  // as pasted into a CI secret
  Result sign = Ctl({"sign", "--bundle-dir", "golden", "--key", "seed.hex"});
  ASSERT_EQ(sign.exit_code, 0) << Shown(sign);
  EXPECT_EQ(absl::BytesToHexString(ReadFile(path("golden/bundle.sig"))), kGoldenBundleSigHex);
  EXPECT_THAT(sign.out, HasSubstr(kRfcPublicKeyHex));
  EXPECT_THAT(sign.out, HasSubstr(kGoldenDigestHex));
  Result digest = Ctl({"digest", "golden"});
  ASSERT_EQ(digest.exit_code, 0) << Shown(digest);
  EXPECT_EQ(digest.out, absl::StrCat(kGoldenDigestHex, "\n"));

  // A hex verifying key is a trusted key as well as the raw one.
  WriteFile(path("rfc.pub"), kRfcPublicKeyHex);
  Result verify = Ctl({"verify", "golden", "--trusted-key", "rfc.pub"});
  EXPECT_EQ(verify.exit_code, 0) << Shown(verify);
}

TEST_F(PolyplugctlSigningTest, VerifyFailuresCarryTheReasonToken) {
  ASSERT_EQ(Ctl({"keygen", "--out", "keys"}).exit_code, 0);
  ASSERT_EQ(Ctl({"keygen", "--out", "other"}).exit_code, 0);
  const fs::path bundle = GoldenBundle();

  Result unsigned_ = Ctl({"verify", "golden"});
  EXPECT_EQ(unsigned_.exit_code, 1) << Shown(unsigned_);
  EXPECT_THAT(unsigned_.err, HasSubstr("[UNSIGNED_BUNDLE]"));
  EXPECT_THAT(unsigned_.err, HasSubstr("golden"));
  EXPECT_THAT(unsigned_.out, IsEmpty());

  ASSERT_EQ(Ctl({"sign", "golden", "--key", "keys/signing.key"}).exit_code, 0);
  Result untrusted = Ctl({"verify", "golden", "--trusted-key", "other/verifying.key"});
  EXPECT_EQ(untrusted.exit_code, 1) << Shown(untrusted);
  EXPECT_THAT(untrusted.err, HasSubstr("[UNTRUSTED_SIGNING_KEY]"));
  EXPECT_THAT(untrusted.err,
              HasSubstr(absl::BytesToHexString(ReadFile(path("keys/verifying.key")))));
  Result untrusted_json =
      Ctl({"verify", "golden", "--trusted-key", "other/verifying.key", "--json"});
  EXPECT_EQ(untrusted_json.exit_code, 1);
  EXPECT_THAT(untrusted_json.out, HasSubstr("\"reason\":\"UNTRUSTED_SIGNING_KEY\""));
  EXPECT_THAT(untrusted_json.out, StartsWith("{\"type\":\"error\",\"object\":{"));

  WriteFile(bundle / "ab", "plain, changed\n");
  Result tampered = Ctl({"verify", "golden"});
  EXPECT_EQ(tampered.exit_code, 1) << Shown(tampered);
  EXPECT_THAT(tampered.err, HasSubstr("[SIGNATURE_INVALID]"));
  EXPECT_THAT(tampered.err, HasSubstr("does not match the bundle's files"));

  WriteFile(bundle / "bundle.sig", "PPSIG");
  Result malformed = Ctl({"verify", "golden"});
  EXPECT_EQ(malformed.exit_code, 1) << Shown(malformed);
  EXPECT_THAT(malformed.err, HasSubstr("[SIGNATURE_INVALID]"));
  EXPECT_THAT(malformed.err, HasSubstr("5 bytes, not the 103"));
}

TEST_F(PolyplugctlSigningTest, SignRefusesASymlinkNamingIt) {
  ASSERT_EQ(Ctl({"keygen", "--out", "keys"}).exit_code, 0);
  const fs::path bundle = GoldenBundle();
  fs::create_symlink("ab", bundle / "link");
  Result sign = Ctl({"sign", "golden", "--key", "keys/signing.key"});
  EXPECT_EQ(sign.exit_code, 1) << Shown(sign);
  EXPECT_THAT(sign.err, HasSubstr("[SIGNATURE_INVALID]"));
  EXPECT_THAT(sign.err, HasSubstr("\"link\" is a symlink"));
  EXPECT_FALSE(fs::exists(bundle / "bundle.sig"));
  Result digest = Ctl({"digest", "golden"});
  EXPECT_EQ(digest.exit_code, 1) << Shown(digest);
}

TEST_F(PolyplugctlSigningTest, UsageErrors) {
  ASSERT_EQ(Ctl({"keygen", "--out", "keys"}).exit_code, 0);
  GoldenBundle();
  WriteFile(path("bad.key"), "not a key\n");
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"keygen"}, "--out DIR is required"},
      {{"sign", "golden"}, "--key FILE is required"},
      {{"sign", "--key", "keys/signing.key"}, "name the bundle directory once"},
      {{"sign", "golden", "--bundle-dir", "golden", "--key", "keys/signing.key"},
       "name the bundle directory once"},
      {{"sign", "golden", "--key", "bad.key"}, "neither 32 raw bytes nor 64 hex digits"},
      {{"sign", "golden", "--key", "missing.key"}, "missing.key"},
      {{"verify", "golden", "--trusted-key", "bad.key"}, "bad.key"},
      {{"verify"}, "name the bundle directory once"},
      {{"digest", "a", "b"}, "wrong number of arguments"},
      {{"verify", "golden", "--key", "keys/signing.key"}, "verify takes no --key"},
  };
  for (const auto& [args, message] : cases) {
    Result r = Ctl(args);
    EXPECT_EQ(r.exit_code, 2) << Shown(r);
    EXPECT_THAT(r.err, HasSubstr(message)) << Shown(r);
    EXPECT_THAT(r.err, HasSubstr("usage: polyplugctl " + args[0]));
  }
  EXPECT_FALSE(fs::exists(path("golden/bundle.sig")));

  // keygen never overwrites a key: exit 1, and the old pair stays.
  const std::string before = ReadFile(path("keys/signing.key"));
  Result again = Ctl({"keygen", "--out", "keys"});
  EXPECT_EQ(again.exit_code, 1) << Shown(again);
  EXPECT_THAT(again.err, HasSubstr("already exists"));
  EXPECT_EQ(ReadFile(path("keys/signing.key")), before);
}

TEST_F(PolyplugctlSigningTest, HelpListsTheCommands) {
  Result help = Ctl({"help"});
  ASSERT_EQ(help.exit_code, 0) << Shown(help);
  for (const char* command :
       {"keygen --out DIR", "sign DIR --key FILE", "verify DIR", "digest DIR"}) {
    EXPECT_THAT(help.out, HasSubstr(command));
  }
  Result verify_help = Ctl({"verify", "--help"});
  ASSERT_EQ(verify_help.exit_code, 0);
  EXPECT_THAT(verify_help.out, StartsWith("usage: polyplugctl verify DIR"));
}

}  // namespace
}  // namespace polyplug::test
