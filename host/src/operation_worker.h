// OperationWorker: the host's own threads for work that may block.
//
// gRPC callback threads must not be held up by work that can take long (a dlopen, a
// bundle's init, a reload, a bundle's method), so RPC handlers post it here and finish their
// reactor from a worker thread. Mutations use one thread (the runtime serializes them
// anyway); remote calls a small pool. One exception: one Invoke at a time runs on the gRPC
// thread that received it, because the hand-off to the pool costs more than most methods
// (PluginHostService::Invoke).
#ifndef POLYPLUG_HOST_SRC_OPERATION_WORKER_H_
#define POLYPLUG_HOST_SRC_OPERATION_WORKER_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace polyplug::host {

class OperationWorker {
 public:
  explicit OperationWorker(size_t threads = 1);
  ~OperationWorker();  // calls Shutdown()

  // Runs `run` on a worker thread, in posting order when there is one thread. If the worker shuts
  // down first, `cancel` runs instead (on the shutting-down thread).
  void Post(std::function<void()> run, std::function<void()> cancel);

  // Lets the operations in progress finish, cancels the queued ones, joins. Idempotent.
  void Shutdown();

 private:
  struct Task {
    std::function<void()> run;
    std::function<void()> cancel;
  };
  void Loop();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> tasks_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace polyplug::host

#endif  // POLYPLUG_HOST_SRC_OPERATION_WORKER_H_
