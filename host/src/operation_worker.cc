#include "host/src/operation_worker.h"

#include <algorithm>

namespace polyplug::host {

OperationWorker::OperationWorker(size_t threads) {
  for (size_t i = 0; i < std::max<size_t>(1, threads); ++i) {
    threads_.emplace_back([this] { Loop(); });
  }
}

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
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    dropped.swap(tasks_);
    threads.swap(threads_);
    cv_.notify_all();
  }
  for (Task& t : dropped) t.cancel();
  for (std::thread& t : threads) t.join();
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
