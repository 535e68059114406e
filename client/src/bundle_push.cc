// HostClient::PushBundle: a bundle directory streamed to the host's deploy root.
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "polyplug/client/host_client.h"
#include "polyplug/core/bundle_signature.h"
#include "polyplug/core/manifest.h"
#include "src/connection.h"

namespace polyplug::client {
namespace {

namespace fs = std::filesystem;
namespace v1 = host::v1;

// What a message of the upload carries at most: well under the host's 4 MiB default, large
// enough that per-message costs vanish.
constexpr size_t kChunkBytes = 1 << 20;

struct LocalFile {
  fs::path path;        // on this machine
  v1::PushedFile wire;  // as the header declares it
};

// The files of the bundle in `dir` (core::ListBundleFiles: the order they are sent in). A
// symlink, FIFO, socket or device is refused: the host would receive it as a file, or not
// at all.
absl::StatusOr<std::vector<LocalFile>> ListFiles(const fs::path& dir) {
  absl::StatusOr<std::vector<core::BundleFileEntry>> entries = core::ListBundleFiles(dir);
  if (!entries.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot push: ", entries.status().message()));
  }
  std::vector<LocalFile> files;
  files.reserve(entries->size());
  for (const core::BundleFileEntry& entry : *entries) {
    LocalFile file;
    file.path = dir / entry.path;
    file.wire.set_path(entry.path);
    file.wire.set_size(entry.size);
    file.wire.set_executable(entry.executable);
    files.push_back(std::move(file));
  }
  return files;
}

// The SHA-256 of each file, computed one chunk at a time while gRPC sends that chunk: the
// hashing of a chunk overlaps its sending instead of preceding it.
class ChunkHasher {
 public:
  // Bytes [offset, offset + length) of the next chunk are the next bytes of the file being
  // hashed; `last`: that file's last bytes (an empty file is one such call of length 0).
  void Add(size_t offset, size_t length, bool last) { segments_.push_back({offset, length, last}); }

  // Hashes what Add named in `chunk` on another thread while `send` runs; returns what
  // `send` returned once both are done. `chunk` must not change meanwhile.
  bool HashWhile(const std::string& chunk, const std::function<bool()>& send) {
    std::future<void> hashed = std::async(std::launch::async, [this, &chunk] {
      for (const Segment& segment : segments_) {
        if (!open_) EVP_DigestInit_ex(md_.get(), EVP_sha256(), nullptr);
        open_ = true;
        EVP_DigestUpdate(md_.get(), chunk.data() + segment.offset, segment.length);
        if (!segment.last) continue;
        core::Sha256Digest sha{};
        unsigned int size = 0;
        EVP_DigestFinal_ex(md_.get(), sha.data(), &size);
        digests_.push_back(sha);
        open_ = false;
      }
    });
    const bool sent = send();
    hashed.wait();
    segments_.clear();
    return sent;
  }

  // Each file's SHA-256, in the order the files were sent.
  const std::vector<core::Sha256Digest>& digests() const { return digests_; }

