// FetchBundle: the files of a loaded bundle streamed to a fleet peer that lacks them, as
// the messages of a PushBundle upload (header with the digests, then the bytes), so that
// the fetcher can push them on unchanged (docs/DEPLOY.md, "Fetching a bundle from a peer").
//
// The files are hashed (core::DigestBundle) and listed (core::ListBundleFiles, the listing
// a push sends) before the header goes out, then read one chunk at a time. All of it runs
// on the host's call pool, never on a gRPC thread, one task at a time per stream, and at
// most one chunk ahead of the client: a stream holds two chunks at most, whatever the
// bundle's size. A file that changes while it is sent (another size, other bytes than its
// header's SHA-256) ends the stream with ABORTED (DIGEST_MISMATCH) rather than with bytes
// that do not match the header.
#ifndef POLYPLUG_HOST_SRC_FETCH_REACTOR_H_
#define POLYPLUG_HOST_SRC_FETCH_REACTOR_H_

#include <grpcpp/grpcpp.h>

#include <cstddef>
#include <filesystem>
#include <string>

#include "absl/status/status.h"
#include "host/src/operation_worker.h"
#include "polyplug/host/v1/host.pb.h"

namespace polyplug::host {

// The most file bytes a FetchBundle `data` message carries.
inline constexpr size_t kMaxFetchChunkBytes = 1 << 20;

// The bytes of each `data` message on a server whose messages are limited to
// `max_message_bytes`: kMaxFetchChunkBytes, or less, leaving room for the message's own
// encoding, when the limit is near or below it. At least 1.
size_t FetchChunkBytes(int max_message_bytes);

// What a FetchBundle call asks for, checked: a loaded bundle and the digest wanted.
struct FetchSource {
  std::string bundle_name;
  std::filesystem::path dir;  // the directory the bundle is loaded from
  std::string bundle_digest;  // 64 lowercase hex digits
};

struct FetchLimits {
  size_t chunk_bytes = kMaxFetchChunkBytes;  // of file bytes per `data` message
  int max_message_bytes = 4 << 20;           // the header must fit too
};

// Starts the stream of an authorised FetchBundle call for `source`; the reactor owns
// itself until OnDone. `io` (the call pool) reads and hashes the files, and must outlive
// every stream: the server's shutdown waits for the streams, and a task the pool cancels
// at its shutdown ends its stream with UNAVAILABLE (SHUTTING_DOWN). The stream's end is
// one line on stderr ("polyplug-host: fetch of NAME: ...": the bytes sent, or the error).
grpc::ServerWriteReactor<v1::PushBundleRequest>* StartFetch(grpc::CallbackServerContext* context,
                                                            FetchSource source, OperationWorker& io,
                                                            FetchLimits limits);

// A FetchBundle call refused before its stream starts (a bad request, a bundle that is not
// loaded): logs it as StartFetch's streams do and finishes with `status`. `bundle_name`:
// as asked, or empty when it is not a valid name.
grpc::ServerWriteReactor<v1::PushBundleRequest>* RefuseFetch(grpc::CallbackServerContext* context,
                                                             const std::string& bundle_name,
                                                             const absl::Status& status);

}  // namespace polyplug::host

#endif  // POLYPLUG_HOST_SRC_FETCH_REACTOR_H_
