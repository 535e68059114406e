#include "host/src/fetch_reactor.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "host/src/status_mapping.h"
#include "polyplug/core/bundle_signature.h"
#include "polyplug/core/error.h"

namespace polyplug::host {
namespace {

using core::ErrorReason;
using core::MakeError;

// What a fetch's log line and its messages call the bundle.
std::string BundleLabel(const std::string& name) {
  return absl::StrCat("bundle \"", absl::CHexEscape(name), "\"");
}

// "[REASON] message": an error as the host's log lines quote it.
std::string LogText(const absl::Status& status) {
  return ToGrpcStatus(status, nullptr).error_message();
}

// The reactor of one FetchBundle stream (see fetch_reactor.h).
//
// Threads: gRPC's (OnWriteDone, OnCancel, OnDone) and the call pool's (the tasks that
// read: Prepare, then ReadChunk, one at a time). `mu_` guards the stream's state; the reader
// state below it is the tasks' alone. Whoever sets `writing_` calls StartWrite and whoever
// sets `task_` posts the task, both after unlocking (gRPC may run OnWriteDone before
// StartWrite returns); the call is finished only while neither is in flight, so no task
// and no write outlives it, and OnDone may delete the reactor.
class FetchReactor final : public grpc::ServerWriteReactor<v1::PushBundleRequest> {
 public:
  FetchReactor(grpc::CallbackServerContext* context, FetchSource source, OperationWorker& io,
               FetchLimits limits)
      : context_(context), source_(std::move(source)), io_(io), limits_(limits) {}

  ~FetchReactor() override {
    if (fd_ >= 0) close(fd_);
  }

  void Start() {
    {
      std::lock_guard lock(mu_);
      task_ = true;
    }
    Post();
  }

  void OnWriteDone(bool ok) override {
    std::unique_lock lock(mu_);
    writing_ = false;
    if (ok) {
      bytes_sent_ += bytes_in_flight_;
    } else {
      broken_ = true;  // the client went away (OnCancel says so too)
    }
    Advance(lock);
  }

  void OnCancel() override {
    std::unique_lock lock(mu_);
    broken_ = true;
    Advance(lock);
  }

  void OnDone() override { delete this; }

 private:
  // A file of the bundle as the header declares it.
  struct File {
    std::string path;  // relative to the bundle directory
    uint64_t size = 0;
    std::string sha256;  // lowercase hex
  };

  // Any thread, with `task_` set by the caller: runs the next task on the call pool. Touches
  // nothing of the reactor after posting (the task may finish the call meanwhile).
  void Post() {
    io_.Post(
        [this] {
          bool gone;  // no reading (or hashing a whole bundle) for a client that left
          {
            std::lock_guard lock(mu_);
            gone = broken_;
          }
          TaskDone(gone ? absl::CancelledError() : prepared_ ? ReadChunk() : Prepare());
        },
        [this] {
          TaskDone(MakeError(ErrorReason::kShuttingDown,
                             "polyplug-host is shutting down; fetch from another host"));
        });
  }

  // Call pool: a task ended, with `ready_` filled (OK) or with the stream's error.
  void TaskDone(absl::Status status) {
    std::unique_lock lock(mu_);
    task_ = false;
    if (!status.ok()) {
      if (error_.ok()) error_ = std::move(status);
    } else {
      has_ready_ = true;
      eof_ = next_file_ == files_.size();
    }
    Advance(lock);
  }

