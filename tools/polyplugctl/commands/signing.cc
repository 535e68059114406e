// polyplugctl keygen, sign, verify and digest: bundle signatures (docs/SIGNING.md), without
// a host. Each is polyplug's command of the same name; errors carry the reason token
// ("[SIGNATURE_INVALID] ...") as the host's do.
#include <string>
#include <vector>

#include <google/protobuf/struct.pb.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "polyplug/core/bundle_signature.h"
#include "polyplug/core/error.h"
#include "polyplugctl/commands/commands.h"
#include "polyplugctl/commands/support.h"

namespace polyplug::ctl {
namespace {

constexpr FlagSpec kKeygenFlags[] = {{.name = "out", .takes_value = true}};
constexpr FlagSpec kSignFlags[] = {{.name = "bundle-dir", .takes_value = true},
                                   {.name = "key", .takes_value = true}};
constexpr FlagSpec kVerifyFlags[] = {
    {.name = "bundle-dir", .takes_value = true},
    {.name = "trusted-key", .takes_value = true, .repeatable = true}};
constexpr FlagSpec kDigestFlags[] = {{.name = "bundle-dir", .takes_value = true}};

// A core error as the host sends one: its message led by the reason token, so that
// Output::Error prints it and FailureReasonOf reads it the same way.
absl::Status WithReasonToken(const absl::Status& status) {
  return absl::Status(status.code(), absl::StrCat("[", core::ReasonToken(core::ReasonOf(status)),
                                                  "] ", status.message()));
}

// The bundle directory: the operand, or --bundle-dir (polyplug's spelling); exactly one.
absl::StatusOr<std::string> BundleDirOf(const Invocation& ctx) {
  const bool flag = ctx.args.Has("bundle-dir");
  if (flag == !ctx.args.operands().empty()) {
    return absl::InvalidArgumentError(
        "name the bundle directory once: as the operand DIR or as --bundle-dir DIR");
  }
  return flag ? ctx.args.Get("bundle-dir") : ctx.args.operands()[0];
}

void Set(google::protobuf::Struct& root, const std::string& field, const std::string& value) {
  (*root.mutable_fields())[field].set_string_value(value);
}

int RunKeygen(const Invocation& ctx) {
  if (!ctx.args.Has("out")) return Misuse(ctx, "keygen: --out DIR is required");
  const std::string dir = ctx.args.Get("out");
  absl::StatusOr<core::SigningKey> key = core::GenerateSigningKey();
  if (!key.ok()) return Failed(ctx, "keygen", WithReasonToken(key.status()));
  if (absl::Status s = core::WriteKeyPair(dir, *key); !s.ok()) {
    return Failed(ctx, absl::StrCat("keygen --out ", dir), WithReasonToken(s));
  }
  const std::filesystem::path out(dir);
  const std::string secret = (out / std::string(core::kSigningKeyFileName)).string();
  const std::string verifying = (out / std::string(core::kVerifyingKeyFileName)).string();
  const std::string public_hex = core::PublicKeyToHex(key->public_key());
  if (ctx.out.json()) {
    google::protobuf::Struct root;
    Set(root, "signing_key_file", secret);
    Set(root, "verifying_key_file", verifying);
    Set(root, "public_key", public_hex);
    ctx.out.Json("polyplugctl.KeyPair", root);
  } else {
    ctx.out.Line(absl::StrCat("wrote ", secret, " (secret, mode 0600) and ", verifying));
    ctx.out.Line(absl::StrCat("public key ", public_hex));
  }
  return kExitOk;
}

int RunSign(const Invocation& ctx) {
  absl::StatusOr<std::string> dir = BundleDirOf(ctx);
  if (!dir.ok()) return Misuse(ctx, absl::StrCat("sign: ", dir.status().message()));
  if (!ctx.args.Has("key")) return Misuse(ctx, "sign: --key FILE is required");
  absl::StatusOr<core::SigningKey> key = core::ReadSigningKeyFile(ctx.args.Get("key"));
  if (!key.ok()) return Misuse(ctx, absl::StrCat("sign: --key: ", key.status().message()));
  absl::StatusOr<core::BundleSignature> signature = core::SignBundle(*dir, *key);
  if (!signature.ok()) {
    return Failed(ctx, absl::StrCat("sign ", *dir), WithReasonToken(signature.status()));
  }
  // What was signed, read back: the digest the signature is over.
  absl::StatusOr<core::SignatureVerification> check =
      core::VerifyBundleSignature(*dir, core::SignaturePolicy::kRequired);
  if (!check.ok()) return Failed(ctx, absl::StrCat("sign ", *dir), WithReasonToken(check.status()));
  const std::string file =
      (std::filesystem::path(*dir) / std::string(core::kBundleSignatureFileName)).string();
  const std::string public_hex = core::PublicKeyToHex(signature->key);
  const std::string digest_hex = core::DigestToHex(check->digest.digest);
  if (ctx.out.json()) {
    google::protobuf::Struct root;
    Set(root, "signature_file", file);
    Set(root, "public_key", public_hex);
    Set(root, "digest", digest_hex);
    (*root.mutable_fields())["files"].set_number_value(
        static_cast<double>(check->digest.file_sha256.size()));
    ctx.out.Json("polyplugctl.Signature", root);
  } else {
    ctx.out.Line(absl::StrCat("wrote ", file, " (", check->digest.file_sha256.size(), " files)"));
    ctx.out.Line(absl::StrCat("key     ", public_hex));
    ctx.out.Line(absl::StrCat("digest  ", digest_hex));
  }
  return kExitOk;
}

int RunVerify(const Invocation& ctx) {
  absl::StatusOr<std::string> dir = BundleDirOf(ctx);
  if (!dir.ok()) return Misuse(ctx, absl::StrCat("verify: ", dir.status().message()));
  std::vector<core::Ed25519PublicKey> trusted;
  for (const std::string& file : ctx.args.GetAll("trusted-key")) {
    absl::StatusOr<core::Ed25519PublicKey> key = core::ReadPublicKeyFile(file);
    if (!key.ok()) {
      return Misuse(ctx, absl::StrCat("verify: --trusted-key: ", key.status().message()));
    }
    trusted.push_back(*key);
  }
  absl::StatusOr<core::SignatureVerification> verified =
      core::VerifyBundleSignature(*dir, core::SignaturePolicy::kRequired, trusted);
  if (!verified.ok()) {
    return Failed(ctx, absl::StrCat("verify ", *dir), WithReasonToken(verified.status()));
  }
  const std::string public_hex = core::PublicKeyToHex(verified->key);
  const std::string digest_hex = core::DigestToHex(verified->digest.digest);
  if (ctx.out.json()) {
    google::protobuf::Struct root;
    Set(root, "bundle_dir", *dir);
    Set(root, "public_key", public_hex);
    Set(root, "digest", digest_hex);
    (*root.mutable_fields())["key_pinned"].set_bool_value(!trusted.empty());
    ctx.out.Json("polyplugctl.Verification", root);
  } else {
    ctx.out.Line(absl::StrCat(
        *dir, ": signature valid",
        trusted.empty() ? " (no --trusted-key: the key is the file's own)" : ", by a trusted key"));
    ctx.out.Line(absl::StrCat("key     ", public_hex));
    ctx.out.Line(absl::StrCat("digest  ", digest_hex));
  }
  return kExitOk;
}

int RunDigest(const Invocation& ctx) {
  absl::StatusOr<std::string> dir = BundleDirOf(ctx);
  if (!dir.ok()) return Misuse(ctx, absl::StrCat("digest: ", dir.status().message()));
  absl::StatusOr<core::BundleDigest> digest = core::DigestBundle(*dir);
  if (!digest.ok()) {
    return Failed(ctx, absl::StrCat("digest ", *dir), WithReasonToken(digest.status()));
  }
  const std::string digest_hex = core::DigestToHex(digest->digest);
  if (ctx.out.json()) {
    google::protobuf::Struct root;
    Set(root, "bundle_dir", *dir);
    Set(root, "digest", digest_hex);
    auto& files = *(*root.mutable_fields())["files"].mutable_struct_value()->mutable_fields();
    for (const auto& [path, sha] : digest->file_sha256) files[path].set_string_value(sha);
    ctx.out.Json("polyplugctl.Digest", root);
  } else {
    ctx.out.Line(digest_hex);
  }
  return kExitOk;
}

}  // namespace

const Command& KeygenCommand() {
  static constexpr Command kCommand = {
      .name = "keygen",
      .help =
          "usage: polyplugctl keygen --out DIR\n"
          "\n"
          "Makes a new Ed25519 key pair for signing bundles: DIR/signing.key (the secret\n"
          "seed, mode 0600) and DIR/verifying.key (the public key), 32 raw bytes each.\n"
          "DIR is created if needed; existing key files are never overwritten. Prints the\n"
          "public key in hex, as --trusted-key files may also hold it. Needs no host.\n",
      .flags = kKeygenFlags,
      .run_offline = RunKeygen,
  };
  return kCommand;
}

const Command& SignCommand() {
  static constexpr Command kCommand = {
      .name = "sign",
      .help =
          "usage: polyplugctl sign DIR --key FILE\n"
          "       polyplugctl sign --bundle-dir DIR --key FILE\n"
          "\n"
          "Signs the bundle directory DIR with the signing key in FILE (32 raw bytes, or 64\n"
          "hex digits): writes DIR/bundle.sig, replacing one already there, over every file\n"
          "below DIR. Sign last: any later change to a file breaks the signature. Prints\n"
          "the public key and the canonical digest signed. Exit code 1 (with the reason,\n"
          "e.g. [SIGNATURE_INVALID] for a symlink in DIR) when it cannot sign. Needs no\n"
          "host.\n",
      .flags = kSignFlags,
      .max_operands = 1,
      .run_offline = RunSign,
  };
  return kCommand;
}

const Command& VerifyCommand() {
  static constexpr Command kCommand = {
      .name = "verify",
      .help =
          "usage: polyplugctl verify DIR [--trusted-key FILE]...\n"
          "       polyplugctl verify --bundle-dir DIR [--trusted-key FILE]...\n"
          "\n"
          "Checks DIR/bundle.sig as a runtime whose signature policy is required does: exit\n"
          "code 0 and the key and digest when it holds; 1 and the reason otherwise\n"
          "([UNSIGNED_BUNDLE], [SIGNATURE_INVALID], [UNTRUSTED_SIGNING_KEY]). Without\n"
          "--trusted-key any key whose signature holds is accepted: that proves the files\n"
          "are the ones signed, not who signed them. With it (a verifying.key, or 64 hex\n"
          "digits), the key must be one of those given. Needs no host.\n",
      .flags = kVerifyFlags,
      .max_operands = 1,
      .run_offline = RunVerify,
  };
  return kCommand;
}

const Command& DigestCommand() {
  static constexpr Command kCommand = {
      .name = "digest",
      .help =
          "usage: polyplugctl digest DIR\n"
          "       polyplugctl digest --bundle-dir DIR\n"
          "\n"
          "Prints the canonical digest of the bundle directory DIR in hex: the 32 bytes a\n"
          "bundle.sig signs. --json adds the SHA-256 of each file covered. Needs no host.\n",
      .flags = kDigestFlags,
      .max_operands = 1,
      .run_offline = RunDigest,
  };
  return kCommand;
}

}  // namespace polyplug::ctl
