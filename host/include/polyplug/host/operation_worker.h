// OperationWorker: the host's own thread for everything that mutates the runtime.
//
// gRPC callback threads must never block (a dlopen, a bundle's init, a reload), so RPC
// handlers post the work here and finish their reactor from this thread. One thread is
// enough: the runtime serializes mutations anyway.
#ifndef POLYPLUG_HOST_OPERATION_WORKER_H_
#define POLYPLUG_HOST_OPERATION_WORKER_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace polyplug::host {

class OperationWorker {
 public:
  OperationWorker();
  ~OperationWorker();  // calls Shutdown()

  // Runs `run` on the worker thread. If the worker shuts down first, `cancel` runs
  // instead (on the shutting-down thread).
  void Post(std::function<void()> run, std::function<void()> cancel);

  // Lets the operation in progress finish, cancels the queued ones, joins. Idempotent.
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
  std::thread thread_;
};

}  // namespace polyplug::host

#endif  // POLYPLUG_HOST_OPERATION_WORKER_H_
