// BundleUpload: the files of one PushBundle upload, written into a private staging
// directory as their bytes arrive and checked against the sizes and SHA-256 the upload
// declared. Until DeployRoot places it, an upload is invisible: the staging directory is
// not a bundle directory of any root, and it is removed when the upload is destroyed.
#ifndef POLYPLUG_HOST_SRC_BUNDLE_UPLOAD_H_
#define POLYPLUG_HOST_SRC_BUNDLE_UPLOAD_H_

#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "polyplug/host/v1/host.pb.h"

namespace polyplug::host {

// One file of an upload, as its header declares it.
struct UploadFile {
  std::string path;    // relative, '/'-separated
  uint64_t size = 0;   // bytes
  std::string sha256;  // lowercase hex; empty while the digests follow the bytes
  bool executable = false;
};

// What an upload declares before its bytes.
struct UploadHeader {
  std::string bundle_name;
  std::vector<UploadFile> files;  // in the order their bytes follow
  // docs/SIGNING.md's canonical digest, lowercase hex; empty (and so is every file's
  // sha256) when the digests follow the bytes.
  std::string bundle_digest;
};

// The header of a PushBundle upload (or of a FetchBundle stream, which sends the same
// messages), taken apart.
UploadHeader UploadHeaderOf(host::v1::PushBundleHeader header);

struct UploadLimits {
  uint64_t max_bundle_bytes = 256ull << 20;
  size_t max_files = 4096;
};

// Not thread-safe: one reactor feeds it, then one operation places it.
class BundleUpload {
 public:
  // Checks `header` (name, paths, sizes against `limits`, digests all given or none;
  // UPLOAD_PATH_INVALID, BUNDLE_TOO_LARGE, INVALID_ARGUMENT) and creates the staging
  // directory `staging_dir`, which must not exist yet and whose parent must.
  static absl::StatusOr<std::unique_ptr<BundleUpload>> Begin(UploadHeader header,
                                                             const UploadLimits& limits,
                                                             std::filesystem::path staging_dir);
  ~BundleUpload();  // removes the staging directory (whatever it holds by then)

  BundleUpload(const BundleUpload&) = delete;
  BundleUpload& operator=(const BundleUpload&) = delete;

  // Writes the next bytes, in the header's file order. INVALID_ARGUMENT for bytes beyond
  // the declared sizes, DIGEST_MISMATCH when a file's bytes end with another SHA-256,
  // NO_SPACE when the disk refuses them. After an error the upload is dead.
  absl::Status Append(absl::string_view data);
  // The digests, when they follow the bytes: one SHA-256 per file in header order and the
  // bundle digest, lowercase hex. INVALID_ARGUMENT when the header declared them already,
  // or for a wrong count or format; DIGEST_MISMATCH when a file already received has
  // another SHA-256. After an error the upload is dead.
  absl::Status SetDigests(std::vector<std::string> file_sha256, std::string bundle_digest);
  // The sender is done: UPLOAD_INCOMPLETE unless every declared byte and the digests
  // arrived; then DIGEST_MISMATCH unless the bundle digest is the declared one, and
  // MANIFEST_INVALID unless manifest.toml parses and names the bundle. Makes the files
  // durable (fsync).
  absl::Status Finish();

  // The header, with the digests once they are known.
  const UploadHeader& header() const { return header_; }
  bool digests_known() const { return !header_.bundle_digest.empty(); }
  uint64_t bytes_expected() const { return bytes_expected_; }
  uint64_t bytes_received() const { return bytes_received_; }
  // Holds the files; DeployRoot moves directories through this path.
  const std::filesystem::path& staging_dir() const { return staging_dir_; }

 private:
  class FileWriter;  // bundle_upload.cc
  BundleUpload(UploadHeader header, std::filesystem::path staging_dir);
  absl::Status OpenNext();  // opens the next file (skipping empty ones, which it creates)
  // The current file's bytes are all in: closes it and checks its SHA-256 when declared.
  absl::Status CompleteFile();
  // File `index` was received with SHA-256 `received`: DIGEST_MISMATCH unless declared so.
  absl::Status CheckFileDigest(size_t index, const std::array<uint8_t, 32>& received);
  absl::Status Fail(absl::Status status);

  UploadHeader header_;
  const std::filesystem::path staging_dir_;
  uint64_t bytes_expected_ = 0;
  uint64_t bytes_received_ = 0;
  size_t next_file_ = 0;        // the file the next bytes belong to
  uint64_t file_received_ = 0;  // of its bytes, so far
  std::unique_ptr<FileWriter> writer_;
  std::vector<std::array<uint8_t, 32>> received_sha256_;  // per file, as they complete
  absl::Status error_;
};

}  // namespace polyplug::host

#endif  // POLYPLUG_HOST_SRC_BUNDLE_UPLOAD_H_
