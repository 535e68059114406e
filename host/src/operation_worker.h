// OperationWorker: where the host runs work that may block.
//
// gRPC callback threads must not be held up by work that can take long (a dlopen, a
// bundle's init, a reload, a bundle's method), so RPC handlers post it here and finish their
// reactor from the thread that runs it. Mutations use one thread (the runtime serializes
// them anyway); remote calls a small pool. One exception: one Invoke at a time runs on the
// gRPC thread that received it, because the hand-off to the pool costs more than most
// methods (PluginHostService::Invoke).
//
// A worker with no threads of its own is pumped: what is posted waits until the owner calls
// RunQueued() on a thread of its choosing (an application's frame boundary, see
// OperationThread::kApplication).
#ifndef POLYPLUG_HOST_SRC_OPERATION_WORKER_H_
#define POLYPLUG_HOST_SRC_OPERATION_WORKER_H_

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace polyplug::host {

class OperationWorker {
 public:
  // `threads` threads of its own; 0 makes a pumped worker.
  explicit OperationWorker(size_t threads = 1);
  ~OperationWorker();  // calls Shutdown()

  // Runs `run` on a worker thread (or in RunQueued()), in posting order when there is at
  // most one thread. If the worker shuts down first, `cancel` runs instead (on the
  // shutting-down thread).
  void Post(std::function<void()> run, std::function<void()> cancel);

  // Pumped worker: runs the tasks queued when it is called, in order, on the calling thread,
  // and returns how many ran; tasks they post wait for the next call. One caller at a time.
  // Without a queued task it costs one atomic load. With threads of its own: returns 0.
  size_t RunQueued();
  // Tasks posted and not yet started.
  size_t queued() const { return queued_.load(std::memory_order_acquire); }
  // Blocks until a task is queued or `timeout` passes (InfiniteDuration: no limit); true
  // when one is.
  bool WaitQueued(absl::Duration timeout) const;

  // Lets the operations in progress finish, cancels the queued ones, joins. Idempotent.
  void Shutdown();

 private:
  struct Task {
    std::function<void()> run;
    std::function<void()> cancel;
  };
  void Loop();

  const bool pumped_;
  mutable std::mutex mu_;
  std::condition_variable cv_;                 // wakes a worker thread
  mutable std::condition_variable queued_cv_;  // wakes WaitQueued()
  std::deque<Task> tasks_;
  std::atomic<size_t> queued_{0};  // tasks_.size(), read without the lock
  bool stopping_ = false;
  std::mutex pump_mu_;  // one RunQueued() at a time, and Shutdown() waits for it
  std::vector<std::thread> threads_;
};

}  // namespace polyplug::host

#endif  // POLYPLUG_HOST_SRC_OPERATION_WORKER_H_
