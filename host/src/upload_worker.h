// UploadWorker: writes a PushBundle upload's bytes on a thread of its own, so that hashing
// and writing them overlap the network reads instead of running between one read and the
// next on gRPC's thread. At most `max_queued` chunks wait, so a slow disk slows the sender
// instead of filling memory.
#ifndef POLYPLUG_HOST_SRC_UPLOAD_WORKER_H_
#define POLYPLUG_HOST_SRC_UPLOAD_WORKER_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "host/src/bundle_upload.h"

namespace polyplug::host {

class UploadWorker {
 public:
  // Called on the worker thread after Add returned false, once there is room again.
  using ResumeFn = std::function<void()>;
  // Called once, on the worker thread: with the first write error as soon as it happens
  // (chunks after it are dropped), or with OK once Close() was called and every chunk is
  // written. The upload is handed back; the callback may destroy this UploadWorker.
  using DoneFn = std::function<void(absl::Status, std::unique_ptr<BundleUpload>)>;

  UploadWorker(std::unique_ptr<BundleUpload> upload, size_t max_queued, ResumeFn resume,
               DoneFn done);
  // Drops what is still queued and waits for the thread, unless called on it (from DoneFn).
  ~UploadWorker();

  UploadWorker(const UploadWorker&) = delete;
  UploadWorker& operator=(const UploadWorker&) = delete;

  // Queues the next chunk. False when the queue is now full: read no more until ResumeFn.
  // Thread-safe with the worker; one caller at a time.
  bool Add(std::string chunk);
  // No more chunks will come.
  void Close();

 private:
  struct State;  // upload_worker.cc; shared with the thread, which may outlive *this
  static void Run(std::shared_ptr<State> state);

  std::shared_ptr<State> state_;
  std::thread thread_;
};

}  // namespace polyplug::host

#endif  // POLYPLUG_HOST_SRC_UPLOAD_WORKER_H_