 private:
  struct Segment {
    size_t offset;
    size_t length;
    bool last;
  };
  std::vector<Segment> segments_;
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> md_{EVP_MD_CTX_new(), &EVP_MD_CTX_free};
  bool open_ = false;
  std::vector<core::Sha256Digest> digests_;
};

// Sends the files' bytes, in header order, in chunks of kChunkBytes, hashing each file as
// it goes, then the digests message. False when the stream broke (the host ended the call:
// Finish() says why).
absl::StatusOr<bool> SendFiles(const std::vector<LocalFile>& files,
                               grpc::ClientWriter<v1::PushBundleRequest>& writer) {
  v1::PushBundleRequest message;
  std::string& chunk = *message.mutable_data();
  chunk.reserve(kChunkBytes);
  ChunkHasher hasher;
  auto send_chunk = [&] {
    const bool sent = hasher.HashWhile(chunk, [&] { return writer.Write(message); });
    chunk.clear();
    return sent;
  };
  for (const LocalFile& file : files) {
    const int fd = open(file.path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot read ", file.path.string(), ": ", std::strerror(errno)));
    }
    struct stat before {};
    fstat(fd, &before);
    auto changed = [&](uint64_t now) {
      close(fd);
      return absl::FailedPreconditionError(
          absl::StrCat(file.path.string(), " changed while it was being pushed (it is now ", now,
                       " bytes, was ", file.wire.size(), "); push again once it is built"));
    };
    uint64_t left = file.wire.size();
    if (left == 0) hasher.Add(chunk.size(), 0, /*last=*/true);
    while (left > 0) {
      const size_t at = chunk.size();
      const size_t want = static_cast<size_t>(std::min<uint64_t>(left, kChunkBytes - at));
      chunk.resize(at + want);
      const ssize_t n = read(fd, chunk.data() + at, want);
      if (n <= 0) return changed(file.wire.size() - left);
      chunk.resize(at + static_cast<size_t>(n));
      left -= static_cast<uint64_t>(n);
      hasher.Add(at, static_cast<size_t>(n), /*last=*/left == 0);
      if (chunk.size() == kChunkBytes && !send_chunk()) {
        close(fd);
        return false;
      }
    }
    // A file rewritten while it was read would arrive torn, with a digest that matches.
    struct stat after {};
    fstat(fd, &after);
    if (after.st_size != before.st_size || after.st_mtim.tv_sec != before.st_mtim.tv_sec ||
        after.st_mtim.tv_nsec != before.st_mtim.tv_nsec) {
      return changed(static_cast<uint64_t>(after.st_size));
    }
    close(fd);
  }
  if (!chunk.empty()) {
    if (!send_chunk()) return false;
  } else {
    hasher.HashWhile(chunk, [] { return true; });  // empty files after the last chunk
  }
  v1::PushBundleRequest digests_message;
  v1::PushBundleDigests& digests = *digests_message.mutable_digests();
  std::map<std::string, core::Sha256Digest> signed_files;  // what the bundle digest covers
  for (size_t i = 0; i < files.size(); ++i) {
    const core::Sha256Digest& sha = hasher.digests()[i];
    digests.add_file_sha256(core::DigestToHex(sha));
    if (files[i].wire.path() != core::kBundleSignatureFileName) {
      signed_files.emplace(files[i].wire.path(), sha);
    }
  }
  digests.set_bundle_digest(core::DigestToHex(core::CanonicalBundleDigest(signed_files)));
  return writer.Write(digests_message);
}

}  // namespace

absl::StatusOr<v1::PushBundleResponse> HostClient::PushBundle(const fs::path& dir,
                                                              const CallOptions& call) {
  absl::StatusOr<std::vector<LocalFile>> files = ListFiles(dir);
  if (!files.ok()) return files.status();
  // The digests follow the bytes (the host checks them then): each file is read once.
  v1::PushBundleRequest header_message;
  v1::PushBundleHeader& header = *header_message.mutable_header();
  for (const LocalFile& file : *files) *header.add_files() = file.wire;
  // The manifest's name is the bundle's: the host checks it again.
  absl::StatusOr<std::string> name = [&]() -> absl::StatusOr<std::string> {
    absl::StatusOr<core::Manifest> manifest = core::LoadManifest(dir);
    if (!manifest.ok()) return manifest.status();
    return manifest->name;
  }();
  if (!name.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot push ", dir.string(), ": ", name.status().message()));
  }
  header.set_bundle_name(*name);
  header.set_request_id(call.request_id);

  const std::shared_ptr<const internal::Connection> shared = this->connection();
  const internal::Connection& connection = *shared;
  grpc::ClientContext context;
  connection.PrepareCall(context, call);
  v1::PushBundleResponse response;
  std::unique_ptr<grpc::ClientWriter<v1::PushBundleRequest>> writer =
      connection.stub->PushBundle(&context, &response);
  absl::StatusOr<bool> sent = writer->Write(header_message) ? SendFiles(*files, *writer) : false;
  if (!sent.ok()) {
    context.TryCancel();
    writer->Finish();
    return sent.status();
  }
  if (*sent) writer->WritesDone();
  const grpc::Status status = writer->Finish();
  if (!status.ok()) {
    return connection.ToStatus(
        status, context,
        call.timeout > absl::ZeroDuration() ? call.timeout : connection.options.call_timeout);
  }
  return response;
}

}  // namespace polyplug::client
