#include "polyplug/host/operation_worker.h"

namespace polyplug::host {

OperationWorker::OperationWorker() : thread_([this] { Loop(); }) {}

OperationWorker::~OperationWorker() { Shutdown(); }

void OperationWorker::Post(std::function<void()> run, std::function<void()> cancel) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stopping_) {
      tasks_.push_back({std::move(run), std::move(cancel)});
      cv_.notify_one();
      return;
    }
  }
  cancel();
}

void OperationWorker::Shutdown() {
  std::deque<Task> dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
    dropped.swap(tasks_);
    cv_.notify_all();
  }
  for (Task& t : dropped) t.cancel();
  if (thread_.joinable()) thread_.join();
}

void OperationWorker::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
    if (tasks_.empty()) return;  // stopping
    Task task = std::move(tasks_.front());
    tasks_.pop_front();
    lock.unlock();
    task.run();
    lock.lock();
  }
}

}  // namespace polyplug::host
