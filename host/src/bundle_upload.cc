#include "host/src/bundle_upload.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/src/utf8.h"
#include "polyplug/core/bundle_signature.h"
#include "polyplug/core/error.h"
#include "polyplug/core/manifest.h"

namespace polyplug::host {

UploadHeader UploadHeaderOf(host::v1::PushBundleHeader header) {
  UploadHeader parsed;
  parsed.bundle_name = std::move(*header.mutable_bundle_name());
  parsed.bundle_digest = std::move(*header.mutable_bundle_digest());
  for (host::v1::PushedFile& file : *header.mutable_files()) {
    parsed.files.push_back(UploadFile{std::move(*file.mutable_path()), file.size(),
                                      std::move(*file.mutable_sha256()), file.executable()});
  }
  return parsed;
}
namespace {

namespace fs = std::filesystem;
using core::ErrorReason;
using core::MakeError;

constexpr size_t kMaxPathBytes = 4096;
constexpr size_t kMaxComponentBytes = 255;

absl::Status PathError(const UploadFile& file, size_t index, absl::string_view why) {
  return MakeError(ErrorReason::kUploadPathInvalid,
                   absl::StrCat("file ", index + 1, " of the upload, path \"",
                                absl::CHexEscape(file.path), "\": ", why));
}

// A relative path that stays inside the bundle directory and means one thing on every
// machine: no empty, '.' or '..' components, no absolute paths, valid UTF-8 (the digest
// hashes the path's UTF-8 bytes).
absl::Status CheckPath(const UploadFile& file, size_t index) {
  if (file.path.empty()) return PathError(file, index, "the path is empty");
  if (file.path.size() > kMaxPathBytes) {
    return PathError(file, index,
                     absl::StrCat("the path is longer than ", kMaxPathBytes, " bytes"));
  }
  if (file.path.find('\0') != std::string::npos) {
    return PathError(file, index, "the path contains a NUL byte");
  }
  if (!core::IsWellFormedUtf8(file.path))
    return PathError(file, index, "the path is not valid UTF-8");
  if (file.path.front() == '/') {
    return PathError(file, index, "the path is absolute; paths are relative to the bundle");
  }
  for (absl::string_view part : absl::StrSplit(file.path, '/')) {
    if (part.empty()) return PathError(file, index, "the path has an empty component ('//')");
    if (part == "." || part == "..") {
      return PathError(file, index,
                       "the path has a '.' or '..' component; it must stay inside the bundle");
    }
    if (part.size() > kMaxComponentBytes) {
      return PathError(file, index,
                       absl::StrCat("a component is longer than ", kMaxComponentBytes, " bytes"));
    }
  }
  return absl::OkStatus();
}

// Directory names are what a bundle name becomes in the deploy root.
absl::Status CheckBundleName(absl::string_view name) {
  auto bad = [&](absl::string_view why) {
    return MakeError(
        ErrorReason::kInvalidArgument,
        absl::StrCat("field 'header.bundle_name' \"", absl::CHexEscape(name), "\": ", why));
  };
  if (name.empty()) return bad("is empty");
  if (name.size() > kMaxComponentBytes) {
    return bad(absl::StrCat("is longer than ", kMaxComponentBytes, " bytes"));
  }
  if (name.front() == '.') return bad("starts with '.'; it cannot name a bundle directory");
  if (name.find('/') != absl::string_view::npos || name.find('\0') != absl::string_view::npos) {
    return bad("contains '/' or NUL; it cannot name a bundle directory");
  }
  if (!core::IsWellFormedUtf8(name)) return bad("is not valid UTF-8");
  return absl::OkStatus();
}

absl::Status WriteError(int error, const std::string& path, absl::string_view what) {
  const bool space = error == ENOSPC || error == EDQUOT || error == EFBIG;
  return MakeError(
      space ? ErrorReason::kNoSpace : ErrorReason::kInternal,
      absl::StrCat("cannot ", what, " ", path, " in the deploy root: ", std::strerror(error),
                   space ? " (the upload is dropped; free space and push again)" : ""));
}

absl::Status SyncDirectory(const fs::path& dir) {
  const int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return WriteError(errno, dir.string(), "open");
  const int rc = fsync(fd);
  const int error = errno;
  close(fd);
  return rc == 0 ? absl::OkStatus() : WriteError(error, dir.string(), "sync");
}

}  // namespace

// One file being written, with the SHA-256 of what was written so far.
class BundleUpload::FileWriter {
 public:
  ~FileWriter() {
    if (fd_ >= 0) close(fd_);
  }