  // Under `lock`, which it releases: starts the next write and the next read when they can
  // start, or finishes the call once nothing is in flight and the stream is done (every
  // byte sent) or ending (an error, the client gone).
  void Advance(std::unique_lock<std::mutex>& lock) {
    if (finished_) return;
    const bool ending = broken_ || !error_.ok();
    bool write = false;
    bool read = false;
    if (!ending) {
      if (!writing_ && has_ready_) {
        sending_.Swap(&ready_);
        has_ready_ = false;
        writing_ = true;
        bytes_in_flight_ = sending_.data().size();
        write = true;
      }
      // One message ahead of the client, no more.
      if (!task_ && !has_ready_ && !eof_) {
        task_ = true;
        read = true;
      }
    }
    if (writing_ || task_) {
      lock.unlock();
      if (write) StartWrite(&sending_);
      if (read) Post();
      return;
    }
    // Nothing in flight: done (had there been a message ready, it would be in flight) or
    // ending.
    finished_ = true;
    const absl::Status error = error_;
    const bool cancelled = broken_;
    const uint64_t bytes = bytes_sent_;
    lock.unlock();
    const std::string name = absl::CHexEscape(source_.bundle_name);
    grpc::Status status;
    if (cancelled) {
      std::fprintf(stderr, "polyplug-host: fetch of %s after %llu bytes cancelled by the client\n",
                   name.c_str(), static_cast<unsigned long long>(bytes));
      status = grpc::Status(grpc::StatusCode::CANCELLED,
                            absl::StrCat("the fetch was cancelled after ", bytes, " bytes"));
    } else if (!error.ok()) {
      std::fprintf(stderr, "polyplug-host: fetch of %s after %llu bytes failed: %s\n", name.c_str(),
                   static_cast<unsigned long long>(bytes), LogText(error).c_str());
      status = ToGrpcStatus(error, context_);
    } else {
      std::fprintf(stderr, "polyplug-host: fetch of %s: sent %llu bytes in %zu files (digest %s)\n",
                   name.c_str(), static_cast<unsigned long long>(bytes), files_.size(),
                   source_.bundle_digest.c_str());
    }
    Finish(std::move(status));  // may run OnDone, which deletes this: nothing after it
  }

  // ---- The reader: the tasks' state, one task at a time.

  // The stream's error when the file at `path` is not what the header says any more.
  absl::Status FileChanged(const std::string& path, absl::string_view what) const {
    return MakeError(
        ErrorReason::kDigestMismatch, absl::StatusCode::kAborted,
        absl::StrCat("file \"", absl::CHexEscape(path), "\" of ", BundleLabel(source_.bundle_name),
                     " changed while it was sent (", what,
                     "); the stream ends rather than send bytes that do not match "
                     "its header: fetch again"));
  }

