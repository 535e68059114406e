#include "host/src/operation_worker.h"

#include <algorithm>
#include <chrono>

namespace polyplug::host {

OperationWorker::OperationWorker(size_t threads) : pumped_(threads == 0) {
  for (size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { Loop(); });
}

OperationWorker::~OperationWorker() { Shutdown(); }

void OperationWorker::Post(std::function<void()> run, std::function<void()> cancel) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stopping_) {
      tasks_.push_back({std::move(run), std::move(cancel)});
      queued_.store(tasks_.size(), std::memory_order_release);
      cv_.notify_one();         // a worker thread
      queued_cv_.notify_all();  // WaitQueued(); no system call without a waiter
      return;
    }
  }
  cancel();
}

size_t OperationWorker::RunQueued() {
  if (!pumped_ || queued_.load(std::memory_order_acquire) == 0) return 0;
  std::lock_guard<std::mutex> pump(pump_mu_);
  std::deque<Task> batch;
  {
    std::lock_guard<std::mutex> lock(mu_);
    batch.swap(tasks_);
    queued_.store(0, std::memory_order_release);
  }
  for (Task& task : batch) task.run();
  return batch.size();
}

bool OperationWorker::WaitQueued(absl::Duration timeout) const {
  std::unique_lock<std::mutex> lock(mu_);
  auto ready = [this] { return stopping_ || !tasks_.empty(); };
  if (timeout == absl::InfiniteDuration()) {
    queued_cv_.wait(lock, ready);
  } else {
    // A deadline, not wait_for: now() + a huge duration would overflow.
    queued_cv_.wait_until(lock, absl::ToChronoTime(absl::Now() + timeout), ready);
  }
  return !tasks_.empty();
}

void OperationWorker::Shutdown() {
  std::deque<Task> dropped;
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    dropped.swap(tasks_);
    queued_.store(0, std::memory_order_release);
    threads.swap(threads_);
    cv_.notify_all();
    queued_cv_.notify_all();
  }
  for (Task& t : dropped) t.cancel();
  for (std::thread& t : threads) t.join();
  // A RunQueued() in progress on another thread finishes its batch before this returns.
  if (pumped_) std::lock_guard<std::mutex> pump(pump_mu_);
}

void OperationWorker::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
    if (tasks_.empty()) return;  // stopping
    Task task = std::move(tasks_.front());
    tasks_.pop_front();
    queued_.store(tasks_.size(), std::memory_order_release);
    lock.unlock();
    task.run();
    lock.lock();
  }
}

}  // namespace polyplug::host