  static absl::StatusOr<std::unique_ptr<FileWriter>> Create(const fs::path& path, bool executable) {
    auto writer = std::unique_ptr<FileWriter>(new FileWriter(path));
    writer->fd_ = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                       executable ? 0755 : 0644);
    if (writer->fd_ < 0) return WriteError(errno, path.string(), "create");
    if (writer->digest_ == nullptr ||
        EVP_DigestInit_ex(writer->digest_.get(), EVP_sha256(), nullptr) != 1) {
      return MakeError(ErrorReason::kInternal, "cannot start a SHA-256 digest");
    }
    return writer;
  }

  absl::Status Write(absl::string_view data) {
    EVP_DigestUpdate(digest_.get(), data.data(), data.size());
    const off_t start = written_;
    while (!data.empty()) {
      const ssize_t n = write(fd_, data.data(), data.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return WriteError(errno, path_.string(), "write");
      }
      data.remove_prefix(static_cast<size_t>(n));
      written_ += n;
    }
    // Start writing these pages back now, so that the fdatasync at the end waits for the
    // last chunk rather than the whole file.
    sync_file_range(fd_, start, written_ - start, SYNC_FILE_RANGE_WRITE);
    return absl::OkStatus();
  }

  // Makes the bytes durable and returns their SHA-256.
  absl::StatusOr<std::array<uint8_t, 32>> Close() {
    if (fdatasync(fd_) != 0) return WriteError(errno, path_.string(), "sync");
    const int rc = close(fd_);
    fd_ = -1;
    if (rc != 0) return WriteError(errno, path_.string(), "close");
    std::array<uint8_t, 32> sha{};
    unsigned int size = 0;
    EVP_DigestFinal_ex(digest_.get(), sha.data(), &size);
    return sha;
  }

 private:
  explicit FileWriter(fs::path path) : path_(std::move(path)) {}
  const fs::path path_;
  int fd_ = -1;
  off_t written_ = 0;
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> digest_{EVP_MD_CTX_new(),
                                                                  &EVP_MD_CTX_free};
};

absl::StatusOr<std::unique_ptr<BundleUpload>> BundleUpload::Begin(UploadHeader header,
                                                                  const UploadLimits& limits,
                                                                  fs::path staging_dir) {
  if (absl::Status s = CheckBundleName(header.bundle_name); !s.ok()) return s;
  // The digests come all in the header or all after the bytes.
  const bool digests_declared = !header.bundle_digest.empty();
  if (digests_declared && !core::IsSha256Hex(header.bundle_digest)) {
    return MakeError(ErrorReason::kInvalidArgument,
                     "field 'header.bundle_digest' must be 64 lowercase hex digits (the "
                     "bundle's canonical SHA-256; `polyplugctl digest DIR` prints it)");
  }
  if (header.files.size() > limits.max_files) {
    return MakeError(ErrorReason::kBundleTooLarge,
                     absl::StrCat("the upload has ", header.files.size(),
                                  " files; this host takes at most ", limits.max_files));
  }
  uint64_t total = 0;
  std::set<std::string> files, dirs;
  for (size_t i = 0; i < header.files.size(); ++i) {
    const UploadFile& file = header.files[i];
    if (absl::Status s = CheckPath(file, i); !s.ok()) return s;
    if (!digests_declared && !file.sha256.empty()) {
      return MakeError(ErrorReason::kInvalidArgument,
                       absl::StrCat("file \"", absl::CHexEscape(file.path),
                                    "\" has a 'sha256' but the header has no 'bundle_digest': "
                                    "give every digest in the header, or none there and all "
                                    "of them in a last 'digests' message"));
    }
    if (digests_declared && !core::IsSha256Hex(file.sha256)) {
      return MakeError(ErrorReason::kInvalidArgument,
                       absl::StrCat("file \"", absl::CHexEscape(file.path),
                                    "\": field 'sha256' must be 64 lowercase hex digits (the "
                                    "header has a 'bundle_digest', so every file needs one)"));
    }
    if (file.size > limits.max_bundle_bytes || total + file.size > limits.max_bundle_bytes) {
      return MakeError(
          ErrorReason::kBundleTooLarge,
          absl::StrCat("the upload declares more than ", limits.max_bundle_bytes,
                       " bytes (at file \"", absl::CHexEscape(file.path),
                       "\"); this host takes at most that (polyplug-host --max-bundle-bytes)"));
    }
    total += file.size;
    if (!files.insert(file.path).second) return PathError(file, i, "the path appears twice");
    for (size_t slash = file.path.find('/'); slash != std::string::npos;
         slash = file.path.find('/', slash + 1)) {
      dirs.insert(file.path.substr(0, slash));
    }
  }
  for (size_t i = 0; i < header.files.size(); ++i) {
    if (dirs.contains(header.files[i].path)) {
      return PathError(header.files[i], i, "the path is both a file and a directory of the upload");
    }
  }
  if (!files.contains("manifest.toml")) {
    return MakeError(ErrorReason::kManifestInvalid,
                     "the upload has no manifest.toml at the top of the bundle directory");
  }
  std::error_code ec;
  if (!fs::create_directory(staging_dir, ec) || ec) {
    return WriteError(ec ? ec.value() : EEXIST, staging_dir.string(), "create");
  }
  auto upload = std::unique_ptr<BundleUpload>(new BundleUpload(std::move(header), staging_dir));
  upload->bytes_expected_ = total;
  for (const std::string& dir : dirs) {  // parents come before their children in a set
    if (mkdir((staging_dir / dir).c_str(), 0755) != 0) {
      return WriteError(errno, (staging_dir / dir).string(), "create");
    }
  }
  if (absl::Status s = upload->OpenNext(); !s.ok()) return s;
  return upload;
}