  // The first task: checks the digest wanted, lists the files and puts the header in
  // `ready_`.
  absl::Status Prepare() {
    prepared_ = true;
    const std::string bundle = BundleLabel(source_.bundle_name);
    absl::StatusOr<core::BundleDigest> digest = core::DigestBundle(source_.dir);
    if (!digest.ok()) {
      return MakeError(ErrorReason::kDigestMismatch, absl::StatusCode::kFailedPrecondition,
                       absl::StrCat("this host cannot digest the files of ", bundle, " (",
                                    digest.status().message(), "), so it cannot serve digest ",
                                    source_.bundle_digest));
    }
    const std::string have = core::DigestToHex(digest->digest);
    if (have != source_.bundle_digest) {
      return MakeError(
          ErrorReason::kDigestMismatch, absl::StatusCode::kFailedPrecondition,
          absl::StrCat(bundle, " on this host (", source_.dir.string(), ") has bundle digest ",
                       have, ", not the requested ", source_.bundle_digest,
                       "; fetch that build from a host that "
                       "has it"));
    }
    absl::StatusOr<std::vector<core::BundleFileEntry>> entries = core::ListBundleFiles(source_.dir);
    if (!entries.ok()) {
      return MakeError(ErrorReason::kDigestMismatch, absl::StatusCode::kAborted,
                       absl::StrCat("the files of ", bundle, " changed while they were read (",
                                    entries.status().message(), "): fetch again"));
    }
    v1::PushBundleHeader& header = *ready_.mutable_header();
    header.set_bundle_name(source_.bundle_name);
    header.set_bundle_digest(have);
    size_t signed_files = 0;
    uint64_t total = 0;
    for (const core::BundleFileEntry& entry : *entries) {
      std::string sha256;
      if (entry.path == core::kBundleSignatureFileName) {  // sent, but not in the digest
        absl::StatusOr<core::Sha256Digest> sha = core::Sha256OfFile(source_.dir / entry.path);
        if (!sha.ok()) return FileChanged(entry.path, sha.status().message());
        sha256 = core::DigestToHex(*sha);
      } else {
        auto it = digest->file_sha256.find(entry.path);
        if (it == digest->file_sha256.end()) {
          return FileChanged(entry.path, "it appeared after the bundle was digested");
        }
        sha256 = it->second;
        ++signed_files;
      }
      v1::PushedFile& file = *header.add_files();
      file.set_path(entry.path);
      file.set_size(entry.size);
      file.set_sha256(sha256);
      file.set_executable(entry.executable);
      total += entry.size;
      files_.push_back(File{entry.path, entry.size, std::move(sha256)});
    }
    if (signed_files != digest->file_sha256.size()) {
      for (const auto& [path, sha] : digest->file_sha256) {
        if (std::none_of(files_.begin(), files_.end(),
                         [&path = path](const File& f) { return f.path == path; })) {
          return FileChanged(path, "it was removed after the bundle was digested");
        }
      }
    }
    if (ready_.ByteSizeLong() > static_cast<size_t>(limits_.max_message_bytes)) {
      return MakeError(ErrorReason::kBundleTooLarge,
                       absl::StrCat("the header of ", bundle, " (", files_.size(), " files) is ",
                                    ready_.ByteSizeLong(),
                                    " bytes, more than this host's largest message "
                                    "(--max-message-bytes ",
                                    limits_.max_message_bytes, ")"));
    }
    if (total == 0) next_file_ = files_.size();  // no bytes to send
    return absl::OkStatus();
  }

  // The next tasks: the next chunk of the files' bytes, in header order, into `ready_`.
  // Checks each file against the header as it goes: its size when it is opened, and its
  // size and SHA-256 once its last byte is read. Empty files after the chunk's last byte are
  // checked with it, so that the stream never sends an empty chunk.
  absl::Status ReadChunk() {
    std::string& data = *ready_.mutable_data();
    data.clear();
    while (next_file_ < files_.size() &&
           (data.size() < limits_.chunk_bytes || (fd_ < 0 && files_[next_file_].size == 0))) {
      const File& file = files_[next_file_];
      if (fd_ < 0) {
        if (absl::Status s = OpenFile(file); !s.ok()) return s;
      }
      const size_t at = data.size();
      const size_t want = static_cast<size_t>(std::min<uint64_t>(left_, limits_.chunk_bytes - at));
      data.resize(at + want);
      for (size_t got = 0; got < want;) {
        const ssize_t n = read(fd_, data.data() + at + got, want - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
          return MakeError(
              ErrorReason::kInternal,
              absl::StrCat("cannot read file \"", absl::CHexEscape(file.path), "\" of ",
                           BundleLabel(source_.bundle_name), ": ", std::strerror(errno)));
        }
        if (n == 0) {
          return FileChanged(file.path, absl::StrCat("it ended after ", file.size - left_ + got,
                                                     " of its ", file.size, " bytes"));
        }
        got += static_cast<size_t>(n);
      }
      EVP_DigestUpdate(md_.get(), data.data() + at, want);
      left_ -= want;
      if (left_ == 0) {
        if (absl::Status s = CloseFile(file); !s.ok()) return s;
      }
    }
    return absl::OkStatus();
  }

  absl::Status OpenFile(const File& file) {
    fd_ = open((source_.dir / file.path).c_str(),
               O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd_ < 0) {
      return FileChanged(file.path,
                         absl::StrCat("it can no longer be opened: ", std::strerror(errno)));
    }
    struct stat st;
    if (fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
      return FileChanged(file.path, "it is no longer a regular file");
    }
    if (static_cast<uint64_t>(st.st_size) != file.size) {
      return FileChanged(
          file.path, absl::StrCat("it is now ", st.st_size, " bytes, the header says ", file.size));
    }
    if (EVP_DigestInit_ex(md_.get(), EVP_sha256(), nullptr) != 1) {
      return MakeError(ErrorReason::kInternal, "SHA-256 is not available from OpenSSL");
    }
    left_ = file.size;
    return absl::OkStatus();
  }

