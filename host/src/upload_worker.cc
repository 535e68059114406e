#include "host/src/upload_worker.h"

#include <pthread.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <utility>

namespace polyplug::host {

struct UploadWorker::State {
  std::mutex mu;
  std::condition_variable wake;          // a chunk was added, the upload closed, or dropped
  std::deque<std::string> queue;         // guarded by mu
  bool closed = false;                   // guarded by mu
  bool dropped = false;                  // guarded by mu: the owner went away
  bool paused = false;                   // guarded by mu: Add returned false
  std::unique_ptr<BundleUpload> upload;  // the thread's alone once it runs
  size_t max_queued = 1;
  ResumeFn resume;
  DoneFn done;
};

UploadWorker::UploadWorker(std::unique_ptr<BundleUpload> upload, size_t max_queued, ResumeFn resume,
                           DoneFn done)
    : state_(std::make_shared<State>()) {
  state_->upload = std::move(upload);
  state_->max_queued = max_queued == 0 ? 1 : max_queued;
  state_->resume = std::move(resume);
  state_->done = std::move(done);
  thread_ = std::thread(&UploadWorker::Run, state_);
}

UploadWorker::~UploadWorker() {
  {
    std::lock_guard lock(state_->mu);
    state_->dropped = true;
    state_->queue.clear();
  }
  state_->wake.notify_all();
  if (thread_.get_id() == std::this_thread::get_id()) {
    thread_.detach();  // inside DoneFn: the thread only returns from here
  } else {
    thread_.join();
  }
}

bool UploadWorker::Add(std::string chunk) {
  std::lock_guard lock(state_->mu);
  state_->queue.push_back(std::move(chunk));
  state_->wake.notify_one();
  if (state_->queue.size() < state_->max_queued) return true;
  state_->paused = true;
  return false;
}

void UploadWorker::Close() {
  std::lock_guard lock(state_->mu);
  state_->closed = true;
  state_->wake.notify_one();
}

void UploadWorker::Run(std::shared_ptr<State> state) {
  pthread_setname_np(pthread_self(), "push-writer");
  std::unique_lock lock(state->mu);
  while (true) {
    state->wake.wait(lock,
                     [&] { return state->dropped || state->closed || !state->queue.empty(); });
    if (state->dropped) return;
    if (state->queue.empty()) break;  // closed, and every chunk written
    std::string chunk = std::move(state->queue.front());
    state->queue.pop_front();
    const bool resume = state->paused && state->queue.size() < state->max_queued;
    if (resume) state->paused = false;
    lock.unlock();
    if (resume) state->resume();  // the next read overlaps this chunk's write
    absl::Status status = state->upload->Append(chunk);
    if (!status.ok()) {
      state->done(std::move(status), std::move(state->upload));  // may destroy the owner
      return;
    }
    lock.lock();
  }
  lock.unlock();
  state->done(absl::OkStatus(), std::move(state->upload));  // may destroy the owner
}

}  // namespace polyplug::host