BundleUpload::BundleUpload(UploadHeader header, fs::path staging_dir)
    : header_(std::move(header)), staging_dir_(std::move(staging_dir)) {}

BundleUpload::~BundleUpload() {
  writer_.reset();
  std::error_code ec;
  fs::remove_all(staging_dir_, ec);
}

absl::Status BundleUpload::Fail(absl::Status status) {
  error_ = status;
  writer_.reset();
  return status;
}

absl::Status BundleUpload::OpenNext() {
  while (next_file_ < header_.files.size()) {
    const UploadFile& file = header_.files[next_file_];
    auto writer = FileWriter::Create(staging_dir_ / file.path, file.executable);
    if (!writer.ok()) return Fail(writer.status());
    writer_ = *std::move(writer);
    if (file.size > 0) return absl::OkStatus();
    // An empty file is complete as soon as it exists.
    if (absl::Status s = CompleteFile(); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status BundleUpload::CompleteFile() {
  auto sha = writer_->Close();
  writer_.reset();
  if (!sha.ok()) return Fail(sha.status());
  received_sha256_.push_back(*sha);
  if (digests_known()) {
    if (absl::Status s = CheckFileDigest(next_file_, *sha); !s.ok()) return s;
  }
  ++next_file_;
  file_received_ = 0;
  return absl::OkStatus();
}

absl::Status BundleUpload::CheckFileDigest(size_t index, const std::array<uint8_t, 32>& received) {
  const UploadFile& file = header_.files[index];
  if (core::DigestToHex(received) == file.sha256) return absl::OkStatus();
  return Fail(MakeError(
      ErrorReason::kDigestMismatch,
      absl::StrCat("file \"", absl::CHexEscape(file.path), "\": the SHA-256 of the ", file.size,
                   " bytes received is ", core::DigestToHex(received), ", the upload says ",
                   file.sha256, " (changed or corrupted on the way)")));
}

absl::Status BundleUpload::SetDigests(std::vector<std::string> file_sha256,
                                      std::string bundle_digest) {
  if (!error_.ok()) return error_;
  if (digests_known()) {
    return Fail(MakeError(ErrorReason::kInvalidArgument,
                          "the upload sent a 'digests' message but its header carried the "
                          "digests already; send them in one place"));
  }
  if (file_sha256.size() != header_.files.size()) {
    return Fail(MakeError(ErrorReason::kInvalidArgument,
                          absl::StrCat("field 'digests.file_sha256' has ", file_sha256.size(),
                                       " entries; the header declares ", header_.files.size(),
                                       " files (one SHA-256 per file, in the header's order)")));
  }
  for (size_t i = 0; i < file_sha256.size(); ++i) {
    if (!core::IsSha256Hex(file_sha256[i])) {
      return Fail(MakeError(ErrorReason::kInvalidArgument,
                            absl::StrCat("field 'digests.file_sha256' entry ", i + 1, " (file \"",
                                         absl::CHexEscape(header_.files[i].path),
                                         "\") must be 64 lowercase hex digits")));
    }
  }
  if (!core::IsSha256Hex(bundle_digest)) {
    return Fail(MakeError(ErrorReason::kInvalidArgument,
                          "field 'digests.bundle_digest' must be 64 lowercase hex digits (the "
                          "bundle's canonical SHA-256; `polyplugctl digest DIR` prints it)"));
  }
  for (size_t i = 0; i < file_sha256.size(); ++i) {
    header_.files[i].sha256 = std::move(file_sha256[i]);
  }
  header_.bundle_digest = std::move(bundle_digest);
  for (size_t i = 0; i < received_sha256_.size(); ++i) {
    if (absl::Status s = CheckFileDigest(i, received_sha256_[i]); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status BundleUpload::Append(absl::string_view data) {
  if (!error_.ok()) return error_;
  while (!data.empty()) {
    if (next_file_ >= header_.files.size()) {
      return Fail(MakeError(ErrorReason::kInvalidArgument,
                            absl::StrCat("the upload sent more bytes than its header declares (",
                                         bytes_expected_, ")")));
    }
    const UploadFile& file = header_.files[next_file_];
    const size_t take =
        static_cast<size_t>(std::min<uint64_t>(file.size - file_received_, data.size()));
    if (absl::Status s = writer_->Write(data.substr(0, take)); !s.ok()) return Fail(s);
    bytes_received_ += take;
    file_received_ += take;
    data.remove_prefix(take);
    if (file_received_ < file.size) continue;
    if (absl::Status s = CompleteFile(); !s.ok()) return s;
    if (absl::Status s = OpenNext(); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status BundleUpload::Finish() {
  if (!error_.ok()) return error_;
  if (next_file_ < header_.files.size()) {
    const UploadFile& file = header_.files[next_file_];
    return Fail(
        MakeError(ErrorReason::kUploadIncomplete,
                  absl::StrCat("the upload ended after ", bytes_received_, " of ", bytes_expected_,
                               " bytes, in file \"", absl::CHexEscape(file.path), "\" (",
                               file_received_, " of ", file.size, " bytes)")));
  }
  if (!digests_known()) {
    return Fail(MakeError(ErrorReason::kUploadIncomplete,
                          absl::StrCat("the upload ended after all ", bytes_expected_,
                                       " bytes but without its 'digests' message (its header "
                                       "carried no digests)")));
  }
  // The canonical digest (docs/SIGNING.md) from the SHA-256 of each file as received.
  std::map<std::string, core::Sha256Digest> signed_files;
  for (size_t i = 0; i < header_.files.size(); ++i) {
    if (header_.files[i].path == core::kBundleSignatureFileName) continue;
    signed_files.emplace(header_.files[i].path, received_sha256_[i]);
  }
  const std::string digest = core::DigestToHex(core::CanonicalBundleDigest(signed_files));
  if (digest != header_.bundle_digest) {
    return Fail(MakeError(
        ErrorReason::kDigestMismatch,
        absl::StrCat("the bundle digest of the files received is ", digest, ", the upload says ",
                     header_.bundle_digest, " (a file is missing from the upload, or extra)")));
  }
  auto manifest = core::LoadManifest(staging_dir_);
  if (!manifest.ok()) return Fail(manifest.status());
  if (manifest->name != header_.bundle_name) {
    return Fail(MakeError(
        ErrorReason::kManifestInvalid,
        absl::StrCat("manifest.toml of the upload names bundle \"", manifest->name,
                     "\" but the header's bundle_name is \"", header_.bundle_name, "\"")));
  }
  std::set<fs::path> dirs{staging_dir_};
  for (const UploadFile& file : header_.files) {
    for (fs::path p = (staging_dir_ / file.path).parent_path(); p != staging_dir_;
         p = p.parent_path()) {
      dirs.insert(p);
    }
  }
  for (const fs::path& dir : dirs) {
    if (absl::Status s = SyncDirectory(dir); !s.ok()) return Fail(s);
  }
  return absl::OkStatus();
}

}  // namespace polyplug::host