  // Every byte of `file` was read: checks it is still the file the header declares.
  absl::Status CloseFile(const File& file) {
    struct stat st;
    const bool stat_ok = fstat(fd_, &st) == 0;
    close(fd_);
    fd_ = -1;
    ++next_file_;
    if (!stat_ok || static_cast<uint64_t>(st.st_size) != file.size) {
      return FileChanged(file.path, absl::StrCat("it is now ", stat_ok ? st.st_size : -1,
                                                 " bytes, the header says ", file.size));
    }
    core::Sha256Digest sha{};
    unsigned int size = 0;
    EVP_DigestFinal_ex(md_.get(), sha.data(), &size);
    if (const std::string hex = core::DigestToHex(sha); hex != file.sha256) {
      return FileChanged(file.path, absl::StrCat("its ", file.size, " bytes now have the SHA-256 ",
                                                 hex, ", the header says ", file.sha256));
    }
    return absl::OkStatus();
  }

  grpc::CallbackServerContext* const context_;
  const FetchSource source_;
  OperationWorker& io_;
  const FetchLimits limits_;

  std::mutex mu_;
  v1::PushBundleRequest sending_;  // the message being written (gRPC's while writing_)
  v1::PushBundleRequest ready_;    // the next one: the running task's, or has_ready_
  bool has_ready_ = false;
  bool writing_ = false;          // a StartWrite is in flight
  bool task_ = false;             // a task is posted or running
  bool eof_ = false;              // `ready_` (or `sending_`) holds the last message
  bool broken_ = false;           // the client cancelled or went away
  bool finished_ = false;         // Finish was called (or is about to be)
  absl::Status error_;            // the stream's end, once nothing is in flight
  uint64_t bytes_in_flight_ = 0;  // of file bytes, in sending_
  uint64_t bytes_sent_ = 0;       // file bytes the client took

  // The reader's, only ever touched by the one task running.
  bool prepared_ = false;
  std::vector<File> files_;  // in header order
  size_t next_file_ = 0;     // the file the next bytes come from
  int fd_ = -1;              // next_file_'s, while it is read
  uint64_t left_ = 0;        // its bytes not read yet
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> md_{EVP_MD_CTX_new(), &EVP_MD_CTX_free};
};

}  // namespace

size_t FetchChunkBytes(int max_message_bytes) {
  const size_t limit = static_cast<size_t>(std::max(max_message_bytes, 2));
  // A `data` message is its bytes plus a tag and a length (at most 6 bytes).
  const size_t margin = std::min<size_t>(1024, limit / 2);
  return std::min(kMaxFetchChunkBytes, limit - margin);
}

grpc::ServerWriteReactor<v1::PushBundleRequest>* StartFetch(grpc::CallbackServerContext* context,
                                                            FetchSource source, OperationWorker& io,
                                                            FetchLimits limits) {
  auto* reactor = new FetchReactor(context, std::move(source), io, limits);  // deletes itself
  reactor->Start();
  return reactor;
}

grpc::ServerWriteReactor<v1::PushBundleRequest>* RefuseFetch(grpc::CallbackServerContext* context,
                                                             const std::string& bundle_name,
                                                             const absl::Status& status) {
  const grpc::Status refused = ToGrpcStatus(status, context);
  std::fprintf(stderr, "polyplug-host: fetch%s%s refused: %s\n", bundle_name.empty() ? "" : " of ",
               absl::CHexEscape(bundle_name).c_str(), refused.error_message().c_str());
  return RefusedStream<v1::PushBundleRequest>(refused);
}

}  // namespace polyplug::host
