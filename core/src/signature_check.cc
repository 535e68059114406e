// The signature policy on load and reload (docs/SIGNING.md). Right after the manifest is
// validated, the files it was read from are verified (bundle_signature.h); when the
// signature holds, what is then loaded is bound to it: the manifest is parsed again from
// bytes whose SHA-256 is the signed one, and the staged artifact's SHA-256 must be the
// signed one too. That closes the window between the check and the load, in which the
// files could be changed.
#include <openssl/evp.h>

#include <fstream>
#include <iterator>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "core/src/runtime_impl.h"
#include "polyplug/core/bundle_signature.h"
#include "polyplug/core/error.h"

namespace polyplug::core {
namespace {

namespace fs = std::filesystem;

constexpr absl::string_view kManifestFileName = "manifest.toml";

// SHA-256 of `bytes`, lowercase hex; empty when OpenSSL fails.
std::string Sha256Hex(absl::string_view bytes) {
  unsigned char sha[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), sha, &size, EVP_sha256(), nullptr) != 1) return "";
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(sha), size));
}

// The manifest of `dir` parsed from bytes whose SHA-256 is `signed_sha256`, standing in for
// `parsed` (same path and directory); SIGNATURE_INVALID when the file changed since.
absl::StatusOr<Manifest> ReadSignedManifest(const Manifest& parsed,
                                            const std::string& signed_sha256) {
  const fs::path path = parsed.dir / std::string(kManifestFileName);
  std::ifstream in(path, std::ios::binary);
  std::string text;
  if (in) {
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  if (text.size() > kMaxManifestBytes) {
    return MakeError(ErrorReason::kManifestInvalid,
                     absl::StrCat(path.string(), ": manifest is ", text.size(),
                                  " bytes, more than the limit of ", kMaxManifestBytes));
  }
  if (signed_sha256.empty() || Sha256Hex(text) != signed_sha256) {
    return MakeError(ErrorReason::kSignatureInvalid,
                     absl::StrCat(path.string(),
                                  " changed after its signature was checked: its bytes are not "
                                  "the bytes signed"));
  }
  absl::StatusOr<Manifest> manifest = ParseManifest(text, parsed.path);
  if (!manifest.ok()) return manifest.status();
  manifest->dir = parsed.dir;
  if (absl::Status s = ValidateManifest(*manifest); !s.ok()) return s;
  manifest->version = *ParseVersion(manifest->version_text);
  if (manifest->id != parsed.id) {
    return MakeError(ErrorReason::kSignatureInvalid,
                     absl::StrCat(path.string(),
                                  " changed while its signature was checked: it now names "
                                  "another bundle"));
  }
  return manifest;
}

}  // namespace

absl::StatusOr<Runtime::Impl::SignatureCheck> Runtime::Impl::CheckSignature(
    Manifest& manifest, absl::string_view doing) {
  const RuntimeOptions& options = runtime_->options_;
  SignatureCheck check;
  if (options.signature_policy == SignaturePolicy::kOff) return check;
  check.dir = manifest.dir;
  absl::StatusOr<SignatureVerification> verification =
      VerifyBundleSignature(manifest.dir, options.signature_policy, options.trusted_keys);
  if (!verification.ok()) return verification.status();
  if (!verification->warning.empty()) WarnSignatureProblem(manifest, verification->warning, doing);
  if (!verification->verified) return check;
  runtime_->Log(
      LogLevel::kInfo, "signature",
      absl::StrCat("bundle \"", manifest.name, "\" in ", manifest.dir.string(),
                   ": bundle.sig verified, signed by key ", PublicKeyToHex(verification->key),
                   " (digest ", DigestToHex(verification->digest.digest), ")"));
  check.bound = true;
  check.file_sha256 = std::move(verification->digest.file_sha256);
  if (verification->trusted) check.signing_key = PublicKeyToHex(verification->key);

  auto it = check.file_sha256.find(std::string(kManifestFileName));
  absl::StatusOr<Manifest> signed_manifest =
      ReadSignedManifest(manifest, it == check.file_sha256.end() ? "" : it->second);
  if (signed_manifest.ok()) {
    manifest = *std::move(signed_manifest);
  } else if (options.signature_policy == SignaturePolicy::kRequired) {
    return signed_manifest.status();
  } else {
    check.signing_key.clear();
    WarnSignatureProblem(manifest,
                         absl::StrCat("[", ReasonToken(ReasonOf(signed_manifest.status())), "] ",
                                      signed_manifest.status().message()),
                         doing);
  }
  return check;
}

absl::Status Runtime::Impl::CheckArtifactSigned(SignatureCheck& check, const Manifest& manifest,
                                                const fs::path& artifact,
                                                const StagedArtifact& staged,
                                                absl::string_view doing) {
  if (!check.bound) return absl::OkStatus();
  const std::string relative = artifact.lexically_relative(check.dir).generic_string();
  auto it = check.file_sha256.find(relative);
  if (it != check.file_sha256.end() && !staged.sha256().empty() && it->second == staged.sha256()) {
    return absl::OkStatus();
  }
  absl::Status problem = MakeError(
      ErrorReason::kSignatureInvalid,
      absl::StrCat("bundle \"", manifest.name,
                   "\": the artifact changed after its signature was checked: ", artifact.string(),
                   it == check.file_sha256.end()
                       ? " is not among the files bundle.sig signs"
                       : absl::StrCat(" has SHA-256 ", staged.sha256().substr(0, 12),
                                      ", bundle.sig signed ", it->second.substr(0, 12))));
  if (runtime_->options_.signature_policy == SignaturePolicy::kRequired) return problem;
  check.signing_key.clear();
  WarnSignatureProblem(manifest, absl::StrCat("[SIGNATURE_INVALID] ", problem.message()), doing);
  return absl::OkStatus();
}

void Runtime::Impl::WarnSignatureProblem(const Manifest& manifest, absl::string_view problem,
                                         absl::string_view doing) const {
  runtime_->Log(LogLevel::kWarn, "signature",
                absl::StrCat("bundle \"", manifest.name, "\" in ", manifest.dir.string(), ": ",
                             problem, "; ", doing, " it anyway (signature policy warn)"));
}

}  // namespace polyplug::core
